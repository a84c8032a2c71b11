"""The EAGLE draft's training data: token windows, the target's greedy continuations, and the target's features.

Text comes from the caller's `{name: text}` (the reference recipe passes Jane Austen's novels without the speculative
benchmark's passages), with the last `eval_fraction` of every text held out. Part of the windows are the target's own
greedy continuations of text prompts, since the draft has to predict exactly those.
Features are the target's final hidden states (the LM head's input), read from the exported OpenVINO target at exact
f32, with the target's greedy token at every position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..speculative_loop import StatefulRunner, speculative_greedy
from ..target_graph import HIDDEN_OUTPUT, prepare_lean_model
from .text_data import sample_windows, token_splits

logger = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Windows of tokens with the target's features and greedy tokens at every position."""

    tokens: np.ndarray  # (n, length) int64
    features: np.ndarray  # (n, length, hidden) float16
    target_argmax: np.ndarray  # (n, length) int64: the target's greedy next token after each position

    def __len__(self) -> int:
        return len(self.tokens)

    def save(self, path) -> None:
        np.savez(path, tokens=self.tokens, features=self.features, target_argmax=self.target_argmax)

    @classmethod
    def load(cls, path) -> "FeatureSet":
        with np.load(path) as data:
            return cls(data["tokens"], data["features"], data["target_argmax"])

    @classmethod
    def concat(cls, *sets: "FeatureSet") -> "FeatureSet":
        return cls(*(np.concatenate([getattr(s, f) for s in sets]) for f in ("tokens", "features", "target_argmax")))


def greedy_continuations(target, prompts: np.ndarray, new_tokens: int, desc: str = "target continuations"):
    """The target's greedy continuation of every prompt row: `(n, prompt + new_tokens)` (no stop at EOS)."""
    rows = []
    for prompt in tqdm(prompts, desc=desc, unit="prompt"):
        seq, _ = speculative_greedy(target, prompt[None], new_tokens, prompt_lookup_num_tokens=5)
        rows.append(seq[0])
    return np.stack(rows)


def collect_features(target, windows: np.ndarray, desc: str = "target features") -> FeatureSet:
    """Runs the OpenVINO target over every window: its hidden states (float16) and greedy tokens per position."""
    prepare_lean_model(target, hidden_states=True)
    runner = StatefulRunner(target)
    features, argmax = [], []
    for window in tqdm(windows, desc=desc, unit="window"):
        runner.reset()
        out = runner.infer(window)
        features.append(out[HIDDEN_OUTPUT][0].astype(np.float16))
        argmax.append(out["logits"][0].argmax(-1))
    runner.reset()
    return FeatureSet(windows.astype(np.int64), np.stack(features), np.stack(argmax).astype(np.int64))


def build_feature_sets(
    target, tokenizer, config, texts: dict[str, str] | None = None
) -> tuple[FeatureSet, FeatureSet]:
    """Training and held-out `FeatureSet`s for an `EagleConfig`: text windows and target continuations.

    `texts` (`{name: text}`) is the material windows and prompts are cut from. Windows and prompts start with the
    tokens the tokenizer puts before a text (Gemma's BOS, none for SmolLM2), as the prompts the head drafts for do.
    """
    rng = np.random.default_rng(config.seed)
    train_ids, held_ids = token_splits(tokenizer, texts, config.eval_fraction)
    length, prompt = config.seq_len, config.seq_len - config.continuation_tokens
    start = np.asarray(tokenizer("").input_ids, dtype=np.int64)
    sets = []
    for ids, n_text, n_gen, tag in (
        (train_ids, config.text_windows, config.continuation_windows, "train"),
        (held_ids, config.eval_windows, config.eval_windows, "held-out"),
    ):
        text = _starting_with(start, sample_windows(ids, n_text, length, rng))
        prompts = _starting_with(start, sample_windows(ids, n_gen, prompt, rng))
        generated = greedy_continuations(target, prompts, config.continuation_tokens, desc=f"{tag} continuations")
        sets.append(collect_features(target, np.concatenate([text, generated]), desc=f"{tag} features"))
    return sets[0], sets[1]


def _starting_with(start: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """`windows` `(n, L)` with their first `len(start)` tokens replaced by `start` (the length stays `L`)."""
    windows = windows.copy()
    windows[:, : len(start)] = start
    return windows
