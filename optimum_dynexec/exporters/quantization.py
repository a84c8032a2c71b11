"""NNCF compression of exported IR, driven by optimum-intel's own quantization configs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openvino as ov

logger = logging.getLogger(__name__)

QUANT_MODES = ("int8",)
WEIGHT_FORMATS = ("fp32", "int8", "int4")


def quantization_config_from_flags(
    quant_mode: str | None = None, weight_format: str | None = None, num_samples: int = 300
):
    """The optimum-intel config for the CLI flags `--quant-mode` / `--weight-format` (or `None` for full precision).

    Raises:
        `ValueError`: for an unknown value or when both flags ask for compression.
    """
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    if quant_mode is not None and quant_mode not in QUANT_MODES:
        raise ValueError(f"Unknown --quant-mode {quant_mode!r}; choose one of {QUANT_MODES}.")
    if weight_format is not None and weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"Unknown --weight-format {weight_format!r}; choose one of {WEIGHT_FORMATS}.")
    if weight_format == "fp32":
        weight_format = None
    if quant_mode and weight_format:
        raise ValueError("--quant-mode int8 already quantizes the weights: give it or --weight-format, not both.")
    if quant_mode == "int8":
        return OVQuantizationConfig(bits=8, num_samples=num_samples)
    if weight_format == "int4":
        # group-wise INT4 (group 128); layers whose width is not a multiple of it get an adjusted group size, as in
        # optimum-intel's own presets (SmolLM2's 576-wide layers would otherwise fail)
        return OVWeightQuantizationConfig(bits=4, group_size_fallback="adjust")
    if weight_format is not None:
        return OVWeightQuantizationConfig(bits=int(weight_format[3:]))
    return None


def describe(quantization_config) -> dict | None:
    """A small JSON-able record of a quantization config for `dynexec_config.json`."""
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    if quantization_config is None:
        return None
    if isinstance(quantization_config, OVQuantizationConfig):
        return {"quant_mode": f"int{quantization_config.bits}", "num_samples": quantization_config.num_samples}
    if isinstance(quantization_config, OVWeightQuantizationConfig):
        return {"weight_format": f"int{quantization_config.bits}", "sym": quantization_config.sym}
    raise TypeError(
        "quantization_config must be an optimum-intel OVQuantizationConfig (weights and activations) or "
        f"OVWeightQuantizationConfig (weights only), got {type(quantization_config).__name__}."
    )


def needs_calibration(quantization_config) -> bool:
    """Whether the config quantizes activations and so needs calibration inputs."""
    from optimum.intel import OVQuantizationConfig

    return isinstance(quantization_config, OVQuantizationConfig)


def compress(model: "ov.Model", quantization_config, calibration: list[dict] | None = None) -> "ov.Model":
    """Applies `quantization_config` to one OpenVINO model with NNCF.

    Args:
        model (`ov.Model`): the model to compress.
        quantization_config (`OVQuantizationConfig` or `OVWeightQuantizationConfig`): what to do.
        calibration (`list[dict]`, *optional*): input feeds, required for `OVQuantizationConfig`.

    Raises:
        `ValueError`: when activation quantization is asked for without calibration inputs.
    """
    import nncf

    describe(quantization_config)  # type check with a clear message
    kwargs = quantization_config.to_nncf_dict()
    if needs_calibration(quantization_config):
        if not calibration:
            raise ValueError("INT8 quantization of activations needs calibration text; none was given.")
        kwargs["subset_size"] = min(kwargs["subset_size"], len(calibration))
        return nncf.quantize(model, nncf.Dataset(calibration), **kwargs)
    kwargs.pop("subset_size", None)
    return nncf.compress_weights(model, **{k: v for k, v in kwargs.items() if v is not None})
