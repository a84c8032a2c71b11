"""A same-tokenizer draft model for speculative decoding, distilled from its target causal LM.

The student is a `LlamaForCausalLM` with the target's config but only a few decoder layers, initialised from the
target's first layers, and sharing copies of the target's embeddings, final norm and (tied) LM head, so it keeps the
target's vocabulary and tokenizer and every token it drafts is a valid target token. It learns the target's
next-token distribution by knowledge distillation: the loss is the KL divergence from the target's top-k distribution
(renormalised) to the student's full-vocabulary distribution. Embeddings and LM head are frozen.

The material is Jane Austen's novels without the passages the speculative benchmark uses (the middle of every book),
plus the target's own greedy continuations of short book prompts (made once with transformers' `generate` and cached
in the output folder), since at decoding time the draft has to predict exactly those: every batch draws
`continuation_share` of its chunks from them. The last `eval_fraction` of every book is held out, with continuations
of prompts from there; the greedy acceptance rate on both (the fraction of positions where the student's argmax equals
the target's argmax under teacher forcing) is measured before and after training.

Training runs in `loop.TrainingLoop`: seeded and resumable, with a checkpoint in `output_dir/checkpoint/state.pt`
(every `save_every` steps and at the end); calling `train_draft` again on the same folder continues from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..utils import set_seed, setup_logging
from .loop import TrainingLoop, batch_indices
from .text_data import sample_windows, token_splits

logger = logging.getLogger("optimum_dynexec.training.draft")  # also when run with `python -m`

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
METRICS_FILE = "draft_metrics.json"
# Fields that must match for a run to resume from a checkpoint (the step budget and time budget may change).
RESUME_KEYS = (
    "num_layers",
    "seq_len",
    "batch_size",
    "learning_rate",
    "top_k",
    "temperature",
    "seed",
    "eval_fraction",
    "continuation_prompts",
    "continuation_tokens",
    "continuation_share",
    "eval_continuations",
)
CONTINUATIONS_FILE = "continuations.pt"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class DraftConfig:
    """Settings of a draft distillation run; validated on construction (`ValueError` on a bad value).

    Attributes:
        num_layers: decoder layers of the student, initialised from the target's first `num_layers` layers.
        seq_len: tokens per training chunk.
        batch_size: chunks per optimizer step.
        max_steps: optimizer steps (the cosine schedule spans them).
        max_minutes: wall-time budget of the training loop (summed over resumed runs): after a few timed steps the
            run fixes how many steps fit it (at most `max_steps`) and the schedule spans those; `None` means no limit.
        learning_rate: AdamW peak learning rate (after `warmup_steps` of linear warm-up, then cosine decay to 10%,
            transformers' `cosine_with_min_lr` schedule).
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay of the decoder layers.
        top_k: the target distribution is restricted to its `top_k` most likely tokens (renormalised).
        temperature: softening of both distributions in the loss.
        teacher_dtype: dtype of the target's forward pass during training (`bfloat16` is ~4x faster on CPUs with
            AVX512-BF16; evaluation always runs the target in float32).
        student_autocast: run the student's forward/backward under bfloat16 autocast (weights stay float32).
        train_norm: also train the student's final norm (embeddings and LM head are always frozen).
        eval_fraction: the last fraction of every text is held out for evaluation.
        eval_tokens: at most this many held-out tokens are used to measure acceptance (0: all).
        max_train_tokens: at most this many training tokens are kept (0: all).
        save_every: checkpoint interval in steps.
        seed: seeds initialisation-independent randomness and the data order.
        continuation_prompts: training prompts the target continues greedily (0: book text only).
        continuation_tokens: new tokens per continuation; its prompt is `seq_len - continuation_tokens` book tokens,
            so a continuation is one training chunk.
        continuation_share: fraction of every batch drawn from the continuations.
        eval_continuations: held-out prompts continued by the target to measure acceptance on its own text.
    """

    num_layers: int = 4
    seq_len: int = 128
    batch_size: int = 8
    max_steps: int = 600
    max_minutes: float | None = 24.0
    learning_rate: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    top_k: int = 64
    temperature: float = 1.0
    teacher_dtype: str = "bfloat16"
    student_autocast: bool = True
    train_norm: bool = True
    eval_fraction: float = 0.05
    eval_tokens: int = 16384
    max_train_tokens: int = 0
    save_every: int = 50
    seed: int = 0
    continuation_prompts: int = 256
    continuation_tokens: int = 96
    continuation_share: float = 0.25
    eval_continuations: int = 16

    def __post_init__(self) -> None:
        positive = ("num_layers", "seq_len", "batch_size", "max_steps", "top_k", "save_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in (
            "warmup_steps",
            "eval_tokens",
            "max_train_tokens",
            "seed",
            "continuation_prompts",
            "eval_continuations",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if self.seq_len < 2:
            raise ValueError(f"`seq_len` must be at least 2, got {self.seq_len}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"`max_minutes` must be positive or None, got {self.max_minutes!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"`learning_rate` must be in (0, 1), got {self.learning_rate!r}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay!r}.")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be positive, got {self.temperature!r}.")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"`eval_fraction` must be in (0, 1), got {self.eval_fraction!r}.")
        if not 0 <= self.continuation_share < 1:
            raise ValueError(f"`continuation_share` must be in [0, 1), got {self.continuation_share!r}.")
        if self.uses_continuations or self.eval_continuations:
            if not (isinstance(self.continuation_tokens, int) and 0 < self.continuation_tokens < self.seq_len):
                raise ValueError(
                    f"`continuation_tokens` must be an integer in (0, seq_len={self.seq_len}), "
                    f"got {self.continuation_tokens!r}."
                )
        if self.teacher_dtype not in DTYPES:
            raise ValueError(f"`teacher_dtype` must be one of {sorted(DTYPES)}, got {self.teacher_dtype!r}.")

    @property
    def uses_continuations(self) -> bool:
        """Whether batches draw chunks from the target's continuations."""
        return self.continuation_prompts > 0 and round(self.batch_size * self.continuation_share) > 0

    @property
    def continuation_chunks_per_batch(self) -> int:
        """Chunks of every batch drawn from the continuations (the rest is book text)."""
        if not self.uses_continuations:
            return 0
        return min(self.batch_size - 1, round(self.batch_size * self.continuation_share))


# ----------------------------------------------------------------------------------------------------------- data


def split_token_chunks(
    texts: Mapping[str, str], tokenizer, seq_len: int, eval_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenizes every text and cuts it into `seq_len` chunks: `(train, eval)` int64 tensors `(n, seq_len)`.

    Every text is tokenised and split by position (`text_data.token_splits`); the last
    `eval_fraction` of every text's tokens goes to the evaluation chunks, the rest to the training chunks.
    """
    return token_chunks(token_splits(tokenizer, dict(texts), eval_fraction), seq_len)


def token_chunks(splits: tuple[list[np.ndarray], list[np.ndarray]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(train, eval)` int64 tensors `(n, seq_len)` cut from `token_splits`'s `(train, held_out)` arrays."""
    out = []
    for parts in splits:
        chunks = [
            torch.from_numpy(ids[: len(ids) // seq_len * seq_len].copy()) for ids in parts if len(ids) >= seq_len
        ]
        if not chunks:
            raise ValueError(
                f"The texts are too short for seq_len={seq_len}: need at least one training and one held-out chunk."
            )
        out.append(torch.cat(chunks).view(-1, seq_len))
    return out[0], out[1]


@torch.no_grad()
def target_continuations(
    target, prompts: torch.Tensor, new_tokens: int, batch_size: int, desc: str = "target continuations"
) -> torch.Tensor:
    """The target's greedy continuations of `prompts` `(n, p)` with transformers' `generate`: `(n, p + new_tokens)`.

    Every row gets exactly `new_tokens` new tokens (no stop at the end-of-sequence token).
    """
    pad = target.config.pad_token_id if target.config.pad_token_id is not None else 0
    rows = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch"):
        batch = prompts[start : start + batch_size]
        rows.append(
            target.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        )
    return torch.cat(rows)


def continuation_chunks(
    target, splits: tuple[list[np.ndarray], list[np.ndarray]], config: DraftConfig, output_dir: Path
) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """`(train, eval, seconds)`: the target's continuations of book prompts, one `seq_len` chunk each.

    Training prompts come from the training part of the books, evaluation prompts from the held-out part
    (`splits` is `token_splits`'s output). The continuations are cached in `output_dir/continuations.pt` (with
    the settings that made them) and reused.
    """
    if not (config.uses_continuations or config.eval_continuations):
        return None, None, 0.0
    keys = {k: getattr(config, k) for k in ("seq_len", "continuation_tokens", "eval_fraction", "seed")}
    keys.update(train=config.continuation_prompts if config.uses_continuations else 0, eval=config.eval_continuations)
    cache = output_dir / CONTINUATIONS_FILE
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved["settings"] == keys:
            return saved["train"], saved["eval"], saved["seconds"]
        logger.info("the cached continuations were made with other settings: making them again")
    start = time.perf_counter()
    train_ids, held_ids = splits
    rng = np.random.default_rng(config.seed)
    prompt_len = config.seq_len - config.continuation_tokens
    made = []
    for ids, count, tag in ((train_ids, keys["train"], "training"), (held_ids, keys["eval"], "held-out")):
        if not count:
            made.append(None)
            continue
        prompts = torch.from_numpy(sample_windows(ids, count, prompt_len, rng))
        made.append(
            target_continuations(
                target, prompts, config.continuation_tokens, config.batch_size * 2, desc=f"{tag} continuations"
            )
        )
    seconds = round(time.perf_counter() - start, 1)
    tmp = cache.with_suffix(".tmp")
    torch.save({"settings": keys, "train": made[0], "eval": made[1], "seconds": seconds}, tmp)
    tmp.replace(cache)
    return made[0], made[1], seconds


# ---------------------------------------------------------------------------------------------------------- model


def load_target(target_dir: str | Path, dtype: torch.dtype = torch.float32):
    """The target causal LM in eval mode, frozen."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(target_dir, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def build_student(target, num_layers: int):
    """A `LlamaForCausalLM` with the target's config but its first `num_layers` decoder layers.

    Embeddings, final norm and LM head are copied from the target (the head stays tied to the embeddings when the
    target's is); the vocabulary is unchanged.
    """
    import copy

    from transformers import LlamaForCausalLM

    total = target.config.num_hidden_layers
    if num_layers > total:
        raise ValueError(f"The student cannot have {num_layers} layers: the target has {total}.")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:num_layers]
    config.architectures = ["LlamaForCausalLM"]
    student = LlamaForCausalLM(config)
    state = {}
    for key, value in target.state_dict().items():
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            if index >= num_layers:
                continue
        state[key] = value.detach().clone().float()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"Student initialisation failed: missing {missing}, unexpected {unexpected}.")
    if config.tie_word_embeddings:
        student.tie_weights()
    return student


def trainable_parameters(student, train_norm: bool) -> list[torch.nn.Parameter]:
    """Freezes embeddings and LM head (and the final norm unless `train_norm`); returns what stays trainable."""
    student.requires_grad_(False)
    student.model.layers.requires_grad_(True)
    if train_norm:
        student.model.norm.requires_grad_(True)
    return [p for p in student.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------------------------------- loss


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, top_k: int, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over positions of KL(p_teacher_top_k || p_student), where the teacher's top-k is renormalised.

    The student's log-probabilities are normalised over the full vocabulary, so probability mass it puts outside
    the teacher's top-k is penalised too.
    """
    k = min(top_k, teacher_logits.shape[-1])
    t_values, t_index = (teacher_logits.float() / temperature).topk(k, dim=-1)
    t_logp = F.log_softmax(t_values, dim=-1)
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, t_index)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * temperature**2


@torch.no_grad()
def teacher_argmax(target, chunks: torch.Tensor, batch_size: int, desc: str = "target argmax") -> torch.Tensor:
    """The target's greedy next token at every position of `chunks` (float32 forward)."""
    out = []
    for start in tqdm(range(0, len(chunks), batch_size), desc=desc, leave=False):
        out.append(target(chunks[start : start + batch_size]).logits.argmax(-1))
    return torch.cat(out)


@torch.no_grad()
def acceptance_rate(student, chunks: torch.Tensor, target_argmax: torch.Tensor, batch_size: int) -> float:
    """Fraction of positions where the student's argmax equals the target's argmax (teacher forcing)."""
    was_training = student.training
    student.eval()
    hits = 0
    for start in tqdm(range(0, len(chunks), batch_size), desc="acceptance", leave=False):
        pred = student(chunks[start : start + batch_size]).logits.argmax(-1)
        hits += int((pred == target_argmax[start : start + batch_size]).sum())
    student.train(was_training)
    return hits / target_argmax.numel()


@torch.no_grad()
def mean_kl(student, teacher, chunks: torch.Tensor, config: DraftConfig) -> float:
    """The distillation loss averaged over `chunks` (no gradients)."""
    was_training = student.training
    student.eval()
    losses = []
    for start in range(0, len(chunks), config.batch_size):
        batch = chunks[start : start + config.batch_size]
        losses.append(float(distillation_loss(student(batch).logits, teacher(batch).logits, config.top_k)))
    student.train(was_training)
    return float(np.mean(losses))


# ------------------------------------------------------------------------------------------------------- training


def _training_batch(
    step: int, text_chunks: torch.Tensor, continuations: torch.Tensor | None, config: DraftConfig
) -> torch.Tensor:
    """The chunks of optimizer step `step`: book text, plus `continuation_chunks_per_batch` continuations."""
    n_gen = config.continuation_chunks_per_batch if continuations is not None else 0
    batch = text_chunks[batch_indices(step, len(text_chunks), config.batch_size - n_gen, config.seed)]
    if n_gen:
        picked = continuations[batch_indices(step, len(continuations), n_gen, config.seed + 1)]
        batch = torch.cat([batch, picked])
    return batch


def _rounded(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def train_draft(
    output_dir: str | Path,
    config: DraftConfig | None = None,
    target_dir: str | Path | None = None,
    texts: Mapping[str, str] | None = None,
) -> Path:
    """Distils a shallow draft model from `target_dir` and saves it as a plain transformers folder.

    Args:
        output_dir: folder for the student (`save_pretrained` + the target's tokenizer), `draft_metrics.json` and
            the `checkpoint` sub-folder; a run that finds a checkpoint there resumes from it.
        config: the run's settings (defaults: `DraftConfig()`).
        target_dir: the target causal LM folder (a transformers folder; required).
        texts: `{name: text}` to distil on, used as given (required; the proving ground's recipe passes Jane
            Austen's novels without the benchmark's passages).

    Returns:
        `output_dir` as a `Path`.
    """
    from transformers import AutoTokenizer

    config = config or DraftConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if target_dir is None or not texts:
        raise ValueError("train_draft needs the target folder (`target_dir=`) and the texts to distil on (`texts=`).")

    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    splits = token_splits(tokenizer, dict(texts), config.eval_fraction)
    train_chunks, eval_chunks = token_chunks(splits, config.seq_len)
    if config.max_train_tokens:
        train_chunks = train_chunks[: max(1, config.max_train_tokens // config.seq_len)]
    if config.eval_tokens:
        eval_chunks = eval_chunks[: max(1, config.eval_tokens // config.seq_len)]
    logger.info(
        "%d training chunks, %d held-out chunks of %d tokens", len(train_chunks), len(eval_chunks), config.seq_len
    )

    target = load_target(target_dir, torch.float32)
    student = build_student(target, config.num_layers)
    params = trainable_parameters(student, config.train_norm)
    n_params = sum(p.numel() for p in student.parameters())
    n_trainable = sum(p.numel() for p in params)
    logger.info("student: %d layers, %d parameters (%d trainable)", config.num_layers, n_params, n_trainable)

    # the checkpoint is read before the continuations are made: a run with other settings stops here
    loop = TrainingLoop(
        student,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        schedule="cosine_with_min_lr",
        schedule_kwargs={"min_lr_rate": 0.1},
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_minutes=config.max_minutes,
        checkpoint=output_dir / CHECKPOINT_DIR / CHECKPOINT_FILE,
        save_every=config.save_every,
        settings={k: getattr(config, k) for k in RESUME_KEYS},
        seed=config.seed,
        desc="distilling",
    )

    continuations, eval_continuations, continuation_seconds = continuation_chunks(target, splits, config, output_dir)
    evaluations = {"acceptance": (eval_chunks, teacher_argmax(target, eval_chunks, config.batch_size))}
    if eval_continuations is not None:
        argmax = teacher_argmax(target, eval_continuations, config.batch_size, desc="target argmax (continuations)")
        evaluations["continuation_acceptance"] = (eval_continuations, argmax)

    def measure() -> dict[str, float]:
        return {
            name: acceptance_rate(student, chunks, argmax, config.batch_size)
            for name, (chunks, argmax) in evaluations.items()
        }

    if "metrics_before" not in loop.extras:
        loop.extras["metrics_before"] = measure()
        logger.info("acceptance before training: %s", _rounded(loop.extras["metrics_before"]))
    metrics_before = loop.extras["metrics_before"]

    teacher = target if config.teacher_dtype == "float32" else load_target(target_dir, DTYPES[config.teacher_dtype])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.student_autocast else nullcontext()

    def loss_fn(step: int) -> torch.Tensor:
        batch = _training_batch(step, train_chunks, continuations, config)
        with torch.no_grad():
            teacher_logits = teacher(batch).logits
        with autocast:
            student_logits = student(batch).logits
        return distillation_loss(student_logits, teacher_logits, config.top_k, config.temperature)

    loop.run(loss_fn)
    step, losses, elapsed = loop.step, loop.losses, loop.elapsed

    metrics_after = measure()
    logger.info("acceptance after training: %s (before %s)", _rounded(metrics_after), _rounded(metrics_before))

    student.config.use_cache = True
    student.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    metrics = {
        "target": str(target_dir),
        "num_layers": config.num_layers,
        "parameters": n_params,
        "trainable_parameters": n_trainable,
        "vocab_size": int(student.config.vocab_size),
        **{f"{name}_before": value for name, value in metrics_before.items()},
        **{f"{name}_after": value for name, value in metrics_after.items()},
        "eval_tokens": int(eval_chunks.numel()),
        "eval_continuation_tokens": 0 if eval_continuations is None else int(eval_continuations.numel()),
        "train_tokens_seen": step * config.batch_size * config.seq_len,
        "continuation_chunks": 0 if continuations is None else len(continuations),
        "continuation_seconds": continuation_seconds,
        "steps": step,
        "schedule_steps": loop.total_steps,
        "resumed_from_step": loop.resumed_from,
        "stopped_by_time_budget": step < config.max_steps,
        "training_seconds": round(elapsed, 1),
        "training_minutes": round(elapsed / 60, 2),
        "tokens_per_second": round(step * config.batch_size * config.seq_len / max(elapsed, 1e-9), 1),
        "first_kl": losses[0] if losses else None,
        "last_kl_mean20": float(np.mean(losses[-20:])) if losses else None,
        "config": asdict(config),
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return output_dir


# ------------------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """`python -m optimum_dynexec.training.draft --output <dir> --target <hf> --texts a.txt ... [--layers N]`."""
    parser = argparse.ArgumentParser(description="Distil a same-tokenizer draft model from a target causal LM.")
    parser.add_argument("--output", required=True, type=Path, help="output folder (resumes from its checkpoint)")
    parser.add_argument("--layers", type=int, default=DraftConfig.num_layers, help="student decoder layers")
    parser.add_argument("--minutes", type=float, default=DraftConfig.max_minutes, help="training time budget")
    parser.add_argument("--steps", type=int, default=DraftConfig.max_steps, help="optimizer steps")
    parser.add_argument("--seq-len", type=int, default=DraftConfig.seq_len)
    parser.add_argument("--batch-size", type=int, default=DraftConfig.batch_size)
    parser.add_argument("--lr", type=float, default=DraftConfig.learning_rate)
    parser.add_argument(
        "--continuations",
        type=int,
        default=DraftConfig.continuation_prompts,
        help="book prompts the target continues greedily for training (0: book text only)",
    )
    parser.add_argument(
        "--continuation-share",
        type=float,
        default=DraftConfig.continuation_share,
        help="fraction of every batch drawn from the continuations",
    )
    parser.add_argument("--no-autocast", action="store_true", help="train the student in plain float32")
    parser.add_argument("--target", type=Path, required=True, help="the target's transformers folder")
    parser.add_argument("--texts", nargs="+", required=True, type=Path, help="plain-text files to distil on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    config = DraftConfig(
        num_layers=args.layers,
        max_minutes=args.minutes,
        max_steps=args.steps,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        student_autocast=not args.no_autocast,
        continuation_prompts=args.continuations,
        continuation_share=args.continuation_share,
        seed=args.seed,
    )
    texts = {str(path): path.read_text(encoding="utf-8") for path in args.texts}
    out = train_draft(args.output, config, target_dir=args.target, texts=texts)
    metrics = json.loads((out / METRICS_FILE).read_text())
    logger.info(
        "draft saved to %s: acceptance %.4f -> %.4f on held-out text, %s on the target's continuations, %.1f min",
        out,
        metrics["acceptance_before"],
        metrics["acceptance_after"],
        f"{metrics['continuation_acceptance_before']:.4f} -> {metrics['continuation_acceptance_after']:.4f}"
        if "continuation_acceptance_after" in metrics
        else "not measured",
        metrics["training_minutes"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
