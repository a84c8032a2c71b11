"""KV-cache rollback for stateful OpenVINO causal LMs.

A stateful optimum-intel model keeps its KV cache inside the infer request, so transformers' assisted generation
cannot drop the rejected draft tokens (`'tuple' object has no attribute 'crop'`). `StatefulKVCache` is the small
stand-in that transformers' generation loop talks to: `crop(n)` trims every state tensor to its first `n` positions.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

SEQUENCE_AXIS = 2  # KV states are (batch, kv_heads, sequence, head_dim)


def trim_states(request: ov.InferRequest, length: int) -> None:
    """Keeps the first `length` positions of every KV state of `request` (a no-op for shorter states).

    Raises:
        `ValueError`: for a negative length.
    """
    if length < 0:
        raise ValueError(f"Cannot trim the KV cache to a negative length ({length}).")
    for state in request.query_state():
        data = state.state.data
        if data.shape[SEQUENCE_AXIS] > length:
            state.state = ov.Tensor(np.ascontiguousarray(data[:, :, :length]))


class StatefulKVCache:
    """What transformers' generation loop sees as `past_key_values` of a stateful OpenVINO model.

    It holds no tensors: the states live in the model's infer request, and the model tracks their length.
    """

    is_compileable = False  # transformers asks before trying torch.compile

    def __init__(self, model):
        self.model = model

    def __bool__(self) -> bool:  # optimum-intel tests `if past_key_values:` to tell the first step from the others
        return True

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.model._past_length

    def crop(self, max_length: int) -> None:
        """Drops every cached position from `max_length` on (a negative value drops that many from the end)."""
        if max_length < 0:
            max_length = self.model._past_length + max_length
        if max_length < self.model._past_length:
            trim_states(self.model.request, max_length)
            self.model._past_length = max_length
