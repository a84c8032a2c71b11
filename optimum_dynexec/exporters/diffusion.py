"""Export of a text-to-image pipeline (Stable Diffusion, SDXL, latent consistency) with its step policy: `out/` holds
optimum-intel's OpenVINO pipeline, `out/step_predictor/` the StepSaver predictor (an OpenVINO text classifier) and
`dynexec_config.json` the policy."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from optimum.intel import OVModelForSequenceClassification
from optimum.intel.openvino.modeling_diffusion import OV_TEXT2IMAGE_PIPELINES_MAPPING, _get_task_ov_class
from transformers import AutoConfig, AutoTokenizer

from ..configuration import StepSaverConfig, load_dynexec_config, validate_step_policy
from ..modeling_diffusion import STEP_POLICY_PIPELINES
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


def plain_pipeline_class(model: str | Path) -> type:
    """optimum-intel's text-to-image class for a pipeline folder (diffusers or OpenVINO), picked as optimum-intel's
    `OVPipelineForText2Image` picks it: by `model_index.json`'s `_class_name`.

    Raises:
        `FileNotFoundError`: when `model` is not a diffusers pipeline folder.
        `ValueError`: when the pipeline is not one with step policies (Stable Diffusion, SDXL, latent consistency).
    """
    index = Path(model) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{model} is not a diffusers pipeline folder (no model_index.json).")
    class_name = json.loads(index.read_text()).get("_class_name")
    supported = sorted(cls.auto_model_class.__name__ for cls in STEP_POLICY_PIPELINES)
    try:
        pipeline_class = _get_task_ov_class(OV_TEXT2IMAGE_PIPELINES_MAPPING, class_name)
    except ValueError:
        pipeline_class = None
    if pipeline_class not in STEP_POLICY_PIPELINES:
        raise ValueError(
            f"{model} holds a {class_name}; step policies serve the text-to-image pipelines {', '.join(supported)}."
        )
    return pipeline_class


def load_plain_pipeline(model: str | Path, quantization_config=None, **kwargs):
    """optimum-intel's pipeline for the folder's family (`plain_pipeline_class`), loaded from an OpenVINO folder or
    exported from a diffusers one.

    Raises:
        `FileNotFoundError`: when `model` is neither.
        `ValueError`: when the pipeline family has no step policies, the compression needs calibration prompts it
            lacks, or a layer's width does not fit the group size.
    """
    model = Path(model)
    pipeline_class = plain_pipeline_class(model)
    if quantization.needs_calibration(quantization_config) and quantization_config.dataset is None:
        raise ValueError(
            f"The pipeline's compression {quantization.describe(quantization_config)} calibrates on prompts: give "
            "it a dataset (calibration prompts, --train-prompts or --dataset)."
        )
    with quantization.explain_group_size_errors():
        return pipeline_class.from_pretrained(
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
    default_steps: int | None = None,
    quantile: float = 0.5,
    batching: str = "group",
    tolerance: float = 0.05,
    quantization_config=None,
    predictor_quantization_config=None,
    training: dict | None = None,
) -> Path:
    """Writes an OpenVINO text-to-image pipeline with its step policy (and predictor) into `output`.

    Args:
        model (`str` or `Path`): a Stable Diffusion, SDXL or latent-consistency pipeline folder: diffusers (exported
            here) or an optimum-intel OpenVINO one; its `model_index.json` names the family.
        output (`str` or `Path`): the dynexec folder to write.
        predictor (`str` or `Path`, *optional*): a trained step predictor folder; attached as `step_predictor/`.
        policy (`str`, *optional*): the default step policy; `"predictor"` when a predictor is given, else
            `"adaptive"`.
        default_steps (`int`, *optional*): the fixed schedule, and the adaptive policy's maximum; defaults to the
            family's own (50 for Stable Diffusion and SDXL, 4 for latent consistency).
        quantile (`float`, defaults to 0.5), batching (`str`, defaults to `"group"`), tolerance (`float`, defaults
            to 0.05): see `StepSaverConfig`.
        quantization_config: optimum-intel config for the pipeline (see `diffusion_quantization_config`).
        predictor_quantization_config: optimum-intel config for the predictor (e.g. INT8 weights).
        training (`dict`, *optional*): what training the predictor measured, recorded in the config.

    Returns:
        `Path`: `output`.

    Raises:
        `FileNotFoundError`: when `model` is not a pipeline folder.
        `ValueError`: on bad settings, a `"predictor"` policy without a predictor, or a pipeline family without step
            policies.
    """
    output = Path(output)
    pipeline_class = plain_pipeline_class(model)
    if default_steps is None:
        default_steps = STEP_POLICY_PIPELINES[pipeline_class].default_num_inference_steps()
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
        pipe = plain_pipeline_class(plain).from_pretrained(plain)
        pipe.set_progress_bar_config(disable=True)
        prompts = [p for p in train_prompts for _ in range(seeds_per_prompt)]
        seeds = list(range(len(prompts)))
        records = build_step_records(pipe, prompts, seeds, step_grid, ssim_threshold, judge=judge)
        work = output / "step_predictor_training"
        work.mkdir(parents=True, exist_ok=True)
        records.save(work / "step_records.json")
        trained = train_step_predictor(records, predictor_base, Path(tmp) / "predictor")
        shutil.copy(trained / "step_predictor_metrics.json", work)
        if export_kwargs.get("default_steps") is None:
            export_kwargs["default_steps"] = step_grid[-1]
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
