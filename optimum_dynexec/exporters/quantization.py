"""NNCF compression flags, turned into optimum-intel configs the way `optimum-cli export openvino` does, and applied.

This is the one place where `--weight-format` / `--quant-mode` and their options become a quantization config, for
every technique: the flags fill an argparse namespace that optimum-intel's own CLI helpers read (`prepare_wc_config`,
`prepare_q_config`, `no_compression_parameter_provided`, ...), a model with a recommended config gets it when no option
is given (`get_default_quantization_config`, `_DEFAULT_4BIT_WQ_CONFIG`), and `OVConfig` turns the result into an
`OVWeightQuantizationConfig`, `OVQuantizationConfig` or `OVMixedQuantizationConfig`. Models optimum-intel exports
(causal LMs, diffusion pipelines, the step predictor) take the config as `quantization_config=`; the IR this package
builds itself (early-exit segments, EAGLE heads) goes through `compress`, which runs optimum-intel's own weight-only,
full and mixed quantization routines.

The choices of every option are read from optimum-cli's own parser, so they follow the pinned optimum-intel.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum.commands.export import openvino as optimum_cli  # light: optimum-cli itself imports it to register

from ..data import read_text_file

if TYPE_CHECKING:
    import openvino as ov
    from optimum.intel.openvino.configuration import OVQuantizationConfigBase

logger = logging.getLogger(__name__)


def _optimum_cli_actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    optimum_cli.parse_args_openvino(parser)
    return {action.dest: action for action in parser._actions}


_CLI = _optimum_cli_actions()

# `optimum-cli export openvino`'s options that this package honours, in the order of its help
COMPRESSION_OPTIONS = (
    "group_size",
    "ratio",
    "sym",
    "all_layers",
    "group_size_fallback",
    "backup_precision",
    "awq",
    "scale_estimation",
    "gptq",
    "lora_correction",
    "sensitivity_metric",
    "dataset",
    "num_samples",
    "smooth_quant_alpha",
    "quantization_statistics_path",
)
OPTIONS = ("weight_format", "quant_mode", *COMPRESSION_OPTIONS)
# store_true flags: `None` when not given (optimum-cli tells "not given" from "given" by `None`)
_SWITCHES = tuple(o for o in OPTIONS if _CLI[o].nargs == 0)

TASKS = ("text-classification", "text-generation-with-past", "text-to-image")
HYBRID = "hybrid"
# `--weight-format fp16` only stores the IR in FP16 (no NNCF); export dynexec writes FP32 IR, so it is left out
WEIGHT_FORMATS = tuple(f for f in _CLI["weight_format"].choices if f != "fp16")
QUANT_MODES = tuple(_CLI["quant_mode"].choices)
MIXED_QUANT_MODES = tuple(m for m in QUANT_MODES if "_" in m)
# a diffusion pipeline: 8-bit weights, plus activations in the UNet (NNCF's hybrid mode, or full quantization);
# optimum-intel has no mixed precision for diffusers
DIFFUSION_WEIGHT_FORMATS = ("fp32", "int8")
DIFFUSION_QUANT_MODES = (HYBRID, *(m for m in QUANT_MODES if m not in MIXED_QUANT_MODES))
BACKUP_PRECISIONS = tuple(_CLI["backup_precision"].choices)
GROUP_SIZE_FALLBACKS = tuple(_CLI["group_size_fallback"].choices)
# calibration inputs a technique draws from its own text (early exit: --train-file) when `num_samples` is not set
DEFAULT_CALIBRATION_SAMPLES = 300

_NOTES = {
    "weight_format": "Weight-only compression of every part (the target, the draft, the segments, the pipeline). ",
    "quant_mode": (
        "Weights and activations: text-classification calibrates on --train-file; text-generation-with-past on "
        "--dataset; text-to-image on --dataset or --train-prompts, where `hybrid` (INT8 weights everywhere, INT8 "
        "activations in the UNet) is added and mixed modes are not available. "
    ),
    "group_size_fallback": (
        "Needed when a layer's input width is not a multiple of the group size (e.g. 576-wide layers with the "
        "default INT4 group of 128). "
    ),
    "dataset": (
        "Also a local .txt (one text per line) or .csv (`text` column) file of calibration texts. "
        "text-classification takes none: it calibrates on --train-file as each segment sees it. "
    ),
    "num_samples": f"text-classification: at most this many --train-file texts ({DEFAULT_CALIBRATION_SAMPLES}). ",
}


def add_quantization_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Adds `optimum-cli export openvino`'s compression options to an argparse parser or group, with its own help.

    `--weight-format` and `--quant-mode` list the values of every technique (`--quant-mode hybrid` is this package's,
    for text-to-image); `quantization_config_from_flags` checks them per technique.
    """
    choices = {"weight_format": WEIGHT_FORMATS, "quant_mode": (*QUANT_MODES, HYBRID)}
    for dest in OPTIONS:
        action = _CLI[dest]
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": _NOTES.get(dest, "") + (action.help or "")}
        if action.nargs == 0:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=action.type, choices=choices.get(dest, action.choices))
        group.add_argument(*action.option_strings, **kwargs)


def quantization_config_from_args(args: argparse.Namespace, **kwargs) -> OVQuantizationConfigBase | None:
    """`quantization_config_from_flags` on the options of `add_quantization_arguments` in `args`; `kwargs` override
    them or add `model`, `task` and `calibration_texts`."""
    return quantization_config_from_flags(**({o: getattr(args, o, None) for o in OPTIONS} | kwargs))


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given_flags(options: dict) -> str:
    parts = []
    for dest in OPTIONS:
        value = options.get(dest)
        if value is None:
            continue
        if dest in _SWITCHES:
            parts.append(_flag(dest))
        elif isinstance(value, list):
            parts.append(f"{_flag(dest)} <{len(value)} texts>")
        else:
            parts.append(f"{_flag(dest)} {value}")
    return " ".join(parts)


def _check_choice(dest: str, value, allowed: Sequence[str], context: str = "") -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"Unknown {_flag(dest)} {value!r}{context}; choose one of {tuple(allowed)}.")


def _known_datasets(task: str | None) -> set[str] | None:
    from optimum.intel.openvino.utils import PREDEFINED_CAUSAL_LANGUAGE_DATASETS, PREDEFINED_SD_DATASETS

    return {
        "text-generation-with-past": set(PREDEFINED_CAUSAL_LANGUAGE_DATASETS),
        "text-to-image": set(PREDEFINED_SD_DATASETS),
    }.get(task)


def _resolve_dataset(dataset, task: str | None):
    """A dataset name (checked against optimum-intel's for the task), or the texts of a local file or list."""
    if dataset is None:
        return None
    if task == "text-classification":
        raise ValueError(
            "--dataset is not used by text-classification: early exit calibrates on --train-file, as each segment "
            "sees it. Drop --dataset."
        )
    if isinstance(dataset, (list, tuple)):
        texts = [str(t) for t in dataset]
    elif isinstance(dataset, Path) or Path(str(dataset)).is_file():
        texts = read_text_file(dataset).texts
    else:
        known = _known_datasets(task)
        name = str(dataset).split(":", 1)[0]
        if known is not None and name not in known:
            raise ValueError(
                f"Unknown --dataset {dataset!r} for {task}; choose one of {tuple(sorted(known))} (optimum-intel's "
                "calibration datasets), or give a .txt / .csv file of texts."
            )
        return str(dataset)
    if not texts:
        raise ValueError(f"--dataset {dataset} holds no text.")
    return texts


def _check_sensitivity_metric(metric: str | None) -> None:
    if metric is None:
        return
    import nncf

    _check_choice("sensitivity_metric", metric, [m.value for m in nncf.SensitivityMetric])


def quantization_config_from_flags(
    quant_mode: str | None = None,
    weight_format: str | None = None,
    num_samples: int | None = None,
    *,
    group_size: int | None = None,
    ratio: float | None = None,
    sym: bool | None = None,
    all_layers: bool | None = None,
    group_size_fallback: str | None = None,
    backup_precision: str | None = None,
    awq: bool | None = None,
    scale_estimation: bool | None = None,
    gptq: bool | None = None,
    lora_correction: bool | None = None,
    sensitivity_metric: str | None = None,
    dataset: str | Path | Sequence[str] | None = None,
    smooth_quant_alpha: float | None = None,
    quantization_statistics_path: str | None = None,
    model: str | Path | None = None,
    task: str | None = None,
    calibration_texts: Sequence[str] | None = None,
) -> OVQuantizationConfigBase | None:
    """The optimum-intel quantization config that `optimum-cli export openvino` builds from the same flags.

    The flags fill an argparse namespace read by optimum-intel's own `prepare_wc_config` / `prepare_q_config`; with
    `--weight-format int4` / `int8` or `--quant-mode int8` and no other option, the model's recommended config is
    used when optimum-intel has one (looked up by `model`'s id, its config's `_name_or_path` or its folder name),
    and plain INT4 falls back to optimum-intel's default (asymmetric, group 128, ratio 1).

    Args:
        quant_mode (`str`, *optional*): `--quant-mode`: weights and activations (`"int8"`, `"f8e4m3"`, `"f8e5m2"`,
            or mixed `"int4_f8e4m3"`, `"int4_f8e5m2"`, `"cb4_f8e4m3"`); for text-to-image also `"hybrid"`
            (INT8 weights, INT8 activations in the UNet).
        weight_format (`str`, *optional*): `--weight-format`: weight-only compression (`"fp32"`: none, `"int8"`,
            `"int4"`, `"mxfp4"`, `"nf4"`, `"cb4"`).
        num_samples (`int`, *optional*): `--num-samples`, calibration samples.
        group_size, ratio, sym, all_layers, group_size_fallback, backup_precision, awq, scale_estimation, gptq,
            lora_correction, sensitivity_metric, smooth_quant_alpha, quantization_statistics_path: the optimum-cli
            options of the same names (`None`: not given). `group_size_fallback="adjust"` is optimum-intel's
            mechanism for layers whose width is not a multiple of the group size.
        dataset (`str`, `Path` or `list[str]`, *optional*): `--dataset`: an optimum-intel calibration dataset name
            (e.g. `"wikitext2"`, `"auto"` for causal LMs, `"conceptual_captions"` for diffusion), a `.txt` / `.csv`
            file of texts, or the texts themselves. With `--weight-format` on text-to-image it selects NNCF's hybrid
            mode, as in optimum-cli.
        model (`str` or `Path`, *optional*): the model id or folder, to find optimum-intel's recommended config.
        task (`str`, *optional*): the technique (`"text-classification"`, `"text-generation-with-past"` or
            `"text-to-image"`), to check the values it takes; `None` checks what optimum-intel accepts.
        calibration_texts (`list[str]`, *optional*): text-to-image: the prompts that `--quant-mode` calibrates on
            when `dataset` is not given (the training prompts).

    Returns:
        `OVWeightQuantizationConfig`, `OVQuantizationConfig` or `OVMixedQuantizationConfig` (or optimum-intel's
        recommended config for the model), or `None` for full precision.

    Raises:
        `ValueError`: for a value optimum-intel (or the technique) does not take, naming the flag and the allowed
            values; for both `--quant-mode` and `--weight-format`; for options without a format.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    diffusion = task == "text-to-image"
    context = f" for {task}" if task else ""
    formats = DIFFUSION_WEIGHT_FORMATS if diffusion else WEIGHT_FORMATS
    modes = DIFFUSION_QUANT_MODES if diffusion else QUANT_MODES
    if weight_format == "fp16":
        raise ValueError(
            "--weight-format fp16 (FP16 storage, no NNCF) is not supported by export dynexec, which writes FP32 IR; "
            f"choose one of {formats}."
        )
    _check_choice("weight_format", weight_format, formats, context)
    _check_choice("quant_mode", quant_mode, modes, context)
    _check_choice("group_size_fallback", group_size_fallback, GROUP_SIZE_FALLBACKS)
    _check_choice("backup_precision", backup_precision, BACKUP_PRECISIONS)
    _check_sensitivity_metric(sensitivity_metric)

    options = {
        "weight_format": weight_format,
        "quant_mode": quant_mode,
        "group_size": group_size,
        "ratio": ratio,
        "sym": sym,
        "all_layers": all_layers,
        "group_size_fallback": group_size_fallback,
        "backup_precision": backup_precision,
        "awq": awq,
        "scale_estimation": scale_estimation,
        "gptq": gptq,
        "lora_correction": lora_correction,
        "sensitivity_metric": sensitivity_metric,
        "dataset": _resolve_dataset(dataset, task),
        "num_samples": num_samples,
        "smooth_quant_alpha": smooth_quant_alpha,
        "quantization_statistics_path": quantization_statistics_path,
    }
    for switch in _SWITCHES:  # a switch left off is "not given", as on optimum-cli's command line
        options[switch] = True if options[switch] else None
    if diffusion and options["dataset"] is None and quant_mode is not None and calibration_texts:
        options["dataset"] = list(calibration_texts)
    args = argparse.Namespace(**options)
    given = _given_flags(options)

    if weight_format is None and quant_mode is None:
        if not optimum_cli.no_compression_parameter_provided(args) or quantization_statistics_path is not None:
            raise ValueError(f"{given}: these options tune compression: give --weight-format or --quant-mode.")
        return None
    if weight_format is not None and quant_mode is not None:
        if weight_format == "fp32":
            weight_format = args.weight_format = None
        else:
            raise ValueError(
                f"--quant-mode {quant_mode} already quantizes the weights: give it or --weight-format, not both."
            )
    if weight_format == "fp32":
        if not optimum_cli.no_compression_parameter_provided(args):
            logger.warning("--weight-format fp32 compresses nothing: %s has no effect.", given)
        return None

    config = _config_dict(args, model, diffusion)
    try:
        from optimum.intel import OVConfig

        config = OVConfig(quantization_config=config).quantization_config
    except ValueError as error:
        raise ValueError(f"optimum-intel rejects `{given}`: {error}") from error
    _warn_unused(args, config)
    return config


def _config_dict(args: argparse.Namespace, model, diffusion: bool) -> dict:
    """What `optimum-cli export openvino`'s `run()` builds from the namespace, as a dict for `OVConfig`."""
    from optimum.intel.openvino.configuration import _DEFAULT_4BIT_WQ_CONFIG, get_default_quantization_config

    if args.quant_mode == HYBRID:
        if args.dataset is None:
            raise ValueError(
                "--quant-mode hybrid calibrates the UNet's activations on prompts: give calibration prompts "
                "(--train-prompts) or --dataset."
            )
        config = optimum_cli.prepare_wc_config(argparse.Namespace(**{**vars(args), "weight_format": "int8"}), {})
        config["quant_method"] = HYBRID
        return config
    default = None
    if model is not None and args.quant_mode not in MIXED_QUANT_MODES:
        default = get_default_quantization_config(str(model), args.weight_format, args.quant_mode)
    if args.weight_format is not None:
        config = optimum_cli.prepare_wc_config(args, _DEFAULT_4BIT_WQ_CONFIG)
        if optimum_cli.no_compression_parameter_provided(args) and args.weight_format in ("int4", "int8"):
            if default is not None:
                logger.info("Applying optimum-intel's recommended quantization config for %s: %s.", model, default)
                config = default
            elif args.weight_format == "int4":
                config = _DEFAULT_4BIT_WQ_CONFIG
            config = copy.deepcopy(config)
            if args.quantization_statistics_path is not None:
                config["statistics_path"] = args.quantization_statistics_path
        if diffusion and args.dataset is not None:  # optimum-intel's own rule for pipelines: weights + data = hybrid
            config["quant_method"] = HYBRID
        return config
    if diffusion and args.dataset is None:
        raise ValueError(
            f"--quant-mode {args.quant_mode} calibrates the UNet's activations on prompts: give calibration prompts "
            "(--train-prompts) or --dataset."
        )
    if optimum_cli.no_quantization_parameter_provided(args) and default is not None:
        logger.info("Applying optimum-intel's recommended quantization config for %s: %s.", model, default)
        config = copy.deepcopy(default)
        if "quantization_configs" not in config:  # optimum-intel's own hint for a dict that fits both classes
            config.setdefault("weight_only", False)
        return config
    if args.quant_mode in MIXED_QUANT_MODES:
        weights_dtype, activations_dtype = args.quant_mode.split("_")
        weights = optimum_cli.prepare_wc_config(args, _DEFAULT_4BIT_WQ_CONFIG)
        weights["dtype"] = weights_dtype
        activations = optimum_cli.prepare_q_config(args)
        activations["dtype"] = activations_dtype
        return {
            "weight_quantization_config": weights,
            "full_quantization_config": activations,
            "num_samples": args.num_samples,
            "dataset": args.dataset,
        }
    return optimum_cli.prepare_q_config(args)


def _warn_unused(args: argparse.Namespace, config) -> None:
    """optimum-cli drops options that do not apply to the format; say so instead of staying silent."""
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    unused = []
    if isinstance(config, OVWeightQuantizationConfig) and config.bits == 8:
        unused = ["group_size", "ratio", "all_layers", "smooth_quant_alpha"]
    elif isinstance(config, OVWeightQuantizationConfig):
        unused = ["smooth_quant_alpha"]
    elif isinstance(config, OVQuantizationConfig):
        unused = [o for o in COMPRESSION_OPTIONS if o not in ("sym", "dataset", "num_samples", "smooth_quant_alpha")]
    ignored = [_flag(o) for o in unused if getattr(args, o) is not None]
    if ignored:
        logger.warning("%s: not used by this format (as in optimum-cli export openvino).", ", ".join(ignored))


def _is_hybrid(config) -> bool:
    method = getattr(config, "quant_method", None)
    return str(getattr(method, "value", method)) == HYBRID


def _check_type(quantization_config) -> None:
    from optimum.intel import (
        OVMixedQuantizationConfig,
        OVPipelineQuantizationConfig,
        OVQuantizationConfig,
        OVWeightQuantizationConfig,
    )

    kinds = (OVWeightQuantizationConfig, OVQuantizationConfig, OVMixedQuantizationConfig, OVPipelineQuantizationConfig)
    if not isinstance(quantization_config, kinds):
        raise TypeError(
            "quantization_config must be an optimum-intel OVQuantizationConfig (weights and activations), "
            "OVWeightQuantizationConfig (weights only), OVMixedQuantizationConfig or OVPipelineQuantizationConfig, "
            f"got {type(quantization_config).__name__}."
        )


def describe(quantization_config: OVQuantizationConfigBase | None) -> dict | None:
    """A JSON-able record of a quantization config for `dynexec_config.json`, keyed like the CLI flags.

    The format (`weight_format`, or `quant_mode` for weights and activations, `"hybrid"` included) and every option
    that differs from the format's plain default: `group_size`, `ratio`, `sym`, `all_layers`, `group_size_fallback`,
    `backup_precision`, `awq`, `scale_estimation`, `gptq`, `lora_correction`, `sensitivity_metric`,
    `smooth_quant_alpha`, a named `dataset`. Mixed precision records `weights` and `activations` apart.

    Raises:
        `TypeError`: when `quantization_config` is not an optimum-intel quantization config.
    """
    from optimum.intel import OVMixedQuantizationConfig, OVPipelineQuantizationConfig, OVQuantizationConfig

    if quantization_config is None:
        return None
    _check_type(quantization_config)
    if isinstance(quantization_config, OVPipelineQuantizationConfig):
        return {
            "models": {name: describe(c) for name, c in quantization_config.quantization_configs.items()},
            "default": describe(quantization_config.default_config),
        }
    if isinstance(quantization_config, OVMixedQuantizationConfig):
        weights = _weights_record(quantization_config.weight_quantization_config)
        activations = _activations_record(quantization_config.full_quantization_config)
        return {"quant_mode": f"{weights['weight_format']}_{activations['quant_mode']}", "weights": weights} | {
            "activations": activations
        }
    if isinstance(quantization_config, OVQuantizationConfig):
        return _activations_record(quantization_config)
    return _weights_record(quantization_config)


def _dataset_record(config) -> dict:
    return {"dataset": config.dataset} if isinstance(config.dataset, str) else {}


def _weights_record(config) -> dict:
    dtype = config.dtype or f"int{config.bits}"
    if _is_hybrid(config):
        record = {"quant_mode": HYBRID} | ({"weight_format": dtype} if dtype != "int8" else {})
    else:
        record = {"weight_format": dtype}
    method = getattr(config.quant_method, "value", config.quant_method)
    options = {
        "group_size": None if config.group_size == -1 and config.bits == 8 else config.group_size,
        "ratio": None if config.ratio == 1.0 else config.ratio,
        "sym": config.sym or None,
        "all_layers": config.all_layers or None,
        "group_size_fallback": config.group_size_fallback,
        "backup_precision": config.backup_precision,
        "awq": True if method == "awq" else None,
        "scale_estimation": config.scale_estimation or None,
        "gptq": config.gptq or None,
        "lora_correction": config.lora_correction or None,
        "sensitivity_metric": config.sensitivity_metric,
        "dq_group_size": config.dq_group_size,
    }
    return record | {k: v for k, v in options.items() if v is not None} | _dataset_record(config)


def _activations_record(config) -> dict:
    options = {"sym": config.sym or None, "smooth_quant_alpha": config.smooth_quant_alpha}
    record = {"quant_mode": config.dtype or f"int{config.bits}"}
    return record | {k: v for k, v in options.items() if v is not None} | _dataset_record(config)


def needs_calibration(quantization_config: OVQuantizationConfigBase | None) -> bool:
    """Whether the config cannot run without calibration inputs: it quantizes activations (`--quant-mode`, hybrid
    or mixed), or compresses weights with a data-driven algorithm (scale estimation, GPTQ, LoRA correction, or a
    `ratio` below 1 ranked by an activation-based `sensitivity_metric`)."""
    from optimum.intel import OVMixedQuantizationConfig, OVQuantizationConfig, OVWeightQuantizationConfig

    if isinstance(quantization_config, (OVQuantizationConfig, OVMixedQuantizationConfig)):
        return True
    if isinstance(quantization_config, OVWeightQuantizationConfig):
        config = quantization_config
        metric = config.sensitivity_metric
        ranked = config.ratio < 1.0 and metric is not None and metric != "weight_quantization_error"
        return _is_hybrid(config) or ranked or bool(config.scale_estimation or config.gptq or config.lora_correction)
    return False


def is_data_aware(quantization_config: OVQuantizationConfigBase | None) -> bool:
    """Whether the config uses calibration inputs when it gets them: `needs_calibration`, or AWQ, or a mixed
    INT4 / backup `ratio` below 1 ranked by activation statistics (both also run data-free)."""
    from optimum.intel import OVWeightQuantizationConfig

    if needs_calibration(quantization_config):
        return True
    if not isinstance(quantization_config, OVWeightQuantizationConfig):
        return False
    method = getattr(quantization_config.quant_method, "value", quantization_config.quant_method)
    ranked = quantization_config.ratio < 1.0 and quantization_config.sensitivity_metric != "weight_quantization_error"
    return method == "awq" or ranked


@contextmanager
def explain_group_size_errors() -> Iterator[None]:
    """Turns NNCF's error for a layer width that the group size does not divide into a `ValueError` that names
    optimum-intel's remedy (`--group-size-fallback` / `group_size_fallback`)."""
    import nncf

    try:
        yield
    except nncf.InvalidGroupSizeError as error:
        raise ValueError(
            f"{error}\nA compressed layer's input width is not a multiple of the group size: pass "
            "--group-size-fallback adjust (`group_size_fallback='adjust'`: such a layer gets the largest "
            "power-of-two group of at least 32 that divides it, else the backup precision) or `ignore` (leaves it "
            "uncompressed), or another --group-size."
        ) from error


def _with_num_samples(config, available: int):
    """A copy of `config` that calibrates on at most the `available` inputs."""
    config = config.clone()
    for part in (
        config,
        getattr(config, "weight_quantization_config", None),
        getattr(config, "full_quantization_config", None),
    ):
        if part is not None:
            part.num_samples = min(part.num_samples or available, available)
    return config


def compress(
    model: ov.Model, quantization_config: OVQuantizationConfigBase, calibration: list[dict] | None = None
) -> ov.Model:
    """Applies `quantization_config` to one OpenVINO model with optimum-intel's own NNCF routines.

    Args:
        model (`ov.Model`): the model to compress.
        quantization_config (`OVWeightQuantizationConfig`, `OVQuantizationConfig` or `OVMixedQuantizationConfig`):
            what to do; a hybrid weight config becomes optimum-intel's mixed config for the model (weights of
            MatMul / Embedding layers, activations of the others).
        calibration (`list[dict]`, *optional*): input feeds of `model`; required when `needs_calibration`, used by
            data-aware algorithms (`is_data_aware`) when given.

    Returns:
        `ov.Model`: the compressed model.

    Raises:
        `ValueError`: when the config needs calibration inputs and none are given, or a layer's width does not fit
            the group size.
        `TypeError`: for anything but one model's optimum-intel quantization config.
    """
    import nncf
    from optimum.intel import OVMixedQuantizationConfig, OVPipelineQuantizationConfig, OVQuantizationConfig
    from optimum.intel.openvino.quantization import (
        _full_quantization,
        _get_hybrid_mixed_quantization_config,
        _mixed_quantization,
        _weight_only_quantization,
    )

    _check_type(quantization_config)
    if isinstance(quantization_config, OVPipelineQuantizationConfig):
        raise TypeError("compress() takes one model's config, not an OVPipelineQuantizationConfig.")
    if needs_calibration(quantization_config) and not calibration:
        raise ValueError(
            f"{describe(quantization_config)} quantizes activations or runs a data-driven algorithm: it needs "
            "calibration inputs, and none were given."
        )
    dataset = None
    if calibration and is_data_aware(quantization_config):
        dataset = nncf.Dataset(calibration)
        quantization_config = _with_num_samples(quantization_config, len(calibration))
    with explain_group_size_errors():
        if isinstance(quantization_config, OVQuantizationConfig):
            return _full_quantization(model, quantization_config, dataset)
        if isinstance(quantization_config, OVMixedQuantizationConfig):
            return _mixed_quantization(model, quantization_config, dataset)
        if _is_hybrid(quantization_config):
            return _mixed_quantization(
                model, _get_hybrid_mixed_quantization_config(model, quantization_config), dataset
            )
        return _weight_only_quantization(model, quantization_config, dataset)
