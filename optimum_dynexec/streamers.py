"""Streaming a batch: one streamer per row.

transformers' streamers take one sequence (`TextStreamer` refuses a batch); plain batch decoding hands a streamer a
`(batch,)` tensor per step. The speculative batch loop advances every row by its own number of accepted tokens, so it
streams each row to a streamer of its own, and ends a row's stream as soon as that row stops.
"""

from __future__ import annotations

import torch
from transformers.generation.streamers import BaseStreamer


class RowStreamers(BaseStreamer):
    """A batch's streamers, one per row, passed to `generate(streamer=...)` like a single streamer.

    With the speculative batch loop (`OVModelForCausalLM.generate` on a batch with a drafter), row `i`'s streamer
    receives its (left-padded) prompt as a `(1, width)` tensor, then each block of its accepted tokens as a 1-D
    tensor, and `end()` right after its last token (its EOS, stop string, criterion or length). Plain batch decoding
    (transformers') gives row `i` its token of every step, including the padding after the row finished, and ends
    every row at the end of the call.

    Args:
        streamers (`list[BaseStreamer]`): one per row, in the batch's order (e.g. `TextIteratorStreamer`s).

    Example:
        >>> streams = [TextIteratorStreamer(tokenizer, skip_prompt=True) for _ in prompts]
        >>> model.generate(**batch, streamer=RowStreamers(streams), prompt_lookup_num_tokens=5)  # on a thread
    """

    def __init__(self, streamers: list[BaseStreamer]):
        if not streamers:
            raise ValueError("RowStreamers needs one streamer per row, got none.")
        self.rows = list(streamers)
        self._ended = [False] * len(self.rows)

    def put(self, value: torch.Tensor) -> None:
        """A batch's `(rows, width)` prompts or `(rows,)` tokens of one step, split over the rows (a single row's 1-D
        block goes to that row)."""
        if len(self.rows) == 1 and value.ndim == 1:
            self.rows[0].put(value)
            return
        if value.shape[0] != len(self.rows):
            raise ValueError(f"RowStreamers holds {len(self.rows)} streamers, got a batch of {value.shape[0]} rows.")
        for i, streamer in enumerate(self.rows):
            if not self._ended[i]:
                streamer.put(value[i : i + 1])

    def put_row(self, row: int, tokens: torch.Tensor) -> None:
        """Row `row`'s next accepted tokens (1-D)."""
        if not self._ended[row]:
            self.rows[row].put(tokens)

    def end_row(self, row: int) -> None:
        """Row `row` stopped: its streamer ends now (once)."""
        if not self._ended[row]:
            self._ended[row] = True
            self.rows[row].end()

    def end(self) -> None:
        """Ends every row not ended yet."""
        for i in range(len(self.rows)):
            self.end_row(i)
