"""PyTorch modules for the compiled segments of an early-exit encoder, one per exit point.

Segment k runs encoder layers `[start, end)` and its exit head. The first one also embeds the tokens; the last one
ends with the model's own classifier. Family quirks (where the embeddings, layers and classifier live, what the layers
need besides the states) sit in small adapter subclasses, not in branches of the generic code.
"""

from __future__ import annotations

import optimum.exporters.openvino  # noqa: F401  (registers optimum-intel's export configs with the TasksManager)
import torch
from optimum.exporters.tasks import TasksManager
from torch import nn

from ..training.exit_heads import ExitHeads

TASK = "text-classification"


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask `(batch, 1, 1, seq)`: 0 where attended, the dtype's minimum where padded."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class EncoderAdapter:
    """Where a BERT-like sequence classifier keeps its parts, and how its layers are called. Subclasses cover other
    families.

    Args:
        model (`PreTrainedModel`): an `AutoModelForSequenceClassification` of one of `model_types`.

    Raises:
        `ValueError`: (in subclasses) for a configuration of the family that cannot be cut into exit segments.
    """

    model_types: tuple[str, ...] = ("bert",)

    def __init__(self, model: nn.Module):
        self.model = model
        self.base = model.base_model

    @property
    def input_names(self) -> list[str]:
        """The inputs of optimum-intel's graph of this model (`input_ids`, `attention_mask`, and `token_type_ids` when
        its export takes them): the first segment takes exactly these."""
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="openvino", model_type=self.model.config.model_type, task=TASK, library_name="transformers"
        )
        return list(constructor(self.model.config).inputs)

    @property
    def embeddings(self) -> nn.Module:
        return self.base.embeddings

    @property
    def layers(self) -> list[nn.Module]:
        """The layer applied at each of the `num_hidden_layers` steps of the encoder, in order."""
        return list(self.base.encoder.layer)

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """The first layer's input `(batch, seq, hidden)` from the token ids and masks `(batch, seq)`."""
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def layer_context(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """What every layer of a segment needs besides the states, computed once per segment as the encoder computes
        it before its layers (the mask in the layers' form; relative positions in some families)."""
        return {"attention_mask": extended_attention_mask(attention_mask, hidden_states.dtype)}

    def apply_layer(
        self, index: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor, context: dict
    ) -> torch.Tensor:
        """Runs the encoder's step `index` (0-based) on `hidden_states` `(batch, seq, hidden)`."""
        out = self.layers[index](hidden_states, **context)
        return out[0] if isinstance(out, tuple) else out

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

    def embed(self, input_ids, attention_mask, token_type_ids):
        hidden_states = super().embed(input_ids, attention_mask, token_type_ids)
        project = getattr(self.base, "embeddings_project", None)
        return project(hidden_states) if project is not None else hidden_states


class DistilBertAdapter(EncoderAdapter):
    """DistilBERT: no token types, layers under `transformer.layer`, a pre-classifier on the first token's state."""

    model_types = ("distilbert",)

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.base.transformer.layer)

    def embed(self, input_ids, attention_mask, token_type_ids):
        return self.embeddings(input_ids)

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.model.pre_classifier(hidden_states[:, 0]))
        return self.model.classifier(self.model.dropout(pooled))


class AlbertAdapter(EncoderAdapter):
    """ALBERT: narrow embeddings projected by `encoder.embedding_hidden_mapping_in`; `num_hidden_groups` shared layer
    groups, each applied to a run of the `num_hidden_layers` steps (an exit can follow any step); the pooler is
    `pooler` + `pooler_activation` on the first token.

    Raises:
        `ValueError`: when a group holds more than one layer (`inner_group_num > 1`): transformers then reports a
            hidden state per inner layer, not per step, so exit heads could not be trained on the steps they follow.
    """

    model_types = ("albert",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        if model.config.inner_group_num != 1:
            raise ValueError(
                f"Early exit cuts ALBERT after whole layer applications; this model has inner_group_num="
                f"{model.config.inner_group_num} layers per shared group (only 1, as in every released ALBERT, is "
                "supported)."
            )

    @property
    def layers(self) -> list[nn.Module]:
        steps, groups = self.model.config.num_hidden_layers, self.model.config.num_hidden_groups
        # step i runs the group that covers it, as AlbertTransformer does (integer form of its index)
        return [self.base.encoder.albert_layer_groups[i * groups // steps] for i in range(steps)]

    def embed(self, input_ids, attention_mask, token_type_ids):
        hidden_states = super().embed(input_ids, attention_mask, token_type_ids)
        return self.base.encoder.embedding_hidden_mapping_in(hidden_states)

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = self.base.pooler_activation(self.base.pooler(hidden_states[:, 0]))
        return self.model.classifier(self.model.dropout(pooled))


class DebertaV2Adapter(EncoderAdapter):
    """DeBERTa-v2/v3: the embeddings are masked; layers take a `(batch, 1, seq, seq)` mask and the relative positions
    and embeddings that `DebertaV2Encoder` computes before its layers (its own helpers compute them again for each
    segment, from the segment's sequence length); an optional convolution joins the first layer's output; the
    classifier reads `ContextPooler`."""

    model_types = ("deberta-v2",)

    @property
    def encoder(self) -> nn.Module:
        return self.base.encoder

    def embed(self, input_ids, attention_mask, token_type_ids):
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)

    def layer_context(self, hidden_states, attention_mask):
        return {
            "attention_mask": self.encoder.get_attention_mask(attention_mask),
            "relative_pos": self.encoder.get_rel_pos(hidden_states),
            "rel_embeddings": self.encoder.get_rel_embedding(),
        }

    def apply_layer(self, index, hidden_states, attention_mask, context):
        out = super().apply_layer(index, hidden_states, attention_mask, context)
        if index == 0 and self.encoder.conv is not None:
            out = self.encoder.conv(hidden_states, out, attention_mask)
        return out

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(self.model.dropout(self.model.pooler(hidden_states)))


class MPNetAdapter(EncoderAdapter):
    """MPNet: no token types; layers add the relative position bias that `MPNetEncoder.compute_position_bias`
    computes once before them (again for each segment here); `MPNetClassificationHead` reads the first token."""

    model_types = ("mpnet",)

    def embed(self, input_ids, attention_mask, token_type_ids):
        return self.embeddings(input_ids=input_ids)

    def layer_context(self, hidden_states, attention_mask):
        context = super().layer_context(hidden_states, attention_mask)
        context["position_bias"] = self.base.encoder.compute_position_bias(hidden_states)
        return context

    def classify(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(hidden_states)


ADAPTERS = {
    t: cls
    for cls in (
        EncoderAdapter,
        RobertaAdapter,
        ElectraAdapter,
        DistilBertAdapter,
        AlbertAdapter,
        DebertaV2Adapter,
        MPNetAdapter,
    )
    for t in cls.model_types
}


def get_adapter(model: nn.Module) -> EncoderAdapter:
    """The adapter for `model.config.model_type`.

    Raises:
        `ValueError`: for a model family that early exit does not support yet, listing the supported ones, or a
            configuration of a supported family that cannot be cut into segments (the adapter says why).
    """
    model_type = model.config.model_type
    if model_type not in ADAPTERS:
        raise ValueError(f"Early exit does not support model type {model_type!r} yet; supported: {sorted(ADAPTERS)}.")
    return ADAPTERS[model_type](model)


class EncoderSegment(nn.Module):
    """Layers `[start, end)` of the encoder and the exit after them.

    Inputs are the adapter's `input_names` (`input_ids`, `attention_mask`, and `token_type_ids` when the model's
    export has them) for the first segment, `hidden_states` and `attention_mask` for the others. Outputs are `logits`
    and, except for the last segment, `hidden_states` for the next one.
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
        context = self.adapter.layer_context(hidden_states, attention_mask)
        for index in range(self.start, self.end):
            hidden_states = self.adapter.apply_layer(index, hidden_states, attention_mask, context)
        if self.is_last:
            return self.adapter.classify(hidden_states)
        return self.head(hidden_states, attention_mask), hidden_states


class FirstSegment(EncoderSegment):
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.run(self.adapter.embed(input_ids, attention_mask, token_type_ids), attention_mask)


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
