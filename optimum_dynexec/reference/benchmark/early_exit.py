"""Early-exit benchmark on the real fine-tuned MiniLM and the sentiment test split.

Every contender runs in one process on the same pre-tokenized inputs, warm, interleaved round by round against
optimum-intel's plain `OVModelForSequenceClassification` of the same folder (same precision): latency p50/p90 at
batch 1, throughput at batch 32, accuracy, agreement with the full model, mean exit layer, over a threshold sweep,
in FP32 IR and INT8 (NNCF post-training quantization) IR. Writes JSON and a PNG, prints a table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from optimum_dynexec.reference.benchmark.timing import save_results, time_calls

logger = logging.getLogger(__name__)


@dataclass
class EarlyExitBenchConfig:
    """What `configs/early_exit.json` holds (see that file)."""

    thresholds: list[float] = field(default_factory=lambda: [0.8, 0.9, 0.95, 0.99])
    latency_samples: int = 400
    batch_size: int = 32
    rounds: int = 3
    quantization: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    target_agreement: float = 0.99
    max_train_samples: int = 12000
    epochs: float = 1.0
    test_samples: int | None = None

    def __post_init__(self):
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be a non-empty list of numbers in [0, 1], got {self.thresholds}.")
        if self.latency_samples <= 0 or self.batch_size <= 0 or self.rounds <= 0:
            raise ValueError("latency_samples, batch_size and rounds must be positive.")

    @classmethod
    def from_file(cls, path: str | Path) -> "EarlyExitBenchConfig":
        data = json.loads(Path(path).read_text())
        return cls(
            **data.get("bench", {}),
            quantization=data["export"]["quantization"],
            target_agreement=data["export"]["target_agreement"],
            max_train_samples=data["model"]["max_train_samples"],
            epochs=data["model"]["epochs"],
        )


def _predict(model, batches) -> tuple[np.ndarray, np.ndarray | None]:
    outs = [model(**b) for b in batches]
    logits = np.concatenate([np.asarray(o.logits) for o in outs])
    exits = [getattr(o, "exit_layers", None) for o in outs]
    return logits.argmax(-1), (None if exits[0] is None else np.concatenate(exits))


def _throughput(model, batches, n_texts: int) -> float:
    start = time.perf_counter()
    for b in batches:
        model(**b)
    return n_texts / (time.perf_counter() - start)


def run_benchmark(config: EarlyExitBenchConfig, output_dir: str | Path = "benchmarks") -> dict:
    """Runs the sweep and writes `early_exit.json` and `early_exit.png` into `output_dir`; returns the results."""
    from optimum.intel import OVModelForSequenceClassification as PlainOVModel
    from transformers import AutoTokenizer

    from optimum_dynexec import OVModelForSequenceClassification
    from optimum_dynexec.reference.prepare import prepare_early_exit_export, prepare_sentiment_classifier
    from optimum_dynexec.reference.sentiment import load_sentiment_splits

    classifier = prepare_sentiment_classifier(config.max_train_samples, config.epochs)
    folders = {q: prepare_early_exit_export(q, config.target_agreement, classifier) for q in config.quantization}
    test = load_sentiment_splits()["test"].subset(config.test_samples)
    labels = np.asarray(test.labels)
    tokenizer = AutoTokenizer.from_pretrained(folders[config.quantization[0]])
    tok = dict(truncation=True, max_length=128, return_tensors="np")
    singles = [dict(tokenizer([t], **tok)) for t in test.texts[: config.latency_samples]]
    batches = [
        dict(tokenizer(test.texts[i : i + config.batch_size], padding=True, **tok))
        for i in range(0, len(test), config.batch_size)
    ]

    plain = {q: PlainOVModel.from_pretrained(f) for q, f in folders.items()}
    ours = {q: OVModelForSequenceClassification.from_pretrained(f) for q, f in folders.items()}
    calibrated = {q: m.exit_threshold for q, m in ours.items()}
    # contenders: (precision, setting name, threshold or None for "exits disabled")
    settings = [(q, "plain", None) for q in folders]
    for q in folders:
        settings += [(q, "exits disabled", None), (q, "calibrated", calibrated[q])]
        settings += [(q, f"t={t:g}", t) for t in config.thresholds]

    def model_for(q, name, threshold):
        if name == "plain":
            return plain[q]
        m = ours[q]
        m.exits_enabled = threshold is not None
        if threshold is not None:
            m.exit_threshold = threshold
        return m

    rows = []
    reference = {q: _predict(plain[q], batches)[0] for q in folders}
    for q, name, threshold in tqdm(settings, desc="quality"):
        if name == "plain":  # already predicted as the reference
            preds, exits = reference[q], None
        else:
            preds, exits = _predict(model_for(q, name, threshold), batches)
        rows.append(
            {
                "precision": q,
                "setting": name,
                "threshold": threshold,
                "accuracy": float((preds == labels).mean()),
                "agreement_full_same_precision": float((preds == reference[q]).mean()),
                "agreement_full_fp32": float((preds == reference[config.quantization[0]]).mean()),
                "mean_exit_layer": float(plain[q].config.num_hidden_layers if exits is None else exits.mean()),
            }
        )

    # Every contender runs once per round, in turn, so slow drifts of the machine favour none; medians over rounds.
    timings: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for _ in tqdm(range(config.rounds), desc="timing rounds"):
        for setting in settings:
            model = model_for(*setting)
            latencies = time_calls(model, singles)
            throughput = _throughput(model, batches, len(test))
            timings.setdefault(setting[:2], []).append(
                (latencies.mean(), np.percentile(latencies, 50), np.percentile(latencies, 90), throughput)
            )
    for row in rows:
        mean, p50, p90, tput = np.median(np.array(timings[(row["precision"], row["setting"])]), axis=0)
        row.update(
            {
                "batch1_mean_ms": 1e3 * mean,
                "batch1_p50_ms": 1e3 * p50,
                "batch1_p90_ms": 1e3 * p90,
                "batch32_texts_per_s": tput,
            }
        )
    for row in rows:
        same = next(r for r in rows if r["precision"] == row["precision"] and r["setting"] == "plain")
        fp32 = next(r for r in rows if r["precision"] == config.quantization[0] and r["setting"] == "plain")
        # batch-1 speedup from the mean latency (texts per second at batch 1); the p50 ratio flatters early exit
        row["speedup_batch1"] = same["batch1_mean_ms"] / row["batch1_mean_ms"]
        row["speedup_batch1_p50"] = same["batch1_p50_ms"] / row["batch1_p50_ms"]
        row["speedup_batch32"] = row["batch32_texts_per_s"] / same["batch32_texts_per_s"]
        row["speedup_batch1_vs_fp32_plain"] = fp32["batch1_mean_ms"] / row["batch1_mean_ms"]
        row["speedup_batch32_vs_fp32_plain"] = row["batch32_texts_per_s"] / fp32["batch32_texts_per_s"]
    results = {
        "model": str(classifier),
        "test_samples": len(test),
        "latency_samples": len(singles),
        "batch_size": config.batch_size,
        "rounds": config.rounds,
        "calibrated_thresholds": calibrated,
        "rows": rows,
    }
    plot_pareto(rows, save_results(results, output_dir, "early_exit"))
    return results


def plot_pareto(rows: list[dict], path: Path) -> None:
    """Speedup against accuracy, batch 1 and batch 32, one series per precision (vs the FP32 plain model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in (
        (axes[0], "speedup_batch1_vs_fp32_plain", "batch 1 (mean latency)"),
        (axes[1], "speedup_batch32_vs_fp32_plain", "batch 32 (throughput)"),
    ):
        for q, marker in zip(sorted({r["precision"] for r in rows}), "os^"):
            sweep = sorted(
                (r for r in rows if r["precision"] == q and r["setting"].startswith("t=")),
                key=lambda r: r["threshold"],
            )
            (line,) = ax.plot(
                [r[key] for r in sweep], [100 * r["accuracy"] for r in sweep], marker=marker, label=f"{q} sweep"
            )
            for r in rows:
                if r["precision"] == q and r["setting"] in ("plain", "calibrated"):
                    ax.scatter(
                        r[key],
                        100 * r["accuracy"],
                        s=90,
                        marker="*" if r["setting"] == "calibrated" else "D",
                        label=f"{q} {r['setting']}",
                        color=line.get_color(),
                        edgecolor="k",
                        zorder=3,
                    )
        ax.set_title(title)
        ax.set_xlabel("speedup vs optimum-intel FP32 full model")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Early exit, MiniLM-L6 sentiment classifier, OpenVINO CPU (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    head = (
        f"{'precision':<9} {'setting':<15} {'acc%':>6} {'agree%':>7} {'exit':>5} {'b1 mean':>8} {'b1 p50':>8} "
        f"{'b1 p90':>8} "
        f"{'x b1':>6} {'b32 t/s':>8} {'x b32':>6} {'x b1/fp32':>9} {'x b32/fp32':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(
            f"{r['precision']:<9} {r['setting']:<15} {100 * r['accuracy']:6.2f} "
            f"{100 * r['agreement_full_same_precision']:7.2f} {r['mean_exit_layer']:5.2f} "
            f"{r['batch1_mean_ms']:6.2f}ms "
            f"{r['batch1_p50_ms']:6.2f}ms "
            f"{r['batch1_p90_ms']:6.2f}ms {r['speedup_batch1']:6.2f} {r['batch32_texts_per_s']:8.0f} "
            f"{r['speedup_batch32']:6.2f} {r['speedup_batch1_vs_fp32_plain']:9.2f} "
            f"{r['speedup_batch32_vs_fp32_plain']:10.2f}"
        )
    return "\n".join(lines)
