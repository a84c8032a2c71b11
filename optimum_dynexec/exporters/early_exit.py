"""Export of a fine-tuned encoder classifier to an early-exit OpenVINO folder.

The folder holds optimum-intel's own export of the full model (so the plain class loads it unchanged), one IR per
exit segment under `early_exit/`, and `dynexec_config.json` with the exit layers and the calibrated threshold.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from optimum.exporters.openvino import main_export
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..configuration import EarlyExitConfig
from ..data import TextDataset, read_text_file
from ..early_exit_engine import EarlyExitEngine
from ..policies import calibrate_threshold, select_exits, simulate_exits
from ..training.exit_heads import HEADS_CONFIG, ExitHeads, ExitHeadTrainingConfig, train_exit_heads
from . import quantization
from .encoder_segments import build_segments, get_adapter

logger = logging.getLogger(__name__)

SEGMENT_DIR = "early_exit"


def _convert_segment(segment, example: dict[str, torch.Tensor]) -> ov.Model:
    with torch.no_grad():
        model = ov.convert_model(segment, example_input=example)
    names = ["logits"] if segment.is_last else ["logits", "last_hidden_state"]
    for port, name in zip(model.outputs, names):
        port.get_tensor().set_names({name})
    return model


def convert_segments(model: torch.nn.Module, heads: ExitHeads) -> list[ov.Model]:
    """Converts the segments of `model` cut after `heads.exit_layers` to OpenVINO models with dynamic shapes."""
    ids = torch.tensor([[2, 5, 7, 3], [2, 6, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    hidden = torch.zeros(2, 4, model.config.hidden_size)
    first = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    # the first segment takes exactly the inputs of optimum-intel's graph of the model
    first = {name: first[name] for name in get_adapter(model).input_names}
    converted = []
    for segment in tqdm(build_segments(model, heads), desc="converting segments"):
        example = first if segment.is_first else {"hidden_states": hidden, "attention_mask": mask}
        converted.append(_convert_segment(segment, example))
    return converted


def join_segments(parts: list[ov.Model]) -> ov.Model:
    """One segment that runs `parts` (consecutive segments) in turn, without the exits between them: each part's
    `hidden_states` and `attention_mask` inputs are fed by the previous part's `last_hidden_state` and the first part's
    mask. The parts are cloned, not changed."""
    parts = [part.clone() for part in parts]
    params = list(parts[0].get_parameters())
    mask = next(p.output(0) for p in params if "attention_mask" in p.output(0).get_names())
    joined = parts[0]
    for part in parts[1:]:
        result = next(r for r in joined.get_results() if "last_hidden_state" in r.output(0).get_names())
        hidden = result.input_value(0)
        hidden.get_tensor().set_names(set())  # an inner tensor now: the name is the next part's output
        for param in part.get_parameters():
            source = hidden if "hidden_states" in param.output(0).get_names() else mask
            for target in list(param.output(0).get_target_inputs()):
                target.replace_source_output(source)
        joined = ov.Model(part.get_results(), params, "early_exit_segment")
    return joined


def regroup_segments(segments: list[ov.Model], exit_layers: list[int], keep: list[int]) -> list[ov.Model]:
    """The segments cut after `keep` only (a subset of `exit_layers`), joined from `segments` cut after every one of
    `exit_layers`: no second conversion from PyTorch."""
    groups, current = [], []
    for end, segment in zip([*exit_layers, None], segments):
        current.append(segment)
        if end is None or end in keep:
            groups.append(current)
            current = []
    return [group[0] if len(group) == 1 else join_segments(group) for group in groups]


def _split_holdout(data: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    n_hold = max(1, int(round(fraction * len(data)))) if len(data) > 1 else 0

    def pick(idx):
        return TextDataset(
            [data.texts[i] for i in idx], None if data.labels is None else [data.labels[i] for i in idx]
        )

    return pick(order[n_hold:]), pick(order[:n_hold])


def _batched_feeds(engine, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        yield engine.first_feeds(
            enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64), enc.get("token_type_ids")
        )


def _segment_costs(engine, feeds: list[dict], full_request) -> tuple[np.ndarray, float]:
    """Measures the cost model of `policies.select_exits` at batch 1: per-segment compute and per-call overhead.

    Each segment is timed on its own inputs; the overhead of a call is what the segments cost beyond the full model,
    spread over the extra calls.
    """
    per_segment = np.zeros(len(engine.requests))
    inputs = [engine.run_all(f)[1] for f in feeds]
    # the full graph takes only its own inputs (optimum-intel's RoBERTa export has no token_type_ids)
    names = {name for port in full_request.model_inputs for name in port.get_names()}
    full_feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
    for _ in range(2):  # the first pass warms up
        per_segment[:] = 0.0
        for segment_feeds in inputs:
            for k, request in enumerate(engine.requests):
                start = time.perf_counter()
                request.infer(segment_feeds[k])
                per_segment[k] += time.perf_counter() - start
        full = 0.0
        for f in full_feeds:
            start = time.perf_counter()
            full_request.infer(f)
            full += time.perf_counter() - start
    overhead = max(0.0, (per_segment.sum() - full) / max(1, len(per_segment) - 1))
    return np.maximum(per_segment - overhead, 1e-9) / len(feeds), overhead / len(feeds)


def export_early_exit(
    model_name_or_path: str | Path,
    output: str | Path,
    exit_layers: list[int] | str | None = "auto",
    train_file: str | Path | None = None,
    train_data: TextDataset | None = None,
    target_agreement: float = 0.99,
    criterion: str = "confidence",
    quantization_config=None,
    training_config: ExitHeadTrainingConfig | None = None,
    calibration_fraction: float = 0.1,
    max_train_samples: int | None = None,
    max_length: int = 128,
    ov_config: dict | None = None,
    seed: int = 0,
) -> EarlyExitConfig:
    """Exports a fine-tuned classifier with exit heads to an OpenVINO early-exit folder.

    Args:
        model_name_or_path (`str` or `Path`): a local transformers folder of a fine-tuned sequence classifier. If it
            holds `exit_heads.json` (from `ExitHeads.save_pretrained`), those heads are used instead of training.
        output (`str` or `Path`): the folder to write.
        exit_layers (`list[int]` or `"auto"`, defaults to `"auto"`): 1-based layers to exit after. `"auto"` trains a
            head after every layer but the last, then keeps the subset with the lowest expected batch-1 cost at the
            target agreement (every exit costs a segment call); `None` keeps them all.
        train_file (`str` or `Path`, *optional*): `.txt` or `.csv` text to train the heads on and calibrate with.
        train_data (`TextDataset`, *optional*): the same, in memory (instead of `train_file`).
        target_agreement (`float`, defaults to 0.99): the calibrated threshold is the loosest whose predictions
            agree this often with the full model on held-out text.
        criterion (`str`, defaults to `"confidence"`): exit score, `"confidence"` or `"entropy"`.
        quantization_config (optimum-intel quantization config, *optional*): NNCF compression applied to the full
            model and every segment (see `quantization.quantization_config_from_flags`); activations and data-aware
            weight algorithms are calibrated on the training text (at most `num_samples` texts, default 300) as each
            part sees it.
        training_config (`ExitHeadTrainingConfig`, *optional*): head training hyper-parameters.
        calibration_fraction (`float`, defaults to 0.1): share of the text held out for calibration.
        max_train_samples (`int`, *optional*): cap on the training text used.
        max_length (`int`, defaults to 128): tokenizer truncation.
        ov_config (`dict`, *optional*): OpenVINO config used while calibrating (default: the device's precision).
        seed (`int`, defaults to 0): seeds head training and the hold-out split.

    Returns:
        `EarlyExitConfig`: what was written to `dynexec_config.json`.

    Raises:
        `ValueError`: when there is neither training text nor saved heads, or settings are out of range.
        `FileNotFoundError`: when the model folder or the text file does not exist.
    """
    # Phase 1, check the request before any heavy work.
    model_path, output = Path(model_name_or_path), Path(output)
    if not (model_path / "config.json").is_file():
        raise FileNotFoundError(f"{model_path} is not a transformers model folder (no config.json).")
    if not 0.0 < target_agreement <= 1.0:
        raise ValueError(f"target_agreement must be in (0, 1], got {target_agreement}.")
    if isinstance(exit_layers, str) and exit_layers != "auto":
        raise ValueError(f"exit_layers must be a list of layers, 'auto' or None, got {exit_layers!r}.")
    quant_record = quantization.describe(quantization_config)
    if train_file is not None:
        train_data = read_text_file(train_file)
    has_saved_heads = (model_path / HEADS_CONFIG).is_file()
    if train_data is None and not has_saved_heads:
        raise ValueError(
            f"{model_path} has no trained exit heads: pass training text (--train-file, a .txt or .csv file) so they "
            "can be trained by self-distillation."
        )
    if train_data is None and quantization.needs_calibration(quantization_config):
        raise ValueError(
            f"The compression {quant_record} calibrates on text (activations, or a data-driven weight algorithm): "
            "pass --train-file."
        )
    if isinstance(getattr(quantization_config, "dataset", None), str):
        logger.warning(
            "Early exit calibrates NNCF on the training text as each segment sees it; the dataset %r of the "
            "quantization config is not used.",
            quantization_config.dataset,
        )
    auto = exit_layers == "auto"
    candidates = None if auto else exit_layers

    # Phase 2, exit heads: trained by self-distillation, or loaded.
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=torch.float32).eval()
    get_adapter(model)  # an unsupported family fails here, before any training
    num_layers = model.config.num_hidden_layers
    calibration = train_part = None
    if train_data is not None:
        train_part, calibration = _split_holdout(train_data.subset(max_train_samples), calibration_fraction, seed)
    if has_saved_heads:
        heads = ExitHeads.from_pretrained(model_path)
        if candidates is not None and list(candidates) != heads.exit_layers:
            raise ValueError(f"{model_path} holds heads for layers {heads.exit_layers}, not {list(candidates)}.")
    else:
        training_config = training_config or ExitHeadTrainingConfig(seed=seed, max_length=max_length)
        heads = train_exit_heads(model, tokenizer, train_part, candidates, training_config)

    # Phase 3, the full model by optimum-intel itself (so the plain class loads this folder), and the segments.
    output.mkdir(parents=True, exist_ok=True)
    main_export(str(model_path), output, task="text-classification", library_name="transformers")
    full_path = output / "openvino_model.xml"
    core = ov.Core()
    config = EarlyExitConfig(
        num_hidden_layers=num_layers,
        exit_layers=heads.exit_layers,
        criterion=criterion,
        target_agreement=target_agreement,
        quantization=quant_record,
    )
    segments = convert_segments(model, heads)
    engine = EarlyExitEngine(segments, config)
    engine.compile(core, "CPU", ov_config)
    have_text = calibration is not None and len(calibration) > 0
    if auto and have_text and len(heads.exit_layers) > 1:
        # Phase 4, keep the exits that pay for their segment call.
        layer_logits = np.concatenate(
            [engine.run_all(f)[0] for f in _batched_feeds(engine, tokenizer, calibration.texts, max_length)], axis=1
        )
        singles = list(_batched_feeds(engine, tokenizer, calibration.texts[:64], max_length, batch_size=1))
        costs, overhead = _segment_costs(
            engine, singles, core.compile_model(full_path, "CPU", ov_config or {}).create_infer_request()
        )
        chosen, _, stats = select_exits(layer_logits, costs, overhead, target_agreement, criterion)
        keep = [heads.exit_layers[i] for i in chosen]
        logger.info(
            "exit layers %s chosen among %s: expected batch-1 cost %.3f ms vs %.3f ms for the full model",
            keep,
            heads.exit_layers,
            1e3 * stats["expected_cost"],
            1e3 * stats["expected_cost_full"],
        )
        segments = regroup_segments(segments, heads.exit_layers, keep)
        config.exit_layers = keep
        engine = EarlyExitEngine(segments, config)
        engine.compile(core, "CPU", ov_config)
    config.segments = [f"{SEGMENT_DIR}/segment_{k}.xml" for k in range(len(segments))]

    # Phase 5, NNCF on every part, activations calibrated on the training text as each segment sees it.
    if quantization_config is not None:
        full_calib, seg_calib = None, [None] * len(segments)
        if train_data is not None and quantization.is_data_aware(quantization_config):
            n = min(len(train_data), quantization_config.num_samples or quantization.DEFAULT_CALIBRATION_SAMPLES)
            texts = (train_part.texts + calibration.texts)[:n]
            full_calib, seg_calib = [], [[] for _ in segments]
            for feeds in _batched_feeds(engine, tokenizer, texts, max_length, batch_size=1):
                full_calib.append(feeds)
                for k, f in enumerate(engine.run_all(feeds)[1]):
                    seg_calib[k].append(f)
        full = quantization.compress(core.read_model(full_path), quantization_config, full_calib)
        ov.save_model(full, output / "tmp_full.xml", compress_to_fp16=False)
        del full
        for ext in (".xml", ".bin"):
            (output / f"tmp_full{ext}").replace(output / f"openvino_model{ext}")
        segments = [
            quantization.compress(m, quantization_config, c)
            for m, c in tqdm(list(zip(segments, seg_calib)), desc="quantizing segments")
        ]
        engine = EarlyExitEngine(segments, config)
        engine.compile(core, "CPU", ov_config)

    # Phase 6, the threshold, calibrated on held-out text with the parts as they will run.
    if have_text:
        layer_logits = np.concatenate(
            [engine.run_all(f)[0] for f in _batched_feeds(engine, tokenizer, calibration.texts, max_length)], axis=1
        )
        threshold, stats = calibrate_threshold(layer_logits, target_agreement, criterion)
        exit_index = simulate_exits(layer_logits, threshold, criterion)[0]
        stats["mean_exit_layer"] = float(np.asarray([*config.exit_layers, num_layers])[exit_index].mean())
        config.threshold, config.calibration = threshold, stats
        logger.info(
            "calibrated exit threshold %.6f: agreement %.4f, mean exit layer %.2f on %d held-out texts",
            threshold,
            stats["agreement"],
            stats["mean_exit_layer"],
            stats["num_samples"],
        )
    else:
        logger.warning("No calibration text: keeping the default exit threshold %.2f.", config.threshold)
    engine.save(output)
    tokenizer.save_pretrained(output)
    return config
