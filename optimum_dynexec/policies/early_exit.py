"""Exit decisions for early-exit classifiers, from logits alone."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..configuration import EXIT_CRITERIA, validate_threshold


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def exit_scores(logits: np.ndarray, criterion: str = "confidence") -> np.ndarray:
    """How sure each exit head is, in `[0, 1]`.

    Args:
        logits (`np.ndarray` of shape `(batch, num_labels)`): an exit head's logits.
        criterion (`str`): `"confidence"` (top probability) or `"entropy"` (1 - entropy / log(num_labels)).

    Returns:
        `np.ndarray` of shape `(batch,)`.
    """
    probs = softmax(logits)
    if criterion == "confidence":
        return probs.max(-1)
    if criterion == "entropy":
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(-1)
        return 1.0 - entropy / np.log(probs.shape[-1])
    raise ValueError(f"Unknown exit criterion {criterion!r}; choose one of {EXIT_CRITERIA}.")


@dataclass
class ExitPolicy:
    """Exit a sample once its head's score reaches `threshold`."""

    threshold: float
    criterion: str = "confidence"

    def __post_init__(self):
        validate_threshold(self.threshold)
        if self.criterion not in EXIT_CRITERIA:
            raise ValueError(f"Unknown exit criterion {self.criterion!r}; choose one of {EXIT_CRITERIA}.")

    def should_exit(self, logits: np.ndarray) -> np.ndarray:
        """Boolean mask `(batch,)`: which samples leave after this head."""
        return exit_scores(logits, self.criterion) >= self.threshold


def simulate_exits(
    layer_logits: np.ndarray, threshold: float, criterion: str = "confidence"
) -> tuple[np.ndarray, np.ndarray]:
    """Replays the exit rule on every head's logits, as the runtime would decide.

    Args:
        layer_logits (`np.ndarray` of shape `(num_exits + 1, batch, num_labels)`): the logits of every exit head in
            order, the final classifier last (it always exits).
        threshold (`float`), criterion (`str`): the rule, as in `ExitPolicy`.

    Returns:
        `(exit_index, logits)`: the 0-based exit each sample takes `(batch,)` and the logits it leaves with
        `(batch, num_labels)`.
    """
    policy = ExitPolicy(threshold, criterion)
    n_exits, batch = layer_logits.shape[:2]
    exit_index = np.full(batch, n_exits - 1)
    undecided = np.ones(batch, dtype=bool)
    for k in range(n_exits - 1):
        leave = undecided & policy.should_exit(layer_logits[k])
        exit_index[leave] = k
        undecided &= ~leave
    return exit_index, layer_logits[exit_index, np.arange(batch)]


def calibrate_threshold(
    layer_logits: np.ndarray,
    target_agreement: float,
    criterion: str = "confidence",
    candidates: np.ndarray | None = None,
) -> tuple[float, dict]:
    """The loosest threshold whose predictions agree with the final classifier's on at least `target_agreement`.

    Args:
        layer_logits (`np.ndarray` of shape `(num_exits + 1, batch, num_labels)`): held-out logits of every head,
            the final classifier last; its argmax is the reference.
        target_agreement (`float`): in `(0, 1]`.
        criterion (`str`): the exit score.
        candidates (`np.ndarray`, *optional*): thresholds to try; by default every observed score plus 1.0.

    Returns:
        `(threshold, stats)` with `stats` holding `agreement` and `num_samples`.
        When no threshold below 1 meets the target, 1.0 is returned (exits only on certain heads).
    """
    if not 0.0 < target_agreement <= 1.0:
        raise ValueError(f"target_agreement must be in (0, 1], got {target_agreement}.")
    reference = layer_logits[-1].argmax(-1)
    if candidates is None:
        scores = np.concatenate([exit_scores(x, criterion) for x in layer_logits[:-1]])
        candidates = np.unique(np.round(np.concatenate([scores, [1.0]]), 6))
    candidates = np.sort(np.asarray(candidates, dtype=np.float64))

    # Agreement is close to monotone in the threshold: bisect on the sorted candidates, then step up past any dip.
    def agreement(t: float) -> float:
        return float((simulate_exits(layer_logits, t, criterion)[1].argmax(-1) == reference).mean())

    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if agreement(candidates[mid]) >= target_agreement:
            hi = mid
        else:
            lo = mid + 1
    while lo < len(candidates) - 1 and agreement(candidates[lo]) < target_agreement:
        lo += 1
    threshold = float(candidates[lo])
    logits = simulate_exits(layer_logits, threshold, criterion)[1]
    stats = {
        "agreement": float((logits.argmax(-1) == reference).mean()),
        "num_samples": int(layer_logits.shape[1]),
    }
    return threshold, stats


def expected_cost(exit_index: np.ndarray, chosen: list[int], segment_costs: np.ndarray, call_overhead: float) -> float:
    """Mean cost per sample when exits sit after the candidate positions `chosen`.

    Args:
        exit_index (`np.ndarray` of shape `(batch,)`): the exit each sample takes among `chosen` plus the final one.
        chosen (`list[int]`): 0-based indices of the candidate exits kept, increasing.
        segment_costs (`np.ndarray` of shape `(num_candidates + 1,)`): the compute cost of the layers between
            consecutive candidate exits (the first includes the embeddings), without the per-call overhead.
        call_overhead (`float`): the fixed cost of running one segment.
    """
    ends = np.asarray([*chosen, len(segment_costs) - 1])
    cumulative = np.cumsum(segment_costs)
    return float((cumulative[ends[exit_index]] + call_overhead * (exit_index + 1)).mean())


def select_exits(
    layer_logits: np.ndarray,
    segment_costs: np.ndarray,
    call_overhead: float,
    target_agreement: float,
    criterion: str = "confidence",
) -> tuple[list[int], float, dict]:
    """Picks which candidate exits to keep: the subset whose calibrated threshold gives the lowest expected cost.

    Every exit costs a segment call, so an exit that few samples take can cost more than it saves. Each non-empty
    subset of candidates is calibrated to `target_agreement` and priced with `expected_cost`.

    Args:
        layer_logits (`np.ndarray` of shape `(num_candidates + 1, batch, num_labels)`): held-out logits of every
            candidate head, the final classifier last.
        segment_costs, call_overhead: the cost model, as in `expected_cost`.
        target_agreement (`float`), criterion (`str`): as in `calibrate_threshold`.

    Returns:
        `(chosen, threshold, stats)`: 0-based candidate indices kept, their threshold, and calibration stats plus
        `expected_cost` and `expected_cost_full` (the cost model's price of the full model).
    """
    n = layer_logits.shape[0] - 1
    if n > 15:
        raise ValueError(f"Exit selection searches every subset; {n} candidates are too many, give --exit-layers.")
    best = None
    for r in range(1, n + 1):
        for chosen in itertools.combinations(range(n), r):
            subset = layer_logits[[*chosen, n]]
            threshold, stats = calibrate_threshold(subset, target_agreement, criterion)
            cost = expected_cost(
                simulate_exits(subset, threshold, criterion)[0], list(chosen), segment_costs, call_overhead
            )
            if best is None or cost < best[0]:
                best = (cost, list(chosen), threshold, stats)
    cost, chosen, threshold, stats = best
    stats = {**stats, "expected_cost": cost, "expected_cost_full": float(segment_costs.sum() + call_overhead)}
    return chosen, threshold, stats
