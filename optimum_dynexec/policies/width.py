"""How wide the target's verification calls are: a stable input shape is cheaper than a narrow one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class VerifyWidth:
    """The number of input positions of the next verification call.

    OpenVINO's CPU plugin re-prepares every node of a dynamic-shape model when an input's token dimension changes:
    on SmolLM2-135M with 2 cores that costs ~5 ms, half a decoding step, while each extra position in a call costs
    ~1 ms. So a call that needs fewer positions than the last one is padded to the same width (the padding is
    masked out and never kept), and the width only shrinks after `patience` narrower calls in a row, to the widest
    of them. A wider call widens at once.

    Args:
        patience (`int`): narrower calls padded in a row before the width shrinks; `0` never pads.
    """

    patience: int = 2
    width: int = 0
    _streak: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be a non-negative number of calls, got {self.patience!r}.")

    def __call__(self, needed: int) -> int:
        """The width of a call that needs `needed` positions (at least `needed`)."""
        if needed <= 0:
            raise ValueError(f"A call feeds at least one position, got {needed}.")
        if needed >= self.width:
            self.width, self._streak = needed, []
            return needed
        self._streak.append(needed)
        if len(self._streak) > self.patience:
            self.width, self._streak = max(self._streak), []
        return self.width


def pad_to_width(tokens: np.ndarray, width: int | None) -> tuple[np.ndarray, int]:
    """`tokens` `(n,)` padded to `width` positions with the last token repeated, and the number of padding positions
    (`0` when `width` is unset or not wider)."""
    pad = max(0, (width or len(tokens)) - len(tokens))
    return (np.concatenate([tokens, np.repeat(tokens[-1:], pad)]) if pad else tokens), pad
