"""Export of a Stable Diffusion pipeline with its step policy: `out/` holds optimum-intel's OpenVINO pipeline,
`out/step_predictor/` the StepSaver predictor (an OpenVINO text classifier) and `dynexec_config.json` the policy."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from optimum.intel import OVModelForSequenceClassification, OVStableDiffusionPipeline
from transformers import AutoConfig, AutoTokenizer

from ..configuration import StepSaverConfig, load_dynexec_config, validate_step_policy
from ..training.step_predictor import DEFAULT_STEP_GRID, build_step_records, train_step_predictor
from . import quantization

logger = logging.getLogger(__name__)

PREDICTOR_DIR = "step_predictor"
DIFFUSION_QUANT_MODES = quantization.DIFFUSION_QUANT_MODES
DIFFUSION_WEIGHT_FORMATS = quantization.DIFFUSION_WEIGHT_FORMATS


def diffusion_quantization_config(
    quant_mode: str | None = None,
    weight_format: str | None = None,
    calibration_prompts: Sequence[str] | None = None,
    num_samples: int | None = None,
    **options,
):
    """The optimum-intel config for the pipeline's compression flags (`None`: full precision), built by
    `quantization.quantization_config_from_flags` for text-to-image.

    `weight_format="int8"` compresses the weights of every component; `quant_mode="hybrid"` also quantizes the
    UNet's activations (NNCF's hybrid mode) and `quant_mode="int8"` / `"f8e4m3"` / `"f8e5m2"` quantizes the UNet
    fully, calibrated by running the pipeline on `calibration_prompts` (or `options["dataset"]`). As in
    `optimum-cli export openvino`, `weight_format` with a `dataset` is hybrid too.

    Args:
        quant_mode (`str`, *optional*): one of `DIFFUSION_QUANT_MODES`.
        weight_format (`str`, *optional*): one of `DIFFUSION_WEIGHT_FORMATS`.
        calibration_prompts (`list[str]`, *optional*): the prompts `quant_mode` calibrates on.
        num_samples (`int`, *optional*): calibration samples (optimum-intel's default when `None`).
        options: the other optimum-cli options (`sym`, `dataset`, `smooth_quant_alpha`, ...), see
            `quantization_config_from_flags`.

    Returns:
        `OVWeightQuantizationConfig` or `OVQuantizationConfig`, or `None`.

    Raises:
        `ValueError`: on unknown values, both flags, or a `quant_mode` without calibration prompts.
    """
    return quantization.quantization_config_from_flags(
        quant_mode,
        weight_format,
        num_samples,
        task="text-to-image",
        calibration_texts=calibration_prompts,
        **options,
    )


def is_openvino_pipeline(path: Path) -> bool:
    return (Path(path) / "unet" / "openvino_model.xml").is_file()


def load_plain_pipeline(model: str | Path, quantization_config=None, **kwargs):
    """optimum-intel's `OVStableDiffusionPipeline` for an OpenVINO folder, or exported from a diffusers folder.

    Raises:
        `FileNotFoundError`: when `model` is neither.
        `ValueError`: when the compression needs calibration prompts it lacks, or a layer's width does not fit the
            group size.
    """
    model = Path(model)
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"{model} is not a diffusers pipeline folder (no model_index.json).")
    if quantization.needs_calibration(quantization_config) and quantization_config.dataset is None:
        raise ValueError(
            f"The pipeline's compression {quantization.describe(quantization_config)} calibrates on prompts: give "
            "it a dataset (calibration prompts, --train-prompts or --dataset)."
        )
    with quantization.explain_group_size_errors():
        return OVStableDiffusionPipeline.from_pretrained(
            model, export=not is_openvino_pipeline(model), quantization_config=quantization_config, **kwargs
        )


def export_step_predictor(predictor: str | Path, output: str | Path, quantization_config=None) -> list[int]:
    """Exports a trained step predictor (transformers classifier with `step_buckets` in its config) to OpenVINO.

    Returns:
        `list[int]`: its step buckets.

    Raises:
        `ValueError`: when the folder is not a step predictor.
    """
    predictor = Path(predictor)
    if not (predictor / "config.json").is_file():
        raise FileNotFoundError(f"The step predictor {predictor} is not a transformers model folder (no config.json).")
    buckets = getattr(AutoConfig.from_pretrained(predictor), "step_buckets", None)
    if not buckets:
        raise ValueError(
            f"{predictor} is not a step predictor: its config has no `step_buckets` (train one with "
            "`optimum_dynexec.training.step_predictor.train_step_predictor`)."
        )
    with quantization.explain_group_size_errors():
        model = OVModelForSequenceClassification.from_pretrained(
            predictor,
            export=not (predictor / "openvino_model.xml").is_file(),
            compile=False,
            quantization_config=quantization_config,
        )
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(predictor).save_pretrained(output)
    return [int(b) for b in buckets]


def export_stepsaver(
    model: str | Path,
    output: str | Path,
    predictor: str | Path | None = None,
    policy: str | None = None,
    default_steps: int = 50,
    quantile: float = 0.5,
    batching: str = "group",
    tolerance: float = 0.05,
    quantization_config=None,
    predictor_quantization_config=None,
    training: dict | None = None,
) -> Path:
    """Writes an OpenVINO Stable Diffusion pipeline with its step policy (and predictor) into `output`.

    Args:
        model (`str` or `Path`): a diffusers pipeline folder (exported here) or an optimum-intel OpenVINO one.
        output (`str` or `Path`): the dynexec folder to write.
        predictor (`str` or `Path`, *optional*): a trained step predictor folder; attached as `step_predictor/`.
        policy (`str`, *optional*): the default step policy; `"predictor"` when a predictor is given, else
            `"adaptive"`.
        default_steps (`int`, defaults to 50): the fixed schedule, and the adaptive policy's maximum.
        quantile (`float`, defaults to 0.5), batching (`str`, defaults to `"group"`), tolerance (`float`, defaults
            to 0.05): see `StepSaverConfig`.
        quantization_config: optimum-intel config for the pipeline (see `diffusion_quantization_config`).
        predictor_quantization_config: optimum-intel config for the predictor (e.g. INT8 weights).
        training (`dict`, *optional*): what training the predictor measured, recorded in the config.

    Returns:
        `Path`: `output`.
    """
    output = Path(output)
    policy = policy or ("predictor" if predictor is not None else "adaptive")
    validate_step_policy(policy)
    if policy == "predictor" and predictor is None:
        raise ValueError("The 'predictor' step policy needs a trained step predictor (--step-predictor).")
    settings = {
        "policy": policy,
        "default_steps": default_steps,
        "predictor": PREDICTOR_DIR if predictor is not None else None,
        "quantile": quantile,
        "batching": batching,
        "tolerance": tolerance,
        "training": training,
        "quantization": {
            "pipeline": quantization.describe(quantization_config),
            "predictor": quantization.describe(predictor_quantization_config),
        },
    }
    StepSaverConfig(**settings, step_buckets=[1])  # fail on bad settings before the slow export
    pipe = load_plain_pipeline(model, quantization_config=quantization_config, compile=False)
    pipe.save_pretrained(output)
    buckets = []
    if predictor is not None:
        buckets = export_step_predictor(predictor, output / PREDICTOR_DIR, predictor_quantization_config)
    StepSaverConfig(**settings, step_buckets=buckets).save(output)
    logger.info("exported %s with step policy %r to %s", model, policy, output)
    return output


def train_and_export_stepsaver(
    model: str | Path,
    output: str | Path,
    train_prompts: Sequence[str],
    predictor_base: str | Path,
    seeds_per_prompt: int = 2,
    step_grid: Sequence[int] | None = None,
    ssim_threshold: float = 0.9,
    judge=None,
    quantization_config=None,
    predictor_quantization_config=None,
    **export_kwargs,
) -> Path:
    """Exports the pipeline, labels `train_prompts` with their fewest sufficient steps on it, trains the predictor
    (from `predictor_base`, e.g. all-MiniLM-L6-v2) and attaches it.

    The records and the predictor's training metrics are kept in `output/step_predictor_training/`.
    """
    output = Path(output)
    if not train_prompts:
        raise ValueError("--train-step-predictor needs training prompts (--train-prompts), got none.")
    step_grid = list(step_grid or DEFAULT_STEP_GRID)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "pipeline"
        load_plain_pipeline(model, quantization_config=quantization_config, compile=False).save_pretrained(plain)
        pipe = OVStableDiffusionPipeline.from_pretrained(plain)
        pipe.set_progress_bar_config(disable=True)
        prompts = [p for p in train_prompts for _ in range(seeds_per_prompt)]
        seeds = list(range(len(prompts)))
        records = build_step_records(pipe, prompts, seeds, step_grid, ssim_threshold, judge=judge)
        work = output / "step_predictor_training"
        work.mkdir(parents=True, exist_ok=True)
        records.save(work / "step_records.json")
        trained = train_step_predictor(records, predictor_base, Path(tmp) / "predictor")
        shutil.copy(trained / "step_predictor_metrics.json", work)
        export_kwargs.setdefault("default_steps", step_grid[-1])
        export_stepsaver(
            plain,
            output,
            predictor=trained,
            predictor_quantization_config=predictor_quantization_config,
            training={"images": len(prompts), "step_grid": step_grid, "ssim_threshold": ssim_threshold},
            **export_kwargs,
        )
    # the pipeline was compressed above, before labelling: record it
    config = load_dynexec_config(output)
    config.quantization["pipeline"] = quantization.describe(quantization_config)
    config.save(output)
    return output
