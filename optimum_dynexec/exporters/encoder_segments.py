"""PyTorch modules for the compiled segments of an early-exit encoder, one per exit point.

Segment k runs encoder layers `[start, end)` and its exit head. The first one also embeds the tokens; the last one
ends with the model's own classifier. Family quirks (where the embeddings, layers and classifier live) sit in small
adapter subclasses, not in branches of the generic code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..training.exit_heads import ExitHeads


class EncoderAdapter:
    """Where a BERT-like sequence classifier keeps its parts. Subclasses cover other families."""

    model_types: tuple[str, ...] = ("bert",)

    def __init__(self, model: nn.Module):
        self.model = model
        self.base = model.base_model

    @property
    def embeddings(self) -> nn.Module:
        return self.base.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return self.base.encoder.layer

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The final classifier on the last layer's states `(batch, seq, hidden)`."""
        return self.model.classifier(self.model.dropout(self.base.pooler(hidden_states)))


class RobertaAdapter(EncoderAdapter):
    """RoBERTa-style models: the classifier reads the first token's state itself."""

    model_types = ("roberta", "xlm-roberta", "camembert")

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(hidden_states)


class ElectraAdapter(RobertaAdapter):
    """ELECTRA: BERT's layers; the embeddings may be narrower than the layers (a projection follows them); the
    classifier reads the first token's state itself."""

    model_types = ("electra",)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        hidden_states = super().embed(input_ids, token_type_ids)
        project = getattr(self.base, "embeddings_project", None)
        return project(hidden_states) if project is not None else hidden_states


class DistilBertAdapter(EncoderAdapter):
    """DistilBERT: no token types, layers under `transformer.layer`, a pre-classifier on the first token's state."""

    model_types = ("distilbert",)

    @property
    def layers(self) -> nn.ModuleList:
        return self.base.transformer.layer

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.embeddings(input_ids)

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.model.pre_classifier(hidden_states[:, 0]))
        return self.model.classifier(self.model.dropout(pooled))


ADAPTERS = {
    t: cls for cls in (EncoderAdapter, RobertaAdapter, ElectraAdapter, DistilBertAdapter) for t in cls.model_types
}


def get_adapter(model: nn.Module) -> EncoderAdapter:
    """The adapter for `model.config.model_type`.

    Raises:
        `ValueError`: for a model family that early exit does not support yet, listing the supported ones.
    """
    model_type = model.config.model_type
    if model_type not in ADAPTERS:
        raise ValueError(f"Early exit does not support model type {model_type!r} yet; supported: {sorted(ADAPTERS)}.")
    return ADAPTERS[model_type](model)


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask `(batch, 1, 1, seq)`: 0 where attended, the dtype's minimum where padded."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class EncoderSegment(nn.Module):
    """Layers `[start, end)` of the encoder and the exit after them.

    Inputs are `input_ids`, `attention_mask` (and `token_type_ids` when the model has them) for the first segment,
    `hidden_states` and `attention_mask` for the others. Outputs are `logits` and, except for the last segment,
    `hidden_states` for the next one.
    """

    def __init__(self, adapter: EncoderAdapter, start: int, end: int, head: nn.Module | None):
        super().__init__()
        self.adapter = adapter
        self.start, self.end = start, end
        self.layers = nn.ModuleList(adapter.layers[start:end])
        self.head = head
        self.is_first = start == 0
        self.is_last = head is None

    def run(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor):
        ext = extended_attention_mask(attention_mask, hidden_states.dtype)
        for layer in self.layers:
            out = layer(hidden_states, attention_mask=ext)
            hidden_states = out[0] if isinstance(out, tuple) else out
        if self.is_last:
            return self.adapter.classify(hidden_states)
        return self.head(hidden_states, attention_mask), hidden_states


class FirstSegment(EncoderSegment):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.run(self.adapter.embed(input_ids, token_type_ids), attention_mask)


class InnerSegment(EncoderSegment):
    def forward(self, hidden_states, attention_mask):
        return self.run(hidden_states, attention_mask)


def build_segments(model: nn.Module, heads: ExitHeads) -> list[EncoderSegment]:
    """The segments of `model` cut after each of `heads.exit_layers`, in order, frozen and in eval mode."""
    model.requires_grad_(False)
    heads.requires_grad_(False)
    adapter = get_adapter(model)
    bounds = [0, *heads.exit_layers, model.config.num_hidden_layers]
    segments = []
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        head = heads.head(end) if k < len(heads.exit_layers) else None
        cls = FirstSegment if start == 0 else InnerSegment
        segments.append(cls(adapter, start, end, head).eval())
    return segments
