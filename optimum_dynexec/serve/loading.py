"""Which technique a model folder is, and loading it with this package's classes (never with remote code)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from ..configuration import EarlyExitConfig, SpeculativeConfig, StepSaverConfig, load_dynexec_config
from ..exporters.diffusion import plain_pipeline_class
from ..modeling_decoder import OVModelForCausalLM
from ..modeling_diffusion import STEP_POLICY_PIPELINES
from ..modeling_early_exit import OVModelForSequenceClassification

logger = logging.getLogger(__name__)

KINDS = ("llm", "classifier", "images")
_BY_CONFIG = {SpeculativeConfig: "llm", EarlyExitConfig: "classifier", StepSaverConfig: "images"}


@dataclass
class LoadedModel:
    """A served model: its kind (`"llm"`, `"classifier"` or `"images"`), the runtime object, its tokenizer (`None`
    for a pipeline, which holds its own) and whether the folder has dynamic parts."""

    kind: str
    model: Any
    tokenizer: Any
    dynamic: bool
    folder: Path


def model_kind(folder: str | Path) -> str:
    """The endpoint family of a folder: its `dynexec_config.json` technique, else `model_index.json` (a Stable
    Diffusion, SDXL or latent-consistency pipeline) or `config.json`'s architectures (`*ForCausalLM`,
    `*ForSequenceClassification`).

    Raises:
        `ValueError`: when the folder is missing or holds nothing this server can serve.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give an exported model folder.")
    config = load_dynexec_config(folder)
    if config is not None:
        return _BY_CONFIG[type(config)]
    index = folder / "model_index.json"
    if index.is_file():
        plain_pipeline_class(folder)  # a pipeline family with step policies, or a ValueError naming the supported
        return "images"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no dynexec_config.json, model_index.json or config.json: not a model folder.")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    for architecture in architectures:
        if architecture.endswith("ForCausalLM"):
            return "llm"
        if architecture.endswith("ForSequenceClassification"):
            return "classifier"
    raise ValueError(
        f"{folder} is a {architectures or 'model without architectures'}; this server serves causal LMs, sequence "
        "classifiers and text-to-image pipelines (Stable Diffusion, SDXL, latent consistency)."
    )


def load_model(
    folder: str | Path, device: str = "CPU", ov_config: dict | None = None, exit_threshold: float | None = None
) -> LoadedModel:
    """Loads a folder with the class of its kind (`model_kind`), `trust_remote_code=False` throughout.

    Args:
        folder (`str` or `Path`): an OpenVINO model folder, dynexec or plain optimum-intel.
        device (`str`, defaults to `"CPU"`): the OpenVINO device.
        ov_config (`dict`, *optional*): OpenVINO properties, e.g. `{"INFERENCE_PRECISION_HINT": "f32"}`.
        exit_threshold (`float`, *optional*): an early-exit classifier's threshold instead of the calibrated one.

    Raises:
        `ValueError`: see `model_kind`; when the folder has no tokenizer, or an exit threshold is given for a model
            without exit heads.
    """
    folder = Path(folder)
    kind = model_kind(folder)
    if exit_threshold is not None and kind != "classifier":
        raise ValueError(f"An exit threshold was given, but {folder} holds a {kind} model, not a classifier.")
    options = {"device": device, "ov_config": ov_config, "trust_remote_code": False}
    if kind == "images":
        pipe = STEP_POLICY_PIPELINES[plain_pipeline_class(folder)].from_pretrained(folder, **options)
        pipe.set_progress_bar_config(disable=True)
        return LoadedModel(kind, pipe, None, pipe.step_config is not None, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{folder} has no usable tokenizer ({error}): save the tokenizer beside the model."
        ) from error
    if kind == "llm":
        model = OVModelForCausalLM.from_pretrained(folder, **options)
        return LoadedModel(kind, model, tokenizer, model.speculative_config is not None, folder)
    model = OVModelForSequenceClassification.from_pretrained(folder, exit_threshold=exit_threshold, **options)
    return LoadedModel(kind, model, tokenizer, model.has_early_exit, folder)
