"""One stateful OpenVINO causal LM (or EAGLE head) fed token by token, whose rollback never reads its states."""

from __future__ import annotations

import numpy as np
import openvino as ov

from .policies.width import pad_to_width
from .target_graph import LOGITS_TO_KEEP


class StatefulRunner:
    """Feeds tokens to one stateful OpenVINO causal LM and keeps track of what its states hold.

    Rolling back never reads the states (reading them converts the whole cache, ~50 ms for SmolLM2 in the default
    bf16/u8 mode): rejected positions stay in the cache and are masked out through `attention_mask`, with
    `position_ids` counting only the kept tokens. When masked positions pile up, the cache is compacted once.
    """

    single_steps = False  # a single-token call after wider ones re-shapes the request (see `VerifyWidth`)

    def __init__(self, model, max_masked: int = 256, own_request: bool = False):
        model.compile()
        self.model = model
        # own_request: a request of its own (its own states), e.g. one per sequence of a batch
        self.request = model.request.get_compiled_model().create_infer_request() if own_request else model.request
        self.names = {name for port in self.request.model_inputs for name in port.get_names()}
        self.max_masked = max_masked
        self.kept = np.zeros(0, dtype=np.int64)  # per cached position: 1 kept, 0 rolled back

    @property
    def length(self) -> int:
        """Tokens the cache holds that count (rolled-back positions excluded)."""
        return int(self.kept.sum())

    def reset(self) -> None:
        self.request.reset_state()
        self.kept = np.zeros(0, dtype=np.int64)

    def __call__(self, tokens: np.ndarray, keep: int | None = None) -> np.ndarray:
        """Logits `(len(tokens), vocab)` after feeding `tokens` `(n,)` on top of the cached ones (the last `keep`
        rows only when the model has the `logits_to_keep` input)."""
        return self.infer(tokens, keep)["logits"][0]

    def infer(self, tokens: np.ndarray, keep: int | None = None, width: int | None = None, **extra: np.ndarray):
        """All outputs after feeding `tokens` `(n,)` (and `extra` inputs, e.g. EAGLE's `hidden_states`); `keep`
        limits the logits to the last positions when the model allows it (`target_graph.add_logits_slice`).

        `width` pads the call to that many positions (a stable input shape is cheaper, see `VerifyWidth`): the
        padding repeats the last token, is masked out at once and never kept; outputs keep their padded length, the
        first `n` rows are the tokens'. Padding needs an `attention_mask` input.
        """
        n, past = len(tokens), self.length
        tokens, pad = pad_to_width(tokens, width if "attention_mask" in self.names else None)
        if pad and (keep is not None or extra):
            raise ValueError("A padded call returns every row and takes no extra inputs (keep and extra are unset).")
        self.kept = np.concatenate([self.kept, np.ones(n, dtype=np.int64), np.zeros(pad, dtype=np.int64)])
        feeds = {"input_ids": tokens[None].astype(np.int64), **extra}
        if LOGITS_TO_KEEP in self.names:
            feeds[LOGITS_TO_KEEP] = np.asarray([keep or n + pad], dtype=np.int64)
        if "attention_mask" in self.names:
            feeds["attention_mask"] = self.kept[None]
        if "position_ids" in self.names:
            feeds["position_ids"] = np.arange(past, past + n + pad, dtype=np.int64)[None]
        if "beam_idx" in self.names:
            feeds["beam_idx"] = np.zeros(1, dtype=np.int32)
        return self.request.infer(feeds, share_inputs=True)

    def trim(self, length: int) -> None:
        """Rolls back to the first `length` kept tokens."""
        drop = self.length - length
        if drop <= 0:
            return
        self.kept[np.flatnonzero(self.kept)[-drop:]] = 0
        if len(self.kept) - length > self.max_masked:
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self.kept)
        for state in self.request.query_state():
            data = state.state.data
            state.state = ov.Tensor(np.ascontiguousarray(data[:, :, keep]))
        self.kept = np.ones(len(keep), dtype=np.int64)
