"""Training of an EAGLE draft head for a causal LM (SmolLM2-135M here), on the target's own features.

The head (`eagle_model.EagleDraftModel`) learns to predict the target's next final hidden state from the current one
and the next token: a smooth-L1 loss on the (standardised) features plus a soft cross-entropy between the target's
and the head's distributions over the reduced vocabulary (both through the same frozen LM head rows). Input features
get uniform noise, and with `unroll_steps=2` a second pass feeds the head its own predicted features, as it will be
when it drafts several tokens in a row. The reduced vocabulary is the `draft_vocab_size` tokens the target emits most
on the training windows.

Features are computed once from the exported OpenVINO target and cached in the output folder (`features.npz`);
training runs in `loop.TrainingLoop`, seeded and resumable (`checkpoint/state.pt`, every `save_every` steps and at the
end).
The result is `eagle.pt` (weights, token map, config) plus `eagle_metrics.json` (teacher-forced acceptance before and
after training on held-out windows: how often the head's top token is the target's greedy token).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling_decoder import OVModelForCausalLM
from ..utils import set_seed, setup_logging
from .draft import load_target
from .eagle_data import FeatureSet, build_feature_sets
from .eagle_model import EagleDraftModel
from .loop import TrainingLoop, batch_indices

logger = logging.getLogger("optimum_dynexec.training.eagle")

FEATURES_FILE = "features.npz"
HELD_OUT_FILE = "features_held_out.npz"
WEIGHTS_FILE = "eagle.pt"
METRICS_FILE = "eagle_metrics.json"
CHECKPOINT_FILE = Path("checkpoint") / "state.pt"
# settings that must match for a run to resume (budgets may change)
RESUME_KEYS = ("draft_vocab_size", "seq_len", "batch_size", "learning_rate", "unroll_steps", "seed", "cls_weight")
DATA_KEYS = ("seq_len", "continuation_tokens", "text_windows", "continuation_windows", "eval_windows", "seed")


@dataclass
class EagleConfig:
    """Settings of an EAGLE head training run; validated on construction (`ValueError` on a bad value).

    Attributes:
        draft_vocab_size: tokens the head can emit (the target's most frequent greedy tokens).
        seq_len: tokens per training window.
        continuation_tokens: of which the target generates this many after a book prompt (continuation windows).
        text_windows, continuation_windows: training windows of book text and of target continuations.
        eval_windows: held-out windows of each kind.
        batch_size: windows per optimizer step.
        max_steps: optimizer steps (the cosine schedule spans them).
        max_minutes: wall-time budget of the training loop, summed over resumed runs (`None`: no limit); after a
            few timed steps the run fixes how many steps fit it and the schedule spans those.
        learning_rate, warmup_steps, weight_decay: AdamW and its schedule (linear warm-up, then cosine decay to 10%).
        feature_noise: half-width of the uniform noise added to input features, in feature standard deviations.
        cls_weight: weight of the soft cross-entropy beside the feature regression.
        unroll_steps: 1 trains on the target's features only; 2 adds a pass on the head's own predictions.
        save_every: checkpoint interval in steps.
        seed: seeds data sampling and training.
    """

    draft_vocab_size: int = 8192
    seq_len: int = 192
    continuation_tokens: int = 128
    text_windows: int = 640
    continuation_windows: int = 160
    eval_windows: int = 24
    batch_size: int = 8
    max_steps: int = 3000
    max_minutes: float | None = 14.0
    learning_rate: float = 5e-4
    warmup_steps: int = 30
    weight_decay: float = 0.0
    feature_noise: float = 0.1
    cls_weight: float = 0.5
    unroll_steps: int = 2
    save_every: int = 50
    seed: int = 0

    def __post_init__(self):
        for name in ("draft_vocab_size", "seq_len", "batch_size", "max_steps", "save_every", "eval_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not 0 < self.continuation_tokens < self.seq_len:
            raise ValueError(f"`continuation_tokens` must be in (0, seq_len), got {self.continuation_tokens}.")
        if self.text_windows < 0 or self.continuation_windows < 0 or self.text_windows + self.continuation_windows < 1:
            raise ValueError("Give at least one training window (text_windows + continuation_windows).")
        if self.unroll_steps not in (1, 2):
            raise ValueError(f"`unroll_steps` must be 1 or 2, got {self.unroll_steps}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"`max_minutes` must be positive or None, got {self.max_minutes!r}.")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"`learning_rate` must be in (0, 1), got {self.learning_rate!r}.")
        if self.feature_noise < 0 or self.cls_weight < 0 or self.weight_decay < 0:
            raise ValueError("feature_noise, cls_weight and weight_decay must be non-negative.")

    eval_fraction = 0.05  # the last 5% of every book is held out


def frequent_tokens(data: FeatureSet, count: int, vocab_size: int, always: list[int] | None = None) -> torch.Tensor:
    """The `count` token ids (of `vocab_size`) the target emits most on `data`, sorted, including `always` (e.g.
    EOS); ties go to the smaller id."""
    freq = np.bincount(data.target_argmax.ravel(), minlength=vocab_size)
    missing = [t for t in dict.fromkeys(always or []) if t is not None]
    ranked = [int(t) for t in np.argsort(-freq, kind="stable") if int(t) not in missing]
    top = ranked[: max(0, count - len(missing))] + missing
    return torch.tensor(sorted(set(top)), dtype=torch.long)


def _losses(draft, tokens, features, scale, config, noise: bool):
    """Regression + soft cross-entropy for one batch of windows (`tokens` `(b, L)`, `features` `(b, L, H)`)."""
    inputs, targets = features[:, :-1], features[:, 1:]
    ids = tokens[:, 1:]
    batch, length = ids.shape
    past = draft.empty_cache(batch)
    mask = torch.ones(batch, length, dtype=torch.long)
    positions = torch.arange(length)[None].expand(batch, -1)
    with torch.no_grad():
        teacher = F.softmax(draft.lm_head(targets), -1)
    total, preds = 0.0, None
    for step in range(config.unroll_steps):
        hidden = inputs if step == 0 else torch.cat([inputs[:, :1], preds[:, :-1].detach()], 1)
        if noise and config.feature_noise:
            hidden = hidden + (torch.rand_like(hidden) * 2 - 1) * config.feature_noise * scale
        logits, preds, _, _ = draft(ids, hidden, mask, positions, *past)
        regression = F.smooth_l1_loss(preds / scale, targets / scale)
        cross_entropy = -(teacher * F.log_softmax(logits, -1)).sum(-1).mean()
        total = total + regression + config.cls_weight * cross_entropy
    return total / config.unroll_steps


@torch.no_grad()
def evaluate(draft, data: FeatureSet, batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced acceptance on `data`: the head's top token against the target's greedy one, from the target's
    features (`accept_step1`) and from the head's own prediction one step earlier (`accept_step2`)."""
    draft.eval()
    hits1 = hits2 = count = 0
    for start in range(0, len(data), batch_size):
        tokens = torch.from_numpy(data.tokens[start : start + batch_size])
        features = torch.from_numpy(data.features[start : start + batch_size].astype(np.float32))
        greedy = torch.from_numpy(data.target_argmax[start : start + batch_size, 1:])
        ids = tokens[:, 1:]
        batch, length = ids.shape
        past = draft.empty_cache(batch)
        mask = torch.ones(batch, length, dtype=torch.long)
        positions = torch.arange(length)[None].expand(batch, -1)
        logits, preds, _, _ = draft(ids, features[:, :-1], mask, positions, *past)
        hits1 += (draft.token_ids[logits.argmax(-1)] == greedy).sum().item()
        hidden2 = torch.cat([features[:, :1], preds[:, :-1]], 1)
        logits2, _, _, _ = draft(ids, hidden2, mask, positions, *past)
        hits2 += (draft.token_ids[logits2.argmax(-1)][:, 1:] == greedy[:, 1:]).sum().item()
        count += greedy.numel()
    return {"accept_step1": hits1 / count, "accept_step2": hits2 / max(1, count - len(data))}


def _load_features(output_dir: Path, config: EagleConfig, target_ov_dir: Path, tokenizer, texts=None):
    meta = output_dir / "features.json"
    wanted = {k: getattr(config, k) for k in DATA_KEYS}
    if meta.is_file() and json.loads(meta.read_text()) == wanted and (output_dir / HELD_OUT_FILE).is_file():
        return FeatureSet.load(output_dir / FEATURES_FILE), FeatureSet.load(output_dir / HELD_OUT_FILE)
    if not texts:
        raise ValueError(
            f"No cached features in {output_dir}: train_eagle needs the texts to draw them from (`texts=`)."
        )
    exact = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    target = OVModelForCausalLM.from_pretrained(target_ov_dir, ov_config=exact)
    train, held = build_feature_sets(target, tokenizer, config, texts)
    train.save(output_dir / FEATURES_FILE)
    held.save(output_dir / HELD_OUT_FILE)
    meta.write_text(json.dumps(wanted, indent=2) + "\n")
    return train, held


def train_eagle(
    output_dir: str | Path,
    target_dir: str | Path,
    target_ov_dir: str | Path,
    config: EagleConfig | None = None,
    texts: dict[str, str] | None = None,
) -> Path:
    """Trains an EAGLE head for the target and saves `eagle.pt` and `eagle_metrics.json` in `output_dir`.

    Args:
        output_dir: the run's folder (features, checkpoint, result); a run finding a checkpoint there resumes.
        target_dir: the target's transformers folder (embeddings, LM head and last layer initialise the head).
        target_ov_dir: the target exported by optimum-intel (stateful), which computes the features.
        config: the run's settings (default `EagleConfig()`).
        texts: `{name: text}` to draw windows and prompts from (required unless the run's features are cached).

    Returns:
        `Path`: `output_dir`.

    Raises:
        `ValueError`: without cached features or `texts`, or when the folder's checkpoint has other settings.
    """
    from transformers import AutoTokenizer

    config = config or EagleConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    train, held = _load_features(output_dir, config, Path(target_ov_dir), tokenizer, texts)
    logger.info("%d training windows, %d held-out windows of %d tokens", len(train), len(held), config.seq_len)

    target = load_target(target_dir)
    vocab_size = target.config.vocab_size
    token_ids = frequent_tokens(train, min(config.draft_vocab_size, vocab_size), vocab_size, [tokenizer.eos_token_id])
    coverage = float(np.isin(held.target_argmax, token_ids.numpy()).mean())
    logger.info("reduced vocabulary: %d tokens cover %.2f%% of held-out greedy tokens", len(token_ids), 100 * coverage)
    draft = EagleDraftModel.from_target(target, token_ids)
    del target
    for param in draft.frozen_parameters():
        param.requires_grad_(False)
    scale = float(np.sqrt(np.mean(train.features[: min(len(train), 64)].astype(np.float32) ** 2)))
    loop = TrainingLoop(
        draft,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        schedule="cosine_with_min_lr",
        schedule_kwargs={"min_lr_rate": 0.1},
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_minutes=config.max_minutes,
        checkpoint=output_dir / CHECKPOINT_FILE,
        save_every=config.save_every,
        settings={k: getattr(config, k) for k in RESUME_KEYS},
        seed=config.seed,
        desc="training EAGLE head",
    )
    if "before" not in loop.extras:
        loop.extras["before"] = evaluate(draft, held)
        logger.info("held-out acceptance before training: %s", loop.extras["before"])

    def loss_fn(step: int) -> torch.Tensor:
        rows = batch_indices(step, len(train), config.batch_size, config.seed)
        tokens = torch.from_numpy(train.tokens[rows])
        features = torch.from_numpy(train.features[rows].astype(np.float32))
        return _losses(draft, tokens, features, scale, config, noise=True)

    loop.run(loss_fn)
    after = evaluate(draft, held)
    logger.info("held-out acceptance after training: %s", after)
    torch.save(
        {"weights": draft.state_dict(), "token_ids": token_ids, "target": str(target_dir)}, output_dir / WEIGHTS_FILE
    )
    metrics = {
        "target": str(target_dir),
        "draft_vocab_size": len(token_ids),
        "held_out_vocab_coverage": coverage,
        "trainable_parameters": sum(p.numel() for p in loop.params),
        "before": loop.extras["before"],
        "after": after,
        "steps": loop.step,
        "schedule_steps": loop.total_steps,
        "resumed_from_step": loop.resumed_from,
        "stopped_by_time_budget": loop.step < config.max_steps,
        "training_minutes": round(loop.elapsed / 60, 2),
        "train_windows": len(train),
        "last_loss_mean20": float(np.mean(loop.losses[-20:])) if loop.losses else None,
        "config": asdict(config),
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return output_dir


def load_eagle(output_dir: str | Path, target_dir: str | Path | None = None) -> EagleDraftModel:
    """The trained head saved by `train_eagle` (the target's config gives its shape)."""
    from transformers import AutoConfig

    saved = torch.load(Path(output_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=False)
    draft = EagleDraftModel(AutoConfig.from_pretrained(target_dir or saved["target"]), saved["token_ids"])
    draft.load_state_dict(saved["weights"])
    return draft.eval()


def main(argv: list[str] | None = None) -> int:
    """`python -m optimum_dynexec.training.eagle --output <dir> --target <hf> --target-ov <ov> --texts a.txt ...`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output", required=True, help="the run's folder")
    parser.add_argument("--target", required=True, help="the target's transformers folder")
    parser.add_argument("--target-ov", required=True, help="the target exported to OpenVINO (stateful)")
    parser.add_argument("--texts", nargs="+", required=True, type=Path, help="plain-text files to train on")
    parser.add_argument("--minutes", type=float, default=EagleConfig.max_minutes, help="training time budget")
    parser.add_argument("--steps", type=int, default=EagleConfig.max_steps)
    parser.add_argument("--vocab", type=int, default=EagleConfig.draft_vocab_size, help="reduced vocabulary size")
    args = parser.parse_args(argv)
    setup_logging()
    config = EagleConfig(max_minutes=args.minutes, max_steps=args.steps, draft_vocab_size=args.vocab)
    texts = {str(path): path.read_text(encoding="utf-8") for path in args.texts}
    train_eagle(args.output, args.target, args.target_ov, config, texts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
