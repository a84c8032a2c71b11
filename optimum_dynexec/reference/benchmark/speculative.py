"""Speculative-decoding benchmark on SmolLM2-135M (or Gemma-3-270M, `target`) with real Austen prompts.

Greedy, warm, same process: optimum-intel's plain `OVModelForCausalLM` against this package's class at the same
precision and weights, with prompt lookup, and (when `make models` has trained them) the distilled draft model and the
EAGLE head, and OpenVINO GenAI's pipelines on the same IR. The drafters run at `draft_precision` / `eagle_precision`:
the target verifies every drafted token, so that never changes the output. Two tasks: continuing a passage, and
copying one (where prompt lookup shines). Reports tokens/s, the speed ratio, whether the text is identical to plain
greedy (and the share of new tokens before the first difference), and the tokens per target call. Writes JSON and a
PNG, prints a table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from optimum_dynexec.exporters.quantization import WEIGHT_FORMATS
from optimum_dynexec.reference.benchmark.timing import save_results

logger = logging.getLogger(__name__)

SMOLLM2, GEMMA = "SmolLM2-135M-Instruct", "gemma-3-270m"
TARGETS = {SMOLLM2: "SmolLM2-135M", GEMMA: "Gemma-3-270M"}  # the targets a config can name, and their plot titles
EXACT_F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
PRECISIONS = {"default": {}, "f32": EXACT_F32}


@dataclass
class SpeculativeBenchConfig:
    """What `configs/speculative.json` holds under `bench`."""

    # the target: SmolLM2 (`make models`) or Gemma-3-270M (`make models STEPS=gemma`; fp32 weights, EAGLE head only)
    target: str = SMOLLM2
    max_new_tokens: int = 128
    num_prompts: int = 3
    prompt_words: int = 150
    rounds: int = 2
    prompt_lookup_num_tokens: list[int] = field(default_factory=lambda: [3, 5])
    num_assistant_tokens: list[int] = field(default_factory=lambda: [3, 5])
    # EAGLE head (when trained): starting lookahead per row, its schedule and draft-confidence stop
    eagle_num_tokens: list[int] = field(default_factory=lambda: [3])
    eagle_schedule: str = "constant"
    eagle_confidence: float = 0.0
    # the EAGLE head's OpenVINO precision; its drafts are verified by the target, so it never changes the output
    eagle_precision: str = "default"
    # rows combining prompt lookup (this many tokens, where the text repeats) with the EAGLE head elsewhere
    eagle_with_lookup: int | None = 5
    # a row with an untrained (random) EAGLE head: what the back-off costs when the draft is useless
    useless_draft: bool = True
    # a row with the longest prompt lookup verified through the target's stateful request instead of its paged form
    stateful_row: bool = False
    # a row with the longest prompt lookup whose calls without a proposal are padded verifications (one request)
    one_request_row: bool = False
    precisions: list[str] = field(default_factory=lambda: ["default", "f32"])
    # NNCF weight formats of the target; compressed targets run at `compressed_precisions`, against optimum-intel's
    # plain class on the same compressed IR
    weight_formats: list[str] = field(default_factory=lambda: ["fp32"])
    # precisions of the compressed targets: "f32" (no bf16, no dynamic quantization) gives every stack plain
    # greedy's text, so speeds compare on the same text
    compressed_precisions: list[str] = field(default_factory=lambda: ["default"])
    # NNCF weight format of the distilled draft model (None: the target's)
    draft_weight_format: str | None = None
    # the draft model's OpenVINO precision (ours and GenAI's); the target verifies its drafts: the output is the same
    draft_precision: str = "default"
    # draft-model rows: one per starting lookahead (`num_assistant_tokens`) and draft-confidence stop
    draft_confidence: list[float] = field(default_factory=lambda: [0.0])
    genai: bool = True
    # rows of the trained drafters (when `make models` has trained them); prompt lookup alone needs none
    draft_model: bool = True
    eagle: bool = True
    name: str = "speculative"  # results go to benchmarks/<name>.json and .png

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"Unknown target {self.target!r}; choose among {sorted(TARGETS)}.")
        if self.target == GEMMA and (self.draft_model or self.useless_draft or self.weight_formats != ["fp32"]):
            raise ValueError(
                "Gemma-3-270M has an EAGLE head but no draft model or useless head, and fp32 weights only: set "
                'draft_model and useless_draft to false and weight_formats to ["fp32"].'
            )
        unknown = set(self.precisions + self.compressed_precisions) - set(PRECISIONS)
        if unknown:
            raise ValueError(f"Unknown precisions {sorted(unknown)}; choose among {sorted(PRECISIONS)}.")
        if self.draft_weight_format not in (None, *WEIGHT_FORMATS):
            raise ValueError(
                f"Unknown draft_weight_format {self.draft_weight_format!r}; choose among {WEIGHT_FORMATS}."
            )
        if set(self.weight_formats) - set(WEIGHT_FORMATS):
            raise ValueError(f"Unknown weight_formats {self.weight_formats}; choose among {WEIGHT_FORMATS}.")
        if self.draft_precision not in PRECISIONS:
            raise ValueError(f"Unknown draft_precision {self.draft_precision!r}; choose among {sorted(PRECISIONS)}.")
        if any(not 0.0 <= c < 1.0 for c in self.draft_confidence):
            raise ValueError(f"draft_confidence values must be in [0, 1), got {self.draft_confidence}.")
        if self.eagle_precision not in PRECISIONS:
            raise ValueError(f"Unknown eagle_precision {self.eagle_precision!r}; choose among {sorted(PRECISIONS)}.")
        if self.eagle_schedule not in ("constant", "heuristic", "heuristic_transient"):
            raise ValueError(f"Unknown eagle_schedule {self.eagle_schedule!r}.")
        if not 0.0 <= self.eagle_confidence < 1.0:
            raise ValueError(f"eagle_confidence must be in [0, 1), got {self.eagle_confidence}.")
        if any(k <= 0 for k in self.eagle_num_tokens) or (self.eagle_with_lookup or 1) <= 0:
            raise ValueError("eagle_num_tokens and eagle_with_lookup must be positive.")
        if self.max_new_tokens <= 0 or self.num_prompts <= 0 or self.rounds <= 0:
            raise ValueError("max_new_tokens, num_prompts and rounds must be positive.")

    @classmethod
    def from_file(cls, path: str | Path) -> "SpeculativeBenchConfig":
        return cls(**json.loads(Path(path).read_text()).get("bench", {}))


def austen_prompts(num_prompts: int, words: int) -> dict[str, list[str]]:
    """Passages from the middle of each Austen novel: to continue, and to copy."""
    from optimum_dynexec.reference.austen import load_austen_books

    books = load_austen_books()
    passages = []
    for title in sorted(books)[:num_prompts]:
        text = " ".join(books[title].split())
        start = len(text) // 2
        start = text.index(". ", start) + 2
        passages.append(" ".join(text[start:].split()[:words]))
    return {
        "continue": passages,
        "copy": [
            f"Copy the following passage word for word.\n\nPassage: {p}\n\nCopy: {' '.join(p.split()[:8])}"
            for p in passages
        ],
    }


def ensure_genai_tokenizer(folder: Path) -> None:
    """Writes the OpenVINO tokenizer and detokenizer that OpenVINO GenAI reads, once."""
    if (folder / "openvino_tokenizer.xml").exists():
        return
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(folder), with_detokenizer=True)
    ov.save_model(tokenizer, folder / "openvino_tokenizer.xml")
    ov.save_model(detokenizer, folder / "openvino_detokenizer.xml")


class GenAIContender:
    """OpenVINO GenAI's `LLMPipeline` on the same IR, driven with token ids, for a side-by-side run; without
    `prefix_caching` every call computes its prompt afresh, as optimum-intel's plain class does."""

    def __init__(
        self,
        folder: Path,
        ov_config: dict,
        draft: Path | None = None,
        prompt_lookup: int | None = None,
        draft_config: dict | None = None,
        prefix_caching: bool = False,
    ):
        import openvino_genai as og

        ensure_genai_tokenizer(folder)
        kwargs = dict(ov_config)
        if draft is not None:
            ensure_genai_tokenizer(draft)
            kwargs["draft_model"] = og.draft_model(
                str(draft), "CPU", **(ov_config if draft_config is None else draft_config)
            )
        if prompt_lookup is not None:
            kwargs["prompt_lookup"] = True
        if not prefix_caching:  # else a repeated prompt skips its prefill (the stateful pipeline's reuse, too)
            scheduler = og.SchedulerConfig()
            scheduler.enable_prefix_caching = False
            kwargs["scheduler_config"] = scheduler
        self.pipe = og.LLMPipeline(str(folder), "CPU", **kwargs)
        self.draft, self.prompt_lookup = draft, prompt_lookup
        self.og = og
        self.num_forward_calls = 0  # target calls (prefill included), from GenAI's per-step token times

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        streamer=None,
        **_,
    ) -> torch.Tensor:
        """Generates from token ids (a left-padded batch with its `attention_mask`); `streamer` is called with each
        new piece of text. Returns the inputs followed by each row's new tokens (right-padded with 0)."""
        config = self.pipe.get_generation_config()
        config.max_new_tokens = max_new_tokens
        config.ignore_eos = True
        config.do_sample = do_sample
        if do_sample:
            config.temperature, config.top_p, config.rng_seed = temperature, top_p, seed
        if self.draft is not None:
            config.num_assistant_tokens = 5
        if self.prompt_lookup is not None:
            config.num_assistant_tokens, config.max_ngram_size = self.prompt_lookup, 3
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        ids = self.og.TokenizedInputs(ov_tensor(input_ids), ov_tensor(mask))
        if streamer is None:
            out = self.pipe.generate(ids, config)
        else:
            out = self.pipe.generate(ids, config, lambda text: streamer(text) or self.og.StreamingStatus.RUNNING)
        self.num_forward_calls += len(out.perf_metrics.raw_metrics.m_new_token_times)
        width = max(len(t) for t in out.tokens)
        new = torch.zeros(len(out.tokens), width, dtype=input_ids.dtype)
        for i, tokens in enumerate(out.tokens):
            new[i, : len(tokens)] = torch.tensor(tokens)
        return torch.cat([input_ids, new], dim=1)


def _eagle_kwargs(head, k: int, schedule: str, confidence: float) -> dict:
    return {
        "assistant_model": head,
        "num_assistant_tokens": k,
        "num_assistant_tokens_schedule": schedule,
        "assistant_confidence_threshold": confidence,
    }


def useless_eagle_head() -> Path:
    """The trained SmolLM2 EAGLE head with a random (seeded) fusion layer: its drafts are almost always rejected."""
    from optimum_dynexec.exporters.eagle import export_eagle_draft
    from optimum_dynexec.reference.prepare import eagle_run_dir, smollm2_dir
    from optimum_dynexec.training.eagle import load_eagle
    from optimum_dynexec.utils import cache_dir

    run = eagle_run_dir()
    out = cache_dir("exports") / f"{run.name}-useless"
    if not (out / "openvino_model.xml").exists():
        head = load_eagle(run, smollm2_dir())
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            head.fc.weight.copy_(torch.randn(head.fc.weight.shape, generator=generator) * 0.05)
        export_eagle_draft(head, out)
    return out


def ov_tensor(t: torch.Tensor):
    import openvino as ov

    return ov.Tensor(t.numpy().astype(np.int64))


def run_benchmark(config: SpeculativeBenchConfig, output_dir: str | Path = "benchmarks") -> dict:
    from optimum.intel import OVModelForCausalLM as PlainOVModel
    from transformers import AutoTokenizer

    from optimum_dynexec import OVModelForCausalLM
    from optimum_dynexec.eagle import OVEagleDraft
    from optimum_dynexec.reference.gemma import prepare_gemma
    from optimum_dynexec.reference.prepare import (
        gemma_eagle_dir,
        smollm2_draft_dir,
        smollm2_eagle_dir,
        smollm2_openvino_dir,
    )

    gemma = config.target == GEMMA
    openvino_dir = (lambda weights: prepare_gemma()) if gemma else smollm2_openvino_dir
    draft_dir = smollm2_draft_dir() if config.draft_model else None
    eagle_dir = (gemma_eagle_dir() if gemma else smollm2_eagle_dir()) if config.eagle else None
    useless_dir = useless_eagle_head() if eagle_dir is not None and config.useless_draft else None
    tokenizer = AutoTokenizer.from_pretrained(openvino_dir("fp32"))
    prompts = {
        task: [tokenizer(p, return_tensors="pt") for p in texts]
        for task, texts in austen_prompts(config.num_prompts, config.prompt_words).items()
    }
    # no EOS stop, so every contender writes exactly max_new_tokens (min_new_tokens would add a logits processor)
    gen = dict(max_new_tokens=config.max_new_tokens, do_sample=False, eos_token_id=None)
    rows = []
    runs = [("fp32", p) for p in config.precisions]
    runs += [(w, p) for p in config.compressed_precisions for w in config.weight_formats if w != "fp32"]
    for weights, precision in runs:
        target_dir = openvino_dir(weights)
        ov_config = PRECISIONS[precision]
        plain = PlainOVModel.from_pretrained(target_dir, ov_config=ov_config)
        ours = OVModelForCausalLM.from_pretrained(target_dir, ov_config=ov_config)
        ours.reuse_prompt_cache = False  # each timed call computes its prompt afresh, as the plain class does
        contenders = {"plain": (plain, {})}
        contenders |= {
            f"prompt lookup k={k}": (ours, {"prompt_lookup_num_tokens": k}) for k in config.prompt_lookup_num_tokens
        }
        if config.stateful_row:
            stateful = OVModelForCausalLM.from_pretrained(target_dir, ov_config=ov_config)
            stateful.paged_verification = False  # (the stateful request never reuses a prompt)
            k = max(config.prompt_lookup_num_tokens)
            contenders[f"lookup k={k}, stateful"] = (stateful, {"prompt_lookup_num_tokens": k})
        if config.one_request_row:
            one = OVModelForCausalLM.from_pretrained(target_dir, ov_config=ov_config)
            one.paged_single_steps, one.reuse_prompt_cache = False, False
            k = max(config.prompt_lookup_num_tokens)
            contenders[f"lookup k={k}, one request"] = (one, {"prompt_lookup_num_tokens": k})
        run_draft_dir = smollm2_draft_dir(config.draft_weight_format or weights) if draft_dir is not None else None
        if run_draft_dir is not None:
            draft = OVModelForCausalLM.from_pretrained(run_draft_dir, ov_config=PRECISIONS[config.draft_precision])
            contenders |= {
                f"draft k={k} heuristic" + (f", conf {c:g}" if c else ""): (
                    ours,
                    {
                        "assistant_model": draft,
                        "num_assistant_tokens": k,
                        "num_assistant_tokens_schedule": "heuristic",
                        "assistant_confidence_threshold": c,
                    },
                )
                for k in config.num_assistant_tokens
                for c in config.draft_confidence
            }
        # EAGLE rows verify through a paged form with the hidden-state output: a target of their own, so the other
        # rows run the graph a user without EAGLE gets (in bf16 a different graph can give a different text)
        if eagle_dir is not None:
            with_head = OVModelForCausalLM.from_pretrained(target_dir, ov_config=ov_config)
            eagle = OVEagleDraft.from_pretrained(eagle_dir, ov_config=PRECISIONS[config.eagle_precision])
            contenders |= {
                f"EAGLE k={k}": (with_head, _eagle_kwargs(eagle, k, config.eagle_schedule, config.eagle_confidence))
                for k in config.eagle_num_tokens
            }
            if config.eagle_with_lookup:
                contenders |= {
                    f"EAGLE k={k} + lookup k={config.eagle_with_lookup}": (
                        with_head,
                        _eagle_kwargs(eagle, k, config.eagle_schedule, config.eagle_confidence)
                        | {"prompt_lookup_num_tokens": config.eagle_with_lookup},
                    )
                    for k in config.eagle_num_tokens
                }
        if useless_dir is not None:
            useless = OVEagleDraft.from_pretrained(useless_dir, ov_config=PRECISIONS[config.eagle_precision])
            contenders["useless EAGLE head"] = (with_head, _eagle_kwargs(useless, 4, "heuristic", 0.0))
        if config.genai:
            contenders["GenAI plain"] = (GenAIContender(target_dir, ov_config), {})
            contenders["GenAI prompt lookup k=5"] = (GenAIContender(target_dir, ov_config, prompt_lookup=5), {})
            if run_draft_dir is not None:
                contenders["GenAI draft k=5"] = (
                    GenAIContender(
                        target_dir, ov_config, draft=run_draft_dir, draft_config=PRECISIONS[config.draft_precision]
                    ),
                    {},
                )
        for task, inputs in prompts.items():
            for model, extra in contenders.values():  # warm-up
                model.generate(input_ids=inputs[0]["input_ids"], max_new_tokens=8, do_sample=False, **extra)
            times = {name: [] for name in contenders}
            outputs, calls = {}, {}
            for _ in tqdm(range(config.rounds), desc=f"{weights} {precision} {task}"):
                # interleaved prompt by prompt, so a drift in the machine's speed reaches every contender alike
                for i, x in enumerate(inputs):
                    for name, (model, extra) in contenders.items():
                        before = getattr(model, "num_forward_calls", 0)
                        start = time.perf_counter()
                        out = model.generate(input_ids=x["input_ids"], **gen, **extra)
                        times[name].append(time.perf_counter() - start)
                        outputs[(name, i)] = out[0, x["input_ids"].shape[1] :]
                        calls[(name, i)] = getattr(model, "num_forward_calls", 0) - before
            plain_tps = config.max_new_tokens * len(inputs) * config.rounds / sum(times["plain"])
            for name in contenders:
                tps = config.max_new_tokens * len(inputs) * config.rounds / sum(times[name])
                identical = all(torch.equal(outputs[(name, i)], outputs[("plain", i)]) for i in range(len(inputs)))
                agreement = float(
                    np.mean([common_prefix(outputs[(name, i)], outputs[("plain", i)]) for i in range(len(inputs))])
                )
                per_call = ms_per_call = None
                if name != "plain" and hasattr(contenders[name][0], "num_forward_calls"):
                    per_call = float(
                        np.mean([config.max_new_tokens / max(1, calls[(name, i)]) for i in range(len(inputs))])
                    )
                    # target calls repeat round after round (greedy), so the last round's count stands for each
                    total_calls = config.rounds * sum(calls[(name, i)] for i in range(len(inputs)))
                    ms_per_call = 1000 * sum(times[name]) / max(1, total_calls)
                rows.append(
                    {
                        "weights": weights,
                        "draft_weights": (config.draft_weight_format or weights) if run_draft_dir else None,
                        "precision": precision,
                        "task": task,
                        "method": name,
                        "tokens_per_s": tps,
                        "speedup": tps / plain_tps,
                        "identical_to_plain": identical,
                        # new tokens equal to plain greedy's before the first difference, over max_new_tokens
                        "prefix_agreement": agreement / config.max_new_tokens,
                        "tokens_per_target_call": per_call,
                        # the whole call (prefill included) over its target calls
                        "ms_per_target_call": ms_per_call,
                    }
                )
    results = {
        "target": str(openvino_dir("fp32")),
        "draft": str(draft_dir) if draft_dir else None,
        "eagle": str(eagle_dir) if eagle_dir else None,
        "max_new_tokens": config.max_new_tokens,
        "num_prompts": config.num_prompts,
        "rounds": config.rounds,
        "rows": rows,
    }
    plot(rows, save_results(results, output_dir, config.name), TARGETS[config.target])
    return results


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    differ = torch.nonzero(a[:n] != b[:n])
    return int(differ[0, 0]) if len(differ) else n


def _panel(row: dict) -> str:
    return f"{row.get('weights', 'fp32')} weights, {row['precision']} precision"


def plot(rows: list[dict], path: Path, title: str = TARGETS[SMOLLM2]) -> None:
    """Speedup over plain decoding per method, one panel per weight format and precision, bars per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(_panel(r) for r in rows))
    cols = min(2, len(panels))
    rows_ = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(7 * cols, 4.5 * rows_), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        mine = [r for r in rows if _panel(r) == panel]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        for j, task in enumerate(sorted({r["task"] for r in mine})):
            vals = [next(r["speedup"] for r in mine if r["task"] == task and r["method"] == m) for m in methods]
            ax.bar(np.arange(len(methods)) + 0.4 * j, vals, width=0.4, label=task)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(methods)) + 0.2, methods, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{title}, {panel}")
        ax.set_ylabel("speedup over optimum-intel greedy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    head = (
        f"{'weights':<7} {'precision':<9} {'task':<9} {'method':<26} {'tok/s':>7} {'speedup':>8} {'identical':>9} "
        f"{'agree':>5} {'tok/call':>8} {'ms/call':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        per_call = "" if r["tokens_per_target_call"] is None else f"{r['tokens_per_target_call']:.2f}"
        ms = "" if r.get("ms_per_target_call") is None else f"{r['ms_per_target_call']:.1f}"
        lines.append(
            f"{r.get('weights', 'fp32'):<7} {r['precision']:<9} {r['task']:<9} {r['method']:<26} "
            f"{r['tokens_per_s']:7.1f} {r['speedup']:7.2f}x {str(r['identical_to_plain']):>9} "
            f"{r.get('prefix_agreement', float('nan')):5.0%} {per_call:>8} {ms:>7}"
        )
    return "\n".join(lines)
