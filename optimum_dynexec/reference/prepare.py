"""Offline, cached preparation of the real reference models and data (`make models`).

    python -m optimum_dynexec.reference.prepare [steps, or groups all | llm | gemma] [--preset full|ci] [--jobs 2]

writes to the cache (see `optimum_dynexec.utils.cache_dir`), every folder named by the settings that made it
(`budgets.Budget`, the active preset's unless overridden):

- `models/SmolLM2-135M-Instruct/`, `exports/SmolLM2-135M-Instruct-ov-fp32/`: the target LM and its export;
- `data/sentiment-seed0/{train,validation,test}.csv`: the binary sentiment tweets, de-duplicated and split;
- `models/minilm-sentiment-<settings>/`: MiniLM-L6 fine-tuned on the train split (`metrics.json`: its accuracy),
  and its early-exit exports under `exports/`;
- `models/SmolLM2-draft-gen-<settings>/`, `models/SmolLM2-eagle-<settings>/`: the trained drafters, and exports;
- the Fashion-MNIST text-to-image pipeline, its judge, step predictor and StepSaver exports (`reference.diffusion`);
- only when named (`OPTIONAL_STEPS`, e.g. `prepare gemma`; not in `all`): Gemma-3-270M converted and exported under
  transformers 5.0.0 in a side environment (`reference.gemma`, step `gemma-base`), and its EAGLE head
  (`models/gemma-3-270m-eagle-<settings>/`, step `gemma-eagle`).

Every step is skipped when its output exists, and training resumes from its last checkpoint. How long each step
took is appended to `<cache>/prepare_timings.json`, which `make demo` reads for its estimates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from optimum_dynexec.exporters.early_exit import export_early_exit
from optimum_dynexec.exporters.quantization import quantization_config_from_flags
from optimum_dynexec.exporters.speculative import export_causal_lm, export_eagle_for
from optimum_dynexec.training.classifier import FineTuneConfig, fine_tune_classifier, predict_classifier
from optimum_dynexec.training.draft import DraftConfig, train_draft
from optimum_dynexec.training.eagle import WEIGHTS_FILE, EagleConfig, train_eagle
from optimum_dynexec.utils import building, cache_dir, setup_logging

from .budgets import PRESET_ENV, PRESETS, Budget, active_budget, preset_name, settings_key
from .gemma import gemma_path, is_gemma_prepared, prepare_gemma
from .sentiment import SENTIMENT_LABELS, load_sentiment_splits
from .sources import SMOLLM2_NAME, minilm_dir, smollm2_dir

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_SAMPLES = PRESETS["full"].classifier_samples
DEFAULT_EPOCHS = PRESETS["full"].classifier_epochs
TIMINGS_FILE = "prepare_timings.json"


def sentiment_classifier_dir(max_train_samples: int | None = None, epochs: float | None = None) -> Path:
    """Where `prepare_sentiment_classifier` puts the model for these settings (default: the active budget's; it may
    not exist yet)."""
    budget = active_budget(classifier_samples=max_train_samples, classifier_epochs=epochs)
    return cache_dir("models") / f"minilm-sentiment-n{budget.classifier_samples}-e{budget.classifier_epochs:g}"


def is_prepared(path: Path) -> bool:
    """Whether a prepared model folder is complete."""
    return (path / "metrics.json").exists()


def prepare_sentiment_classifier(
    max_train_samples: int | None = None, epochs: float | None = None, seed: int = 0
) -> Path:
    """Fine-tunes MiniLM-L6 on the binary sentiment tweets (cached) and returns the HF model folder.

    Args:
        max_train_samples (`int`, *optional*): how many training tweets to fine-tune on (default: the budget's).
        epochs (`float`, *optional*): passes over them (default: the budget's).
        seed (`int`, defaults to 0): seeds the split and the training.

    Returns:
        `Path`: a plain transformers folder (`config.json`, `model.safetensors`, tokenizer files, `metrics.json`).
    """
    budget = active_budget(classifier_samples=max_train_samples, classifier_epochs=epochs)
    max_train_samples, epochs = budget.classifier_samples, budget.classifier_epochs
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
    texts = active_budget().exit_head_texts
    name = f"{classifier.name}-early-exit-{quantization}-agree{target_agreement:g}-exits-auto"
    name += f"-t{texts}" if texts else ""  # the whole train split keeps the name it always had
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
            max_train_samples=active_budget().exit_head_texts,
            seed=seed,
        )
    return out


SMOLLM2_DRAFT = "SmolLM2-draft-gen"  # the draft distillation runs in the models cache (then `-<settings>`)
SMOLLM2_EAGLE = "SmolLM2-eagle"  # the EAGLE head training runs in the models cache (then `-<settings>`)
GEMMA_EAGLE = "gemma-3-270m-eagle"  # the Gemma EAGLE head training runs in the models cache (then `-<settings>`)
DRAFT_RUN, EAGLE_RUN = SMOLLM2_DRAFT, SMOLLM2_EAGLE  # deprecated names of the run prefixes


def draft_config(budget: Budget | None = None) -> DraftConfig:
    """The SmolLM2 draft's training settings under `budget` (default: the active one)."""
    budget = budget or active_budget()
    return DraftConfig(max_minutes=budget.draft_minutes, continuation_prompts=budget.draft_continuations)


def eagle_config(budget: Budget | None = None) -> EagleConfig:
    """The SmolLM2 EAGLE head's training settings under `budget` (default: the active one)."""
    budget = budget or active_budget()
    return _eagle_recipe(budget.eagle_minutes, budget.eagle_windows)


def _eagle_recipe(minutes: float, windows: int) -> EagleConfig:
    """The reference EAGLE recipe within `minutes` on `windows` training windows: 4/5 book text, 1/5 continuations."""
    text = windows * 4 // 5
    return EagleConfig(max_minutes=minutes, text_windows=text, continuation_windows=windows - text)


def _run_dir(prefix: str, config) -> Path:
    """A training run's folder, keyed by its budget and a hash of all its settings."""
    settings = asdict(config)
    return cache_dir("models") / f"{prefix}-m{settings['max_minutes']:g}-{settings_key(settings)}"


def draft_run_dir(budget: Budget | None = None) -> Path:
    """Where the SmolLM2 draft of `budget` is (or will be) trained."""
    return _run_dir(SMOLLM2_DRAFT, draft_config(budget))


def eagle_run_dir(budget: Budget | None = None) -> Path:
    """Where the SmolLM2 EAGLE head of `budget` is (or will be) trained."""
    return _run_dir(SMOLLM2_EAGLE, eagle_config(budget))


def gemma_eagle_config(budget: Budget | None = None) -> EagleConfig:
    """The Gemma-3-270M EAGLE head's training settings under `budget` (default: the active one): SmolLM2's recipe,
    the reduced vocabulary (8,192 of 262,144 tokens) included."""
    budget = budget or active_budget()
    return _eagle_recipe(budget.gemma_eagle_minutes, budget.gemma_eagle_windows)


def gemma_eagle_run_dir(budget: Budget | None = None) -> Path:
    """Where the Gemma-3-270M EAGLE head of `budget` is (or will be) trained."""
    return _run_dir(GEMMA_EAGLE, gemma_eagle_config(budget))


def gemma_eagle_dir(budget: Budget | None = None) -> Path | None:
    """The trained EAGLE head of Gemma-3-270M (of `budget`) exported to OpenVINO, or `None` when it is not trained
    yet."""
    return _eagle_export(gemma_eagle_run_dir(budget), gemma_path)


def prepare_gemma_eagle(budget: Budget | None = None) -> Path:
    """Trains the Gemma-3-270M EAGLE head of `budget` on Austen's novels (without the benchmark's passages), once."""
    _train_eagle_once("Gemma", gemma_eagle_run_dir(budget), gemma_eagle_config(budget), gemma_path, prepare_gemma)
    return gemma_eagle_dir(budget)


def _causal_lm_export(source: Path, name: str, weight_format: str) -> Path:
    """`source` (a transformers causal LM folder) exported by optimum-intel with `weight_format` weights, cached."""
    out = _export_path(name, weight_format)
    if not (out / "openvino_model.xml").exists():
        with building(out) as tmp:
            # SmolLM2's hidden width (576) is not a multiple of INT4's group size 128: optimum-intel's
            # `--group-size-fallback adjust` picks a group size per layer instead of refusing the export
            options = {"group_size_fallback": "adjust"} if weight_format == "int4" else {}
            export_causal_lm(source, tmp, quantization_config_from_flags(weight_format=weight_format, **options))
    return out


def _export_path(name: str, weight_format: str) -> Path:
    return cache_dir("exports") / f"{name}-ov-{weight_format}"


def smollm2_openvino_path(weight_format: str = "fp32") -> Path:
    """Where `smollm2_openvino_dir` puts SmolLM2's export (it may not exist yet)."""
    return _export_path(SMOLLM2_NAME, weight_format)


def smollm2_openvino_dir(weight_format: str = "fp32") -> Path:
    """SmolLM2 exported by optimum-intel (stateful), cached; `weight_format` is `fp32`, `int8` or `int4`."""
    return _causal_lm_export(smollm2_dir(), SMOLLM2_NAME, weight_format)


def smollm2_draft_dir(weight_format: str = "fp32", budget: Budget | None = None) -> Path | None:
    """The distilled SmolLM2 draft of `budget` exported to OpenVINO (`fp32`, `int8` or `int4` weights), or `None`
    when it has not been trained yet."""
    hf = draft_run_dir(budget)
    if not (hf / "config.json").exists():
        return None
    return _causal_lm_export(hf, hf.name, weight_format)


def smollm2_eagle_dir(budget: Budget | None = None) -> Path | None:
    """The trained EAGLE head of SmolLM2 (of `budget`) exported to OpenVINO, or `None` when it is not trained yet."""
    return _eagle_export(eagle_run_dir(budget), smollm2_dir)


def _eagle_export(run: Path, target_dir: Callable[[], Path]) -> Path | None:
    """The EAGLE head trained in `run` exported to OpenVINO (once, with the target folder `target_dir()`), or `None`
    when it is not trained yet."""
    if not (run / WEIGHTS_FILE).exists():
        return None
    out = cache_dir("exports") / f"{run.name}-ov-fp32"
    if not (out / "eagle_config.json").exists():
        with building(out) as tmp:
            export_eagle_for(target_dir(), run, tmp)
    return out


def prepare_draft(budget: Budget | None = None) -> Path:
    """Distils the SmolLM2 draft of `budget` on Austen's novels (without the benchmark's passages), once."""
    from .austen import training_texts

    out = draft_run_dir(budget)
    if not (out / "config.json").exists():
        config = draft_config(budget)
        logger.info("distilling the SmolLM2 draft (%g minutes on 2 cores, once) into %s", config.max_minutes, out)
        train_draft(out, config, target_dir=smollm2_dir(), texts=training_texts())
    return smollm2_draft_dir(budget=budget)


def prepare_eagle(budget: Budget | None = None) -> Path:
    """Trains the SmolLM2 EAGLE head of `budget` on Austen's novels (without the benchmark's passages), once."""
    _train_eagle_once(
        "SmolLM2", eagle_run_dir(budget), eagle_config(budget), smollm2_dir, lambda: smollm2_openvino_dir("fp32")
    )
    return smollm2_eagle_dir(budget)


def _train_eagle_once(
    name: str, run: Path, config: EagleConfig, hf_dir: Callable[[], Path], openvino_dir: Callable[[], Path]
) -> None:
    """Trains the EAGLE head of target `name` (its transformers folder `hf_dir()`, its export `openvino_dir()`) in
    `run` with `config`, unless it is trained already."""
    from .austen import training_texts

    if not (run / WEIGHTS_FILE).exists():
        logger.info(
            "training the %s EAGLE head (%g minutes after its data, once) into %s", name, config.max_minutes, run
        )
        train_eagle(run, hf_dir(), openvino_dir(), config, training_texts())


# --------------------------------------------------------------------------------------------------- steps and CLI


def _prepare_early_exit() -> None:
    path = prepare_sentiment_classifier()
    metrics = json.loads((path / "metrics.json").read_text())
    logger.info("sentiment classifier: %s (test accuracy %.4f)", path, metrics["test_accuracy"])
    for quantization in ("fp32", "int8"):
        logger.info(
            "early-exit export (%s): %s", quantization, prepare_early_exit_export(quantization, classifier=path)
        )


def _prepare_diffusion() -> None:
    from .diffusion import prepare_diffusion

    prepare_diffusion()


# name -> (what it builds, how to build it, whether it is built already); `make demo` runs techniques in this order
STEPS: dict[str, tuple[str, Callable[[], object], Callable[[], bool]]] = {
    "llm-base": (
        "SmolLM2 converted and exported (prompt lookup needs nothing more)",
        lambda: smollm2_openvino_dir("fp32"),
        lambda: (smollm2_openvino_path("fp32") / "openvino_model.xml").exists(),
    ),
    "early-exit": (
        "MiniLM sentiment classifier, exit heads, fp32 and INT8 exports",
        _prepare_early_exit,
        lambda: all((early_exit_export_dir(q) / "dynexec_config.json").exists() for q in ("fp32", "int8")),
    ),
    "draft": ("SmolLM2 draft model", lambda: prepare_draft(), lambda: (draft_run_dir() / "config.json").exists()),
    "eagle": ("SmolLM2 EAGLE head", lambda: prepare_eagle(), lambda: (eagle_run_dir() / WEIGHTS_FILE).exists()),
    "diffusion": (
        "Fashion-MNIST text-to-image pipeline, judge, step predictor, StepSaver exports",
        _prepare_diffusion,
        lambda: _diffusion_ready(),
    ),
    "gemma-base": (
        "Gemma-3-270M converted and exported under transformers 5.0.0 in a side environment",
        prepare_gemma,
        is_gemma_prepared,
    ),
    "gemma-eagle": (
        "Gemma-3-270M EAGLE head",
        lambda: prepare_gemma_eagle(),
        lambda: (gemma_eagle_run_dir() / WEIGHTS_FILE).exists(),
    ),
}
# steps built only when named (`make models STEPS=gemma`), not by `all` (so not by `make models` or CI): Gemma's
# conversion and export run in a side environment with transformers 5.0.0 (`reference.gemma`)
OPTIONAL_STEPS = ["gemma-base", "gemma-eagle"]
GROUPS = {
    "llm": ["llm-base", "draft", "eagle"],
    "gemma": OPTIONAL_STEPS,
    "all": [name for name in STEPS if name not in OPTIONAL_STEPS],
}


def _diffusion_ready() -> bool:
    from .diffusion import stepsaver_ready

    return stepsaver_ready()


def is_step_ready(name: str) -> bool:
    """Whether step `name` of `STEPS` has its outputs in the cache (under the active preset)."""
    return STEPS[name][2]()


def recorded_timings() -> dict[str, float]:
    """Seconds each step took when it last ran for real under the active preset (from `prepare_timings.json`)."""
    path = cache_dir() / TIMINGS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    return data.get(preset_name(), {})


def _record_timing(name: str, seconds: float) -> None:
    path = cache_dir() / TIMINGS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(preset_name(), {})[name] = round(seconds, 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@contextmanager
def _timed(name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    logger.info("step %s done in %.1f min", name, seconds / 60)
    _record_timing(name, seconds)


def run_steps(names: list[str]) -> None:
    """Builds the steps `names` in order, skipping what is cached, timing what runs."""
    for name in names:
        if is_step_ready(name):
            logger.info("step %s: cached", name)
            continue
        logger.info("step %s: %s", name, STEPS[name][0])
        with _timed(name):
            STEPS[name][1]()


def expand_steps(what: list[str]) -> list[str]:
    """Step names from step and group names (`all`, `llm`), in `STEPS` order, without repeats.

    Raises:
        `ValueError`: for an unknown name.
    """
    names = []
    for w in what:
        if w not in STEPS and w not in GROUPS:
            raise ValueError(f"Unknown step {w!r}; choose from {sorted(STEPS) + sorted(GROUPS)}.")
        names += GROUPS.get(w, [w])
    return [n for n in STEPS if n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the real models and data, offline and cached.")
    parser.add_argument("what", nargs="*", default=["all"], help=f"steps or groups: {list(STEPS) + list(GROUPS)}")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help=f"training budget (default: ${PRESET_ENV} or `full`; `ci` trains the same recipes for less)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="2: build the diffusion models in a second process beside the rest (one thread each)",
    )
    args = parser.parse_args(argv)
    if args.preset:
        os.environ[PRESET_ENV] = args.preset
    setup_logging()
    names = expand_steps(args.what)
    logger.info("preset %s: %s", preset_name(), active_budget())
    if args.jobs > 1 and "diffusion" in names and len(names) > 1 and not is_step_ready("diffusion"):
        names.remove("diffusion")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = cache_dir() / "prepare_diffusion.log"
        logger.info("diffusion models in a second process (log: %s)", log)
        with open(log, "w") as f:
            child = subprocess.Popen(
                [sys.executable, "-m", "optimum_dynexec.reference.prepare", "diffusion"], env=env, stdout=f, stderr=f
            )
        torch.set_num_threads(1)
        try:
            run_steps(names)
        except BaseException:  # fail at once: the diffusion models are of no use to a preparation that failed
            logger.error("a step failed: stopping the diffusion process (its finished models stay cached)")
            child.terminate()
            child.wait()
            raise
        code = child.wait()
        if code:
            raise SystemExit(f"preparing the diffusion models failed (exit {code}); see {log}")
        return 0
    run_steps(names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
