"""Export of an EAGLE draft head (`training.eagle_model.EagleDraftModel`) to a stateful OpenVINO IR.

The PyTorch module takes and returns its KV cache explicitly; OpenVINO's make-stateful transformation turns the
`past_*` inputs / `present_*` outputs into states, so the draft keeps its cache in its infer request like an
optimum-intel causal LM, and the speculative loop feeds it tokens, target features, `attention_mask` and
`position_ids` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from ..eagle import EagleDraftConfig, OVEagleDraft
from . import quantization

logger = logging.getLogger(__name__)

INPUTS = ("input_ids", "hidden_states", "attention_mask", "position_ids", "past_key", "past_value")
OUTPUTS = ("logits", "features", "present_key", "present_value")


def convert_eagle_draft(draft) -> ov.Model:
    """The OpenVINO model of an `EagleDraftModel`, stateful, with dynamic sequence and cache lengths."""
    from openvino._offline_transformations import apply_make_stateful_transformation

    draft = draft.eval().float()
    hidden = draft.config.hidden_size
    attn = draft.layer.self_attn
    past = torch.zeros(1, attn.num_kv_heads, 2, attn.head_dim)
    example = {
        "input_ids": torch.ones(1, 3, dtype=torch.long),
        "hidden_states": torch.zeros(1, 3, hidden),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
        "position_ids": torch.arange(2, 5)[None],
        "past_key": past,
        "past_value": past,
    }
    kv_shape = [1, attn.num_kv_heads, -1, attn.head_dim]
    shapes = [[1, -1], [1, -1, hidden], [1, -1], [1, -1], kv_shape, kv_shape]
    with torch.no_grad():
        model = ov.convert_model(draft, example_input=example, input=list(zip(INPUTS, shapes)))
    for out, name in zip(model.outputs, OUTPUTS):
        out.get_tensor().set_names({name})
    for inp, name in zip(model.inputs, INPUTS):
        inp.get_tensor().set_names({name})
    apply_make_stateful_transformation(model, {"past_key": "present_key", "past_value": "present_value"})
    return model


def export_eagle_draft(draft, output: str | Path, metrics: dict | None = None, quantization_config=None) -> Path:
    """Writes an EAGLE draft head to `output` as OpenVINO IR with its token map and `eagle_config.json`.

    Args:
        draft (`EagleDraftModel`): the trained draft head.
        output (`str` or `Path`): the folder to write.
        metrics (`dict`, *optional*): training metrics to keep in the config.
        quantization_config (`OVWeightQuantizationConfig`, *optional*): NNCF weight compression of the head
            (data-free: the head is compressed without calibration inputs).

    Returns:
        `Path`: `output`.

    Raises:
        `ValueError`: when the compression needs calibration data.
    """
    if quantization_config is not None and quantization.needs_calibration(quantization_config):
        record = quantization.describe(quantization_config)
        raise ValueError(
            f"An EAGLE draft head is compressed without calibration data, and {record} needs some: use data-free "
            "weight compression (--weight-format / --draft-weight-format without --quant-mode, --scale-estimation, "
            "--gptq, --lora-correction or an activation-based --sensitivity-metric)."
        )
    model = convert_eagle_draft(draft)
    if quantization_config is not None:
        model = quantization.compress(model, quantization_config)
    config = EagleDraftConfig(
        target_vocab_size=draft.config.vocab_size,
        hidden_size=draft.config.hidden_size,
        draft_vocab_size=len(draft.token_ids),
        metrics=metrics,
    )
    head = OVEagleDraft(model, config, draft.token_ids.numpy().astype(np.int64))
    head.save_pretrained(output)
    logger.info("exported the EAGLE draft head to %s", output)
    return Path(output)
