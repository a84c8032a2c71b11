"""Export of a causal LM with its draft attached: `out/` holds the target, `out/draft/` the draft, both stateful
OpenVINO IR (the target exported by optimum-intel; the draft too, or an EAGLE head converted by
`exporters.eagle`), and `dynexec_config.json` the lookahead policy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from optimum.intel import OVModelForCausalLM
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..configuration import SpeculativeConfig
from ..eagle import OVEagleDraft, is_eagle_folder
from ..training.eagle import METRICS_FILE, WEIGHTS_FILE, load_eagle
from . import quantization
from .eagle import export_eagle_draft

logger = logging.getLogger(__name__)

DRAFT_DIR = "draft"


def _check_causal_lm(path: Path, role: str):
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"The {role} {path} is not a transformers model folder (no config.json).")
    config = AutoConfig.from_pretrained(path)
    architectures = set(config.architectures or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    is_causal = (
        bool(architectures & causal) if architectures else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )
    if not is_causal or getattr(config, "is_encoder_decoder", False):
        kind = ", ".join(sorted(architectures)) or config.model_type
        raise ValueError(f"The {role} {path} is a {kind} model, not a causal LM.")
    return config


def check_same_tokenizer(target: Path, draft: Path) -> None:
    """Raises `ValueError` unless the draft's tokenizer maps every token to the same id as the target's."""
    t_vocab = AutoTokenizer.from_pretrained(target).get_vocab()
    d_vocab = AutoTokenizer.from_pretrained(draft).get_vocab()
    if t_vocab != d_vocab:
        differ = len(set(t_vocab.items()) ^ set(d_vocab.items()))
        raise ValueError(
            f"The draft's tokenizer ({len(d_vocab)} tokens) does not match the target's ({len(t_vocab)} tokens; "
            f"{differ} entries differ): a draft must share the target's tokenizer."
        )


def is_eagle_draft(path: Path) -> bool:
    """Whether `path` holds an EAGLE head: a training run (`eagle.pt`) or an exported head (`eagle_config.json`)."""
    return (path / WEIGHTS_FILE).is_file() or is_eagle_folder(path)


def draft_type_of(draft_model: str | Path) -> str:
    """`"eagle"` for an EAGLE head (see `is_eagle_draft`), else `"model"` (a draft causal LM)."""
    return "eagle" if is_eagle_draft(Path(draft_model)) else "model"


def export_eagle_for(target: Path, draft: Path, output: Path, quantization_config=None) -> None:
    """Writes the EAGLE head in `draft` (a training run or an exported head) to `output`, checked against `target`.

    Raises:
        `ValueError`: when the head was trained for a model of another hidden size or vocabulary.
    """
    config = AutoConfig.from_pretrained(target)
    if is_eagle_folder(draft):
        head = OVEagleDraft.from_pretrained(draft, compile=False)
        found = (head.eagle_config.hidden_size, head.eagle_config.target_vocab_size)
        if found != (config.hidden_size, config.vocab_size):
            raise ValueError(
                f"The EAGLE head {draft} reads hidden size {found[0]} and vocabulary {found[1]}; the target has "
                f"{config.hidden_size} and {config.vocab_size}: it was trained for another model."
            )
        if quantization_config is not None:
            head.model = quantization.compress(head.model, quantization_config)
        head.save_pretrained(output)
        return
    try:
        module = load_eagle(draft, target)
    except RuntimeError as error:
        raise ValueError(f"The EAGLE head {draft} was trained for another model than {target}: {error}") from error
    metrics_file = draft / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    export_eagle_draft(module, output, metrics=metrics, quantization_config=quantization_config)


def export_causal_lm(path: Path, output: Path, quantization_config=None) -> None:
    """A stateful optimum-intel export of one causal LM with its tokenizer, compressed by optimum-intel itself.

    Raises:
        `ValueError`: when a compressed layer's width does not fit the group size (see `--group-size-fallback`).
    """
    with quantization.explain_group_size_errors():
        model = OVModelForCausalLM.from_pretrained(
            path, export=True, compile=False, quantization_config=quantization_config
        )
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(path).save_pretrained(output)


def _check_calibration(quantization_config, role: str, eagle: bool) -> None:
    if quantization_config is None or not quantization.needs_calibration(quantization_config):
        return
    record = quantization.describe(quantization_config)
    if eagle:
        raise ValueError(
            f"The EAGLE draft head is compressed without calibration data, and {record} needs some: give it "
            "data-free weight compression (--draft-weight-format, without --scale-estimation, --gptq, "
            "--lora-correction or an activation-based --sensitivity-metric)."
        )
    if getattr(quantization_config, "dataset", None) is None:
        raise ValueError(
            f"The {role}'s compression {record} calibrates on data: give --dataset (one of optimum-intel's, e.g. "
            "auto or wikitext2, or a .txt file of texts)."
        )


def export_speculative(
    model_name_or_path: str | Path,
    output: str | Path,
    draft_model: str | Path | None = None,
    config: SpeculativeConfig | None = None,
    quantization_config=None,
    draft_quantization_config=None,
) -> SpeculativeConfig:
    """Exports a target causal LM and its draft to one OpenVINO folder that speculates in every `generate()`.

    Args:
        model_name_or_path (`str` or `Path`): the target, a local transformers folder.
        output (`str` or `Path`): the folder to write (the draft goes to `output/draft`).
        draft_model (`str` or `Path`, *optional*): the draft, a local transformers folder sharing the target's
            tokenizer, or an EAGLE head for the target (a `training.eagle` run or an exported head). Without it the
            folder drafts by prompt lookup (`config.prompt_lookup_num_tokens`).
        config (`SpeculativeConfig`, *optional*): the lookahead policy; by default the drafter's own
            (`SpeculativeConfig.for_drafter`, as `optimum-cli export dynexec` without lookahead flags): a draft
            model's or an EAGLE head's `DRAFTER_DEFAULTS`, or prompt lookup of `PROMPT_LOOKUP_NUM_TOKENS` tokens
            without a draft.
        quantization_config, draft_quantization_config (optimum-intel quantization config, *optional*): NNCF
            compression of the target and of the draft, chosen independently (see
            `quantization.quantization_config_from_flags`). Causal LMs are compressed by optimum-intel itself, which
            calibrates on the config's `dataset` when it quantizes activations or runs a data-driven algorithm; an
            EAGLE head takes data-free weight compression.

    Raises:
        `FileNotFoundError`: when a model folder does not exist.
        `ValueError`: when a folder is not a causal LM, the tokenizers differ, the config is inconsistent, or a
            compression needs calibration data it does not have.
    """
    target, output = Path(model_name_or_path), Path(output)
    _check_causal_lm(target, "target")
    if config is None:
        config = SpeculativeConfig.for_drafter(draft_type_of(draft_model) if draft_model is not None else None)
    if draft_model is not None:
        if config.draft is None:
            raise ValueError("A draft model was given but the config drafts by prompt lookup.")
        draft = Path(draft_model)
        if not draft.is_dir():
            raise FileNotFoundError(f"The draft {draft} does not exist.")
        if is_eagle_draft(draft):
            config.draft_type = "eagle"
        else:
            config.draft_type = "model"
            _check_causal_lm(draft, "draft")
            check_same_tokenizer(target, draft)
    elif config.draft is not None:
        raise ValueError("The config names a draft folder but no --draft-model was given.")
    _check_calibration(quantization_config, "target", eagle=False)
    if draft_model is not None:
        _check_calibration(draft_quantization_config, "draft", eagle=config.draft_type == "eagle")
    config.quantization = {
        "target": quantization.describe(quantization_config),
        "draft": quantization.describe(draft_quantization_config) if draft_model else None,
    }
    output.mkdir(parents=True, exist_ok=True)
    export_causal_lm(target, output, quantization_config)
    if draft_model is not None and config.draft_type == "eagle":
        export_eagle_for(target, draft, output / config.draft, draft_quantization_config)
    elif draft_model is not None:
        export_causal_lm(draft, output / config.draft, draft_quantization_config)
    config.save(output)
    logger.info("exported %s with %s", output, f"draft {config.draft}/" if config.draft else "prompt lookup")
    return config
