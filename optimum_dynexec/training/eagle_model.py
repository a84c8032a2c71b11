"""The EAGLE draft head in PyTorch: one decoder layer that extrapolates the target's last hidden state.

EAGLE (Li et al., 2024) drafts at the feature level: at position `t` it reads the target's final hidden state `f_t`
(the input of the LM head) and the embedding of the next token `x_{t+1}`, fuses them with a linear layer, runs one
Llama decoder layer, and predicts `f_{t+1}`; an LM head turns that into the token `x_{t+2}`. Later draft steps feed its
own predicted features back. Here the LM head keeps only the `token_ids` the target emits most (a reduced vocabulary,
as in EAGLE-3), copied from the target's head, so a draft step costs a few percent of a target step.

The KV cache is explicit (`past_key`/`past_value` in, `present_key`/`present_value` out) so the OpenVINO export can
turn it into states; `attention_mask` covers past and new positions (0 marks a rolled-back position).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)


def layer_config(config) -> LlamaConfig:
    """The Llama config of the draft's decoder layer: the target's own when it is one, otherwise the target's shapes,
    activation and the RoPE of its last layer (Gemma-3 keeps one `rope_parameters` entry per layer type)."""
    if isinstance(config, LlamaConfig):
        return config
    rope = getattr(config, "rope_parameters", None) or {}
    layer_types = getattr(config, "layer_types", None)
    rope = rope.get(layer_types[-1], rope) if layer_types else rope
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None),
        hidden_act=getattr(config, "hidden_act", None) or config.hidden_activation,
        rms_norm_eps=config.rms_norm_eps,
        attention_bias=getattr(config, "attention_bias", False),
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=dict(rope) or None,
    )


class EagleAttention(nn.Module):
    """Grouped-query self-attention with the weight names of `LlamaAttention` and an explicit KV cache."""

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or hidden // self.num_heads
        bias = getattr(config, "attention_bias", False)
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)

    def forward(self, x, cos, sin, mask, past_key, past_value):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        key, value = torch.cat([past_key, k], 2), torch.cat([past_value, v], 2)
        groups = self.num_heads // self.num_kv_heads
        out = F.scaled_dot_product_attention(
            q, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=mask
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), key, value


class EagleLayer(nn.Module):
    """A pre-norm Llama decoder layer (same weight names as `LlamaDecoderLayer`) with an explicit KV cache."""

    def __init__(self, config):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = EagleAttention(config)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin, mask, past_key, past_value):
        attn, key, value = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key, past_value)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), key, value


class EagleDraftModel(nn.Module):
    """EAGLE draft head over a Llama-family target.

    Args:
        config (`LlamaConfig`): the target's config (hidden size, heads, MLP width, RoPE).
        token_ids (`torch.LongTensor` of shape `(draft_vocab,)`): the target token ids the head can emit.

    Forward inputs: `input_ids` `(batch, n)` (token `x_{t+1}`), `hidden_states` `(batch, n, hidden)` (feature
    `f_t`), `attention_mask` `(batch, past + n)`, `position_ids` `(batch, n)`, `past_key`/`past_value`
    `(batch, kv_heads, past, head_dim)`. Outputs: draft logits over `token_ids`, the predicted features `f_{t+1}`,
    and the updated keys and values.
    """

    def __init__(self, config, token_ids: torch.Tensor):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden)
        self.fc = nn.Linear(2 * hidden, hidden, bias=True)
        layer = layer_config(config)
        self.layer = EagleLayer(layer)
        self.rotary_emb = LlamaRotaryEmbedding(layer)
        self.lm_head = nn.Linear(hidden, len(token_ids), bias=False)
        self.register_buffer("token_ids", token_ids.to(torch.long).clone(), persistent=True)

    @classmethod
    def from_target(cls, target, token_ids: torch.Tensor) -> "EagleDraftModel":
        """A draft whose embeddings, reduced LM head and decoder layer start as copies of the target's (its last
        layer, with zeroed output projections so the layer starts as the identity), and whose fusion layer starts by
        passing the target's feature through.

        A target that scales its embeddings (Gemma's `embed_scale`) gives them scaled; a last layer of another shape
        than Llama's (Gemma's extra norms, whose weights mean `1 + w`) gives its projections only."""
        draft = cls(target.config, token_ids)
        inner = target.model
        with torch.no_grad():
            draft.embed_tokens.weight.copy_(inner.embed_tokens.weight * getattr(inner.embed_tokens, "embed_scale", 1))
            draft.lm_head.weight.copy_(target.lm_head.weight[token_ids])
            layer, own = inner.layers[-1].state_dict(), draft.layer.state_dict()
            if set(layer) != set(own):
                layer = {k: v for k, v in layer.items() if k in own and k.endswith("_proj.weight")}
            draft.layer.load_state_dict(layer, strict=False)
            draft.layer.self_attn.o_proj.weight.zero_()
            draft.layer.mlp.down_proj.weight.zero_()
            hidden = target.config.hidden_size
            draft.fc.weight.zero_()
            draft.fc.weight[:, hidden:].copy_(torch.eye(hidden))
            draft.fc.bias.zero_()
        return draft

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The parameters copied from the target and kept fixed in training (embeddings and LM head)."""
        return [self.embed_tokens.weight, self.lm_head.weight]

    def forward(self, input_ids, hidden_states, attention_mask, position_ids, past_key, past_value):
        x = self.fc(torch.cat([self.embed_tokens(input_ids), hidden_states.to(self.fc.weight.dtype)], -1))
        cos, sin = self.rotary_emb(x, position_ids)
        total, length = attention_mask.shape[1], input_ids.shape[1]
        keys = torch.arange(total, device=x.device)
        queries = torch.arange(length, device=x.device) + (total - length)
        allowed = (keys[None, :] <= queries[:, None])[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, -1e9)
        features, key, value = self.layer(x, cos, sin, mask, past_key, past_value)
        return self.lm_head(features), features, key, value

    def empty_cache(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-length `past_key`, `past_value` for a forward pass without history."""
        attn = self.layer.self_attn
        shape = (batch, attn.num_kv_heads, 0, attn.head_dim)
        return torch.zeros(shape, dtype=self.fc.weight.dtype), torch.zeros(shape, dtype=self.fc.weight.dtype)
