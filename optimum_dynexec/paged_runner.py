"""The target of the lean speculative loop as a paged-attention model: cheaper verification, free rollback.

A stateful OpenVINO LM appends every fed token to its internal KV states, so a rejected draft stays in them (masked
out, see `speculative_loop.StatefulRunner`), and its attention over several new tokens gets slower as the cache
grows: on SmolLM2-135M with 2 cores a 6-token verification costs ~1.5x a one-token step there. OpenVINO's
`paged_attention_transformation` (what OpenVINO GenAI runs its speculative pipelines on) turns the same graph into
one whose KV cache is a set of blocks the caller owns and whose attention kernel is built for several new tokens
per call. Rolling back is then only a shorter `past_lens`.

The paged model is made from the loaded target's graph, compiled with its device and `ov_config`, and cached on the
target; the exported IR and plain decoding (the stateful request) are untouched.
"""

from __future__ import annotations

import logging

import numpy as np
import openvino as ov

from .policies.width import pad_to_width
from .target_graph import HIDDEN_OUTPUT, LOGITS_INDICES, add_hidden_output, add_logits_gather

logger = logging.getLogger(__name__)

BLOCK_SIZE = 32  # tokens per KV block of OpenVINO's CPU paged-attention kernel
_GROW_BLOCKS = 16  # the cache grows by at least this many blocks (512 tokens) at a time


def build_paged_model(model: ov.Model, hidden_states: bool = False) -> ov.Model:
    """A paged-attention copy of a stateful causal LM graph, with `logits_indices` (and `hidden_states` if asked).

    Raises:
        `ValueError`: when the graph has no paged-attention form (no KV states, or no LM head found).
    """
    from openvino._offline_transformations import paged_attention_transformation

    paged = model.clone()
    try:
        paged_attention_transformation(paged)
    except RuntimeError as error:
        raise ValueError(f"This model has no paged-attention form: {error}") from error
    if not any(name.startswith("key_cache.") for port in paged.inputs for name in port.get_names()):
        raise ValueError("This model has no paged-attention form: it has no KV cache.")
    add_logits_gather(paged, axis=0)  # the paged graph lays tokens out along axis 0, (tokens, 1, hidden)
    if hidden_states:
        add_hidden_output(paged)
    return paged


def paged_config(core: ov.Core, device: str, ov_config: dict | None) -> dict:
    """The target's `ov_config` for its paged form, with a KV cache that rolls back exactly.

    The CPU kernel quantizes an integer key cache per channel over each block by default, so positions written and
    rolled back would leave their trace in the kept ones' scales. An integer cache is therefore quantized per token
    (`KEY_CACHE_QUANT_MODE=BY_TOKEN`); without a cache precision in `ov_config`, the cache is a float one at the
    inference precision.

    Raises:
        `ValueError`: when `ov_config` asks for an integer KV cache quantized per channel.
    """
    config = dict(ov_config or {})
    asked = [config[k] for k in ("KV_CACHE_PRECISION", "KEY_CACHE_PRECISION", "VALUE_CACHE_PRECISION") if k in config]
    if any(_type_name(p).startswith(("u", "i")) for p in asked):
        mode = str(config.get("KEY_CACHE_QUANT_MODE", "BY_TOKEN")).upper().split(".")[-1]
        if mode != "BY_TOKEN":
            raise ValueError(
                f"The paged form rolls back exactly with a float KV cache or one quantized per token, got {asked} "
                f"with KEY_CACHE_QUANT_MODE={mode}"
            )
        config["KEY_CACHE_QUANT_MODE"] = "BY_TOKEN"
    elif not asked:
        precision = config.get("INFERENCE_PRECISION_HINT") or core.get_property(device, "INFERENCE_PRECISION_HINT")
        config["KV_CACHE_PRECISION"] = _type_name(precision)
    return config


def _type_name(precision) -> str:
    return precision.get_type_name() if isinstance(precision, ov.Type) else str(precision).lower()


class PagedForm:
    """The paged form of one target for one device and `ov_config`: its graph, and its infer requests by role.

    Each role is a compilation of its own: OpenVINO's CPU plugin re-prepares a compiled graph whenever the token
    dimension changes (~5 ms on SmolLM2-135M), so verification calls (several tokens, see `VerifyWidth`) and
    single-token steps each keep their own shapes. The requests share one KV cache, `cache`, laid out in `blocks`
    blocks; every request reads and writes those very tensors.
    """

    def __init__(self, key: tuple, target, hidden_states: bool):
        self.key, self.hidden_states, self.device = key, hidden_states, target._device
        self.requests: dict[str, ov.InferRequest] = {}
        self.cache: dict[str, ov.Tensor] = {}
        self.blocks = 0
        self.error: ValueError | None = None
        self.core = ov.Core()
        # the KV inputs as compiled (the plugin fixes the block layout): name, type, shape
        self.caches: list[tuple[str, ov.Type, ov.PartialShape]] = []
        # the tokens whose keys and values one sequence laid out from block 0 (`PagedRunner`) left in the cache, so
        # that the next call can resume after the prefix it shares with them; a batch's layout clears it (`forget`)
        self.held: list[int] = []
        try:
            self.config = paged_config(self.core, target._device, target.ov_config)
            self.model = build_paged_model(target.model, hidden_states)
        except ValueError as error:
            self.error = error

    def request(self, role: str) -> ov.InferRequest:
        """The infer request for `role` (`"verify"` or `"step"`), compiled the first time it is asked for.

        Raises:
            `ValueError`: when the target has no paged form (remembered, so later calls fail at once).
        """
        if self.error is not None:
            raise self.error
        if role not in self.requests:
            logger.info("compiling the paged-attention form of the target (%s calls)", role)
            try:
                compiled = self.core.compile_model(self.model, self.device, self.config)
            except RuntimeError as error:
                self.error = ValueError(f"OpenVINO cannot compile this model's paged-attention form: {error}")
                raise self.error from error
            request = compiled.create_infer_request()
            if not self.caches:
                self.caches = [
                    (port.any_name, port.get_element_type(), port.get_partial_shape())
                    for port in compiled.inputs
                    if port.any_name.startswith(("key_cache.", "value_cache."))
                ]
            for name, tensor in self.cache.items():
                request.set_tensor(name, tensor)
            self.requests[role] = request
        return self.requests[role]

    def forget(self) -> None:
        """The cache no longer holds one sequence's tokens from block 0 (a batch wrote its own layout)."""
        self.held = []

    def reserve(self, blocks: int) -> None:
        """Grows the shared cache to at least `blocks` blocks, keeping its content, and hands it to every request."""
        if blocks <= self.blocks:
            return
        blocks = max(blocks, self.blocks + _GROW_BLOCKS)
        for name, element_type, shape in self.caches:
            shape = ov.PartialShape(shape)
            shape[0] = blocks
            tensor = ov.Tensor(element_type, shape.get_shape())
            if self.blocks:
                tensor.data[: self.blocks] = self.cache[name].data
            tensor.data[self.blocks :] = 0  # never read past the length, but no stale NaN either
            self.cache[name] = tensor
            for request in self.requests.values():
                request.set_tensor(name, tensor)
        self.blocks = blocks


def paged_form(target, hidden_states: bool = False) -> PagedForm:
    """The paged form of `target`, made once per target, device and `ov_config` (remade with the `hidden_states`
    output the first time it is asked for)."""
    key = (target._device, repr(sorted((target.ov_config or {}).items())))
    form = getattr(target, "_dynexec_paged", None)
    if form is None or form.key != key or (hidden_states and not form.hidden_states and form.error is None):
        form = PagedForm(key, target, hidden_states)
        target._dynexec_paged = form
    return form


class PagedRunner:
    """Feeds tokens to the paged form of a causal LM; the same interface as `speculative_loop.StatefulRunner`.

    The cache is one sequence laid out in blocks `0, 1, 2, ...`; `trim` only shortens the length the next call
    attends to, so rejected and padding positions are simply overwritten. Single-token calls go through a second
    compilation of the form (`step_request`), so that they do not re-shape the one verifying several tokens.

    Args:
        target (`OVModelForCausalLM`): the model whose paged form runs.
        hidden_states (`bool`): also return the last hidden states (for EAGLE).
        single_steps (`bool`): give single-token calls a compiled request of their own (the weights are shared,
            the compiled graph is not: a few tens of MB for SmolLM2-135M).

    Raises:
        `ValueError`: when the target has no paged form.
    """

    def __init__(self, target, hidden_states: bool = False, single_steps: bool = True):
        self.form = paged_form(target, hidden_states)
        self.request = self.form.request("verify")
        self.step_request = self.form.request("step") if single_steps else None
        self.names = {name for port in self.request.model_inputs for name in port.get_names()}
        self.has_hidden = any(HIDDEN_OUTPUT in port.get_names() for port in self.request.model_outputs)
        self._length = 0

    @property
    def single_steps(self) -> bool:
        """Whether a single-token call is cheap whatever the width of the calls before it."""
        return self.step_request is not None

    @property
    def blocks(self) -> int:
        """Cache blocks allocated (shared by every runner of the same form)."""
        return self.form.blocks

    @property
    def length(self) -> int:
        """Tokens the cache holds."""
        return self._length

    def reset(self) -> None:
        self._length = 0

    def resume(self, tokens: list[int]) -> int:
        """Starts a call on `tokens` after the longest prefix of them that the cache still holds from an earlier call
        (a repeated prompt, or a conversation that goes on), keeping at least the last token to feed; returns how
        many tokens are reused (0: the call starts afresh)."""
        held, limit = self.form.held, min(len(self.form.held), len(tokens) - 1)
        same = 0
        while same < limit and held[same] == tokens[same]:
            same += 1
        self._length = same
        return same

    def __call__(self, tokens: np.ndarray, keep: int | None = None) -> np.ndarray:
        return self.infer(tokens, keep)["logits"][0]

    def infer(self, tokens: np.ndarray, keep: int | None = None, width: int | None = None, **extra: np.ndarray):
        """Outputs after feeding `tokens` `(n,)` on top of the cached ones, as `StatefulRunner.infer`: `logits`
        `(1, rows, vocab)` (the last `keep` rows, or all), and `hidden_states` `(1, n, hidden)` when compiled with it.
        `width` pads the call to that many positions (the padding is overwritten later)."""
        if extra:
            raise ValueError(f"The paged target takes no extra inputs, got {sorted(extra)}.")
        n, past = len(tokens), self._length
        tokens, pad = pad_to_width(tokens, width)
        if pad and keep is not None:
            raise ValueError("A padded call returns every row (keep is unset).")
        total = past + n + pad
        blocks = -(-total // BLOCK_SIZE)
        self.form.reserve(blocks)
        feeds = {
            "input_ids": np.asarray(tokens, dtype=np.int64),
            "position_ids": np.arange(past, total, dtype=np.int64),
            "past_lens": np.asarray([past], dtype=np.int32),
            "subsequence_begins": np.asarray([0, n + pad], dtype=np.int32),
            "block_indices": np.arange(blocks, dtype=np.int32),
            "block_indices_begins": np.asarray([0, blocks], dtype=np.int32),
            "max_context_len": np.asarray(total, dtype=np.int32),
            LOGITS_INDICES: np.arange(n + pad - (keep or n + pad), n + pad, dtype=np.int64),
        }
        request = self.step_request if n + pad == 1 and self.step_request is not None else self.request
        out = request.infer({k: v for k, v in feeds.items() if k in self.names}, share_inputs=True)
        self._length = past + n
        held = self.form.held
        del held[past:]
        held.extend(int(t) for t in tokens[:n])
        result = {"logits": out["logits"][:, 0][None]}
        if self.has_hidden:
            result[HIDDEN_OUTPUT] = out[HIDDEN_OUTPUT][:, 0][None]
        return result

    def trim(self, length: int) -> None:
        """Rolls back to the first `length` tokens."""
        self._length = min(self._length, length)
        del self.form.held[self._length :]
