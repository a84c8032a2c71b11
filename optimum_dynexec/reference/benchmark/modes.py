"""Speculative decoding on the call shapes people make, on SmolLM2-135M with real Austen prompts.

Each mode runs optimum-intel's plain `OVModelForCausalLM.generate` and this package's class with each drafter in
the same mode, on the same prompts, interleaved, warm, in one process:

- `sampling`: temperature and top_p, several seeds. Speculative sampling keeps the target's distribution (tested in
  `tests/test_speculative_modes.py`), so the texts differ from plain sampling's; the quality column is the mean
  log-probability per new token under the plain model (the same law gives the same mean, up to noise).
- `streaming`: greedy with a `TextIteratorStreamer` read by another thread, against the same call without one; the
  text must be identical to plain greedy's.
  Its rows also give the time to the first streamed new token, against plain decoding's.
- `batch`: greedy on a left-padded batch of `batch_size` different passages, against optimum-intel's plain batch
  `generate()`; tokens/s over the whole batch after one untimed round per contender; the output must be identical.
- `repeat`: the time to the first token of a prompt the model has just answered (a regenerated answer; a conversation
  going on is the same case), with this package's prompt-cache reuse and GenAI's prefix caching on, against a fresh
  prompt and against optimum-intel's plain class, which computes every prompt afresh.

The other modes compute every prompt afresh in every contender (`reuse_prompt_cache` off, GenAI's prefix caching
off), since each prompt runs several times.

With `genai`, OpenVINO GenAI's `LLMPipeline` (plain, and its prompt lookup) runs every mode on the same IR and
prompts, its speed-up also against optimum-intel's plain class (GenAI has no EAGLE-2 head of ours to run).

Writes JSON and a PNG under `benchmarks/`, prints a table.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from optimum_dynexec.reference.benchmark.speculative import PRECISIONS, GenAIContender, austen_prompts
from optimum_dynexec.reference.benchmark.timing import save_results

MODES = ("sampling", "streaming", "batch", "repeat")  # streaming rows carry the time to first token


@dataclass
class ModesBenchConfig:
    """What `configs/speculative_modes.json` holds under `bench`."""

    modes: list[str] = field(default_factory=lambda: list(MODES))
    max_new_tokens: int = 128
    num_prompts: int = 3
    prompt_words: int = 150
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    temperature: float = 0.7
    top_p: float = 0.9
    prompt_lookup_num_tokens: int = 5
    eagle_num_tokens: int = 3
    # the EAGLE head's draft length in sampling calls (default: `eagle_num_tokens`): sampled tokens are accepted
    # less often than greedy ones, so a shorter draft pays there (see docs/speculative_decoding.md)
    eagle_sampling_num_tokens: int | None = None
    batch_size: int = 4
    batch_rounds: int = 2  # timed rounds per batch contender (after one untimed round); a round times ~2-3 s
    precision: str = "default"
    eagle: bool = True  # rows with the trained EAGLE head (+ lookup) when `make models` has trained it
    genai: bool = True  # rows with OpenVINO GenAI's LLMPipeline (plain and prompt lookup) on the same IR
    name: str = "speculative_modes"

    def __post_init__(self):
        if set(self.modes) - set(MODES):
            raise ValueError(f"Unknown modes {sorted(set(self.modes) - set(MODES))}; choose among {MODES}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose among {sorted(PRECISIONS)}.")
        if self.max_new_tokens <= 0 or self.num_prompts <= 0 or self.batch_rounds <= 0:
            raise ValueError("max_new_tokens, num_prompts and batch_rounds must be positive.")
        if self.batch_size <= 1 or not self.seeds:
            raise ValueError("batch_size must be above 1 and seeds non-empty.")
        if self.eagle_num_tokens <= 0 or (
            self.eagle_sampling_num_tokens is not None and self.eagle_sampling_num_tokens <= 0
        ):
            raise ValueError("The EAGLE draft lengths must be positive.")
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0.0:
            raise ValueError(
                f"top_p must be in (0, 1] and temperature positive, got {self.top_p}, {self.temperature}."
            )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModesBenchConfig":
        return cls(**json.loads(Path(path).read_text()).get("bench", {}))


def _timed(model, ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return out, time.perf_counter() - start


def _streamed(model, tokenizer, ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, float, float, str]:
    """Generates with a `TextIteratorStreamer` read by another thread (GenAI: its streamer callback): output,
    seconds, seconds to the first new text, and the streamed text."""
    from transformers import TextIteratorStreamer

    pieces, first = [], []
    if isinstance(model, GenAIContender):  # GenAI calls its streamer with each new piece of text

        def collect(piece: str) -> None:
            if piece and not first:
                first.append(time.perf_counter())
            pieces.append(piece)

        start = time.perf_counter()
        out = model.generate(input_ids=ids, streamer=collect, **kwargs)
        seconds = time.perf_counter() - start
        return out, seconds, (first[0] - start) if first else seconds, "".join(pieces)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)

    def read():
        for piece in streamer:
            if piece and not first:
                first.append(time.perf_counter())
            pieces.append(piece)

    reader = threading.Thread(target=read)
    reader.start()
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)
    seconds = time.perf_counter() - start
    reader.join()
    return out, seconds, (first[0] - start) if first else seconds, "".join(pieces)


def _mean_logprob(plain, ids: torch.Tensor, out: torch.Tensor) -> float:
    """Mean log-probability of the new tokens of `out` under the plain model (its raw, unprocessed law)."""
    logits = torch.as_tensor(np.asarray(plain(input_ids=out, attention_mask=torch.ones_like(out)).logits[0]))
    logp = torch.log_softmax(logits[ids.shape[1] - 1 : -1].double(), -1)
    return float(logp.gather(-1, out[0, ids.shape[1] :, None]).mean())


def run_benchmark(config: ModesBenchConfig, output_dir: str | Path = "benchmarks") -> dict:
    """Runs every mode of `config`; returns (and writes) the results."""
    from optimum.intel import OVModelForCausalLM as PlainOVModel
    from transformers import AutoTokenizer

    from optimum_dynexec import OVModelForCausalLM
    from optimum_dynexec.eagle import OVEagleDraft
    from optimum_dynexec.reference.prepare import smollm2_eagle_dir, smollm2_openvino_dir

    folder = smollm2_openvino_dir("fp32")
    ov_config = PRECISIONS[config.precision]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    plain = PlainOVModel.from_pretrained(folder, ov_config=ov_config)
    ours = OVModelForCausalLM.from_pretrained(folder, ov_config=ov_config)
    ours.reuse_prompt_cache = False  # every prompt afresh, as optimum-intel's plain class (the `repeat` mode: on)
    drafters = {
        f"prompt lookup k={config.prompt_lookup_num_tokens}": {
            "prompt_lookup_num_tokens": config.prompt_lookup_num_tokens
        }
    }
    eagle_dir = smollm2_eagle_dir() if config.eagle else None
    if eagle_dir is not None:
        head = OVEagleDraft.from_pretrained(eagle_dir)
        drafters[f"EAGLE k={config.eagle_num_tokens} + lookup"] = {
            "assistant_model": head,
            "num_assistant_tokens": config.eagle_num_tokens,
            "num_assistant_tokens_schedule": "constant",
            "assistant_confidence_threshold": 0.0,
            "prompt_lookup_num_tokens": config.prompt_lookup_num_tokens,
        }
    prompts = austen_prompts(config.num_prompts, config.prompt_words)
    encoded = {task: [tokenizer(p, return_tensors="pt").input_ids for p in texts] for task, texts in prompts.items()}
    greedy = {"max_new_tokens": config.max_new_tokens, "do_sample": False}
    for ids in encoded["continue"][:1]:  # warm-up: compile every request once
        plain.generate(input_ids=ids, max_new_tokens=8)
        for kwargs in drafters.values():
            ours.generate(input_ids=ids, max_new_tokens=8, **kwargs)
    genai = {}
    if config.genai:
        k = config.prompt_lookup_num_tokens
        genai = {
            "GenAI plain": GenAIContender(folder, ov_config),
            f"GenAI prompt lookup k={k}": GenAIContender(folder, ov_config, prompt_lookup=k),
        }
    rows = []
    if "sampling" in config.modes:
        sampling = {**greedy, "do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
        sampling_drafters = _sampling_drafters(drafters, config)
        for task, inputs in encoded.items():
            times = {"plain": [], **{name: [] for name in sampling_drafters}, **{name: [] for name in genai}}
            quality = {name: [] for name in times}
            tokens = dict.fromkeys(times, 0)
            calls = dict.fromkeys([*sampling_drafters, *genai], 0)
            for ids in tqdm(inputs, desc=f"sampling, {task}"):
                for seed in config.seeds:
                    for name in times:
                        torch.manual_seed(seed)
                        if name in genai:
                            before = genai[name].num_forward_calls
                            out, seconds = _timed(genai[name], ids, **sampling, seed=seed)
                            calls[name] += genai[name].num_forward_calls - before
                        else:
                            model, kwargs = (plain, {}) if name == "plain" else (ours, sampling_drafters[name])
                            out, seconds = _timed(model, ids, **sampling, **kwargs)
                            if name != "plain":
                                calls[name] += ours.last_speculative_stats.target_calls + 1
                        times[name].append(seconds)
                        tokens[name] += out.shape[1] - ids.shape[1]
                        quality[name].append(_mean_logprob(plain, ids, out))
            base = tokens["plain"] / sum(times["plain"])
            for name in times:
                speed = tokens[name] / sum(times[name])
                rows.append(
                    {
                        "mode": "sampling",
                        "task": task,
                        "method": name,
                        "tokens_per_s": speed,
                        "speedup": speed / base,
                        "mean_logprob": float(np.mean(quality[name])),
                        "tokens_per_target_call": tokens[name] / calls[name] if calls.get(name) else 1.0,
                    }
                )
    if "streaming" in config.modes:
        for task, inputs in encoded.items():
            for name, kwargs in {**drafters, **{n: {} for n in genai if n != "GenAI plain"}}.items():
                model = genai.get(name, ours)
                plain_s, stream_s, bare_s, ttft_ours, ttft_plain, identical = [], [], [], [], [], True
                for ids in tqdm(inputs, desc=f"streaming, {task}, {name}"):
                    reference, seconds = _timed(plain, ids, **greedy)
                    plain_s.append(seconds)
                    _, _, first_plain, _ = _streamed(plain, tokenizer, ids, **greedy)
                    ttft_plain.append(first_plain)
                    out, seconds = _timed(model, ids, **greedy, **kwargs)
                    bare_s.append(seconds)
                    streamed, seconds, first, text = _streamed(model, tokenizer, ids, **greedy, **kwargs)
                    stream_s.append(seconds)
                    ttft_ours.append(first)
                    identical &= torch.equal(out, reference) and torch.equal(streamed, reference)
                    identical &= text == tokenizer.decode(reference[0, ids.shape[1] :], skip_special_tokens=True)
                rows.append(
                    {
                        "mode": "streaming",
                        "task": task,
                        "method": name,
                        "speedup": sum(plain_s) / sum(stream_s),
                        "streamer_cost": sum(stream_s) / sum(bare_s) - 1.0,
                        "ttft_ratio": float(np.sum(ttft_ours) / np.sum(ttft_plain)),
                        "ttft_ms": 1e3 * float(np.mean(ttft_ours)),
                        "ttft_plain_ms": 1e3 * float(np.mean(ttft_plain)),
                        "identical": bool(identical),
                    }
                )
    if "batch" in config.modes:
        rows += _batch_rows(config, plain, ours, tokenizer, drafters, genai)
    if "repeat" in config.modes:
        rows += _repeat_rows(config, plain, ours, encoded, drafters, folder, ov_config)
    results = {
        "config": config.__dict__,
        "target": str(folder),
        "eagle_head": str(eagle_dir) if eagle_dir is not None else None,
        "rows": rows,
    }
    png = save_results(results, output_dir, config.name)
    plot(rows, png)
    return results


def _sampling_drafters(drafters: dict, config: ModesBenchConfig) -> dict:
    """`drafters` with the EAGLE head's draft length set to `eagle_sampling_num_tokens` (named accordingly)."""
    k = config.eagle_sampling_num_tokens
    if k is None or k == config.eagle_num_tokens:
        return drafters
    renamed = {}
    for name, kwargs in drafters.items():
        if "assistant_model" in kwargs:
            name, kwargs = (
                name.replace(f"k={config.eagle_num_tokens}", f"k={k}"),
                {**kwargs, "num_assistant_tokens": k},
            )
        renamed[name] = kwargs
    return renamed


def _batch_rows(config: ModesBenchConfig, plain, ours, tokenizer, drafters: dict, genai: dict) -> list[dict]:
    """Greedy on a left-padded batch of different passages: ours with each drafter (and GenAI's pipelines) against
    optimum-intel's plain batch decoding, interleaved."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    contenders = {name: (ours, kwargs) for name, kwargs in drafters.items()}
    contenders.update({name: (contender, {}) for name, contender in genai.items()})
    for task, texts in austen_prompts(config.batch_size, config.prompt_words).items():
        encoded = [tokenizer(t).input_ids for t in texts[: config.batch_size]]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        settings = {"max_new_tokens": config.max_new_tokens, "do_sample": False, "eos_token_id": None}
        settings["pad_token_id"] = pad
        for name, (model, kwargs) in contenders.items():
            plain_s, ours_s, identical, calls = [], [], True, 0
            # round 0 warms up: the first batch call of each shape compiles kernels (~1 s in all for the batch)
            for round_ in tqdm(range(1 + config.batch_rounds), desc=f"batch {config.batch_size}, {task}, {name}"):
                start = time.perf_counter()
                reference = plain.generate(input_ids=ids, attention_mask=mask, **settings)
                plain_seconds = time.perf_counter() - start
                before = getattr(model, "num_forward_calls", 0)
                start = time.perf_counter()
                out = model.generate(input_ids=ids, attention_mask=mask, **settings, **kwargs)
                ours_seconds = time.perf_counter() - start
                if round_:
                    plain_s.append(plain_seconds)
                    ours_s.append(ours_seconds)
                    identical &= torch.equal(out, reference)
                    calls += model.num_forward_calls - before
            new_tokens = config.batch_rounds * config.batch_size * config.max_new_tokens
            rows.append(
                {
                    "mode": f"batch {config.batch_size}",
                    "task": task,
                    "method": name,
                    "tokens_per_s": new_tokens / sum(ours_s),
                    "plain_tokens_per_s": new_tokens / sum(plain_s),
                    "speedup": sum(plain_s) / sum(ours_s),
                    "identical": bool(identical),
                    "target_calls_per_row_token": calls / (new_tokens / config.batch_size),
                }
            )
    return rows


def _repeat_rows(config: ModesBenchConfig, plain, ours, encoded: dict, drafters: dict, folder, ov_config) -> list:
    """Time to the first token (a one-token call) of a prompt just answered, with prompt-cache reuse, against the
    same prompt fresh and against optimum-intel's plain class."""
    lookup = next(iter(drafters.values()))
    contenders = {next(iter(drafters)): (ours, lookup)}
    if config.genai:
        k = config.prompt_lookup_num_tokens
        contenders[f"GenAI prompt lookup k={k}"] = (
            GenAIContender(folder, ov_config, prompt_lookup=k, prefix_caching=True),
            {},
        )
    rows = []
    ours.reuse_prompt_cache = True
    try:
        for task, inputs in encoded.items():
            for name, (model, kwargs) in contenders.items():
                fresh, again, plain_s = [], [], []
                for ids, other in zip(inputs, inputs[1:] + inputs[:1]):
                    model.generate(input_ids=other, max_new_tokens=1, **kwargs)  # the cache holds another prompt
                    fresh.append(_timed(model, ids, max_new_tokens=1, **kwargs)[1])
                    again.append(_timed(model, ids, max_new_tokens=1, **kwargs)[1])
                    plain_s.append(_timed(plain, ids, max_new_tokens=1)[1])
                rows.append(
                    {
                        "mode": "repeat",
                        "task": task,
                        "method": name,
                        "speedup": sum(plain_s) / sum(again),
                        "ttft_ms": 1e3 * float(np.mean(again)),
                        "ttft_fresh_ms": 1e3 * float(np.mean(fresh)),
                        "ttft_plain_ms": 1e3 * float(np.mean(plain_s)),
                    }
                )
    finally:
        ours.reuse_prompt_cache = False
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Speed-up per drafter, one panel per mode (each on its own scale), bars grouped by task; GenAI hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["method"] != "plain"]
    modes = list(dict.fromkeys(r["mode"] for r in shown))
    families = list(dict.fromkeys(_family(r["method"]) for r in shown))  # one colour per drafter in every panel
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        these = [r for r in shown if r["mode"] == mode]
        tasks = list(dict.fromkeys(r["task"] for r in these))
        methods = list(dict.fromkeys(r["method"] for r in these))
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            for i, task in enumerate(tasks):
                row = next((r for r in these if r["task"] == task and r["method"] == method), None)
                if row is None:
                    continue
                x = i + (j - (len(methods) - 1) / 2) * width
                bar = ax.bar(
                    x,
                    row["speedup"],
                    width,
                    color=f"C{families.index(_family(method))}",
                    label=method if i == 0 else None,
                )[0]
                bar.set_hatch("//" if method.startswith("GenAI") else "")
                ax.text(x, row["speedup"], f"{row['speedup']:.2f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_title(mode)
        ax.legend(fontsize=7, loc="lower center")
    axes[0][0].set_ylabel("speed vs optimum-intel's plain class, same call")
    fig.suptitle("SmolLM2-135M: speculative decoding by call shape (GenAI hatched)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _family(method: str) -> str:
    """A row's drafter without its draft length (`"EAGLE k=2 + lookup"` -> `"EAGLE + lookup"`)."""
    return re.sub(r" k=\d+", "", method)


def format_table(results: dict) -> str:
    lines = ["mode       task      method                      speed-up  quality / streaming"]
    for r in results["rows"]:
        if r["mode"] == "sampling":
            extra = f"mean log-prob {r['mean_logprob']:.3f}, {r['tokens_per_target_call']:.2f} tokens/call"
        elif r["mode"] == "repeat":
            extra = (
                f"TTFT {r['ttft_ms']:.0f} ms repeated, {r['ttft_fresh_ms']:.0f} ms fresh "
                f"(plain {r['ttft_plain_ms']:.0f} ms)"
            )
        elif r["mode"].startswith("batch"):
            extra = (
                f"{r['tokens_per_s']:.0f} tokens/s (plain {r['plain_tokens_per_s']:.0f}), identical {r['identical']}"
            )
        else:
            extra = (
                f"streamer cost {100 * r['streamer_cost']:+.1f}%, TTFT {r['ttft_ms']:.0f} ms "
                f"(plain {r['ttft_plain_ms']:.0f} ms), identical {r['identical']}"
            )
        lines.append(f"{r['mode']:<10} {r['task']:<9} {r['method']:<27} {r['speedup']:>6.2f}x  {extra}")
    return "\n".join(lines)
