"""Graph edits the lean speculative loop makes on a loaded OpenVINO causal LM (never on the exported IR).

- `hidden_states` output: the LM head's input, `(batch, length, hidden)`, which an EAGLE head reads.
- `logits_to_keep` input (stateful graph): the LM head runs on the last `logits_to_keep` positions only. A prompt
  of 300 tokens then costs one row of logits instead of 300 (SmolLM2's head is a fifth of its weights, and 300 rows
  of 49152 float logits are 59 MB to copy). This package's `OVModelForCausalLM.forward` feeds the full length, so plain
  decoding through the edited graph returns the same logits as optimum-intel's.
- `logits_indices` input (paged graph): the LM head runs on the positions listed only, so that a call of several
  sequences computes the logits it reads and no more (the last position of each prompt in a batch's prefill: 4
  prompts of 215 tokens take 0.50 s instead of 0.64 s on SmolLM2-135M).
"""

from __future__ import annotations

import logging

import numpy as np
import openvino as ov
from openvino import opset13 as ops

logger = logging.getLogger(__name__)

HIDDEN_OUTPUT = "hidden_states"
LOGITS_TO_KEEP = "logits_to_keep"
LOGITS_INDICES = "logits_indices"
_HEAD_FEEDS = (f"{LOGITS_TO_KEEP}/slice", f"{LOGITS_INDICES}/gather")  # the nodes this module puts before the head


# element-wise ops a family may apply to the LM head's output, each position on its own (a cast, cohere's logit scale,
# gemma2's soft-capping `tanh(x / cap) * cap`): the head is found behind them, and slicing positions before them is
# the same as after
_LOGIT_TRANSFORMS = {"Convert", "Multiply", "Divide", "Tanh"}


def _lm_head(model: ov.Model):
    """The MatMul that produces `logits` (behind element-wise transforms by constants)."""
    node = model.output("logits").get_node().input_value(0).get_node()
    while node.get_type_name() in _LOGIT_TRANSFORMS:
        inputs = [value.get_node() for value in node.input_values()]
        computed = [n for n in inputs if not _is_constant(n)]
        if len(computed) != 1:  # two computed operands: not a transform of one tensor by constants
            break
        node = computed[0]
    if node.get_type_name() != "MatMul":
        raise ValueError(f"Cannot find the LM head of this model: its logits come from a {node.get_type_name()}.")
    return node


def _is_constant(node) -> bool:
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _head_input(model: ov.Model):
    """The LM head's input port and the output feeding it (skipping a Slice or Gather this module added)."""
    port = _lm_head(model).input(0)
    source = port.get_source_output()
    if source.get_node().get_friendly_name() in _HEAD_FEEDS:
        source = source.get_node().input_value(0)
    while source.get_node().get_type_name() == "Convert":
        source = source.get_node().input_value(0)
    return port, source


def add_hidden_output(model: ov.Model) -> bool:
    """Adds the LM head's input as output `hidden_states`; `False` when the model already has it.

    Raises:
        `ValueError`: when `logits` is not produced by a MatMul (an LM head).
    """
    if any(HIDDEN_OUTPUT in out.get_names() for out in model.outputs):
        return False
    _, hidden = _head_input(model)
    out = model.add_outputs([hidden])[0]
    out.get_tensor().set_names({HIDDEN_OUTPUT})
    return True


def add_logits_slice(model: ov.Model, axis: int = 1) -> bool:
    """Adds input `logits_to_keep` (`(1,)` int64): the LM head runs on that many last positions (along `axis`, the
    token axis) only. `False` when the model already has it."""
    if any(LOGITS_TO_KEEP in inp.get_names() for inp in model.inputs):
        return False
    port, _ = _head_input(model)
    source = port.get_source_output()
    keep = ops.parameter([1], ov.Type.i64, name=LOGITS_TO_KEEP)
    keep.output(0).get_tensor().set_names({LOGITS_TO_KEEP})
    start = ops.negative(keep)
    stop = ops.constant(np.array([np.iinfo(np.int64).max]))
    one = ops.constant(np.array([1], dtype=np.int64))
    axes = ops.constant(np.array([axis], dtype=np.int64))
    sliced = ops.slice(source, start, stop, one, axes, name=f"{LOGITS_TO_KEEP}/slice")
    port.replace_source_output(sliced.output(0))
    model.add_parameters([keep])
    model.validate_nodes_and_infer_types()
    return True


def add_logits_gather(model: ov.Model, axis: int = 0) -> bool:
    """Adds input `logits_indices` (`(k,)` int64): the LM head runs on those positions (along `axis`, the token axis)
    only, in that order; a `logits_to_keep` slice the graph had (`add_logits_slice`) goes. `False` when the model
    already has it."""
    if any(LOGITS_INDICES in inp.get_names() for inp in model.inputs):
        return False
    port, _ = _head_input(model)
    if port.get_source_output().get_node().get_friendly_name() == f"{LOGITS_TO_KEEP}/slice":
        port.replace_source_output(port.get_source_output().get_node().input_value(0))
        model.remove_parameter(next(p for p in model.get_parameters() if LOGITS_TO_KEEP in p.output(0).get_names()))
    indices = ops.parameter([-1], ov.Type.i64, name=LOGITS_INDICES)
    indices.output(0).get_tensor().set_names({LOGITS_INDICES})
    axes = ops.constant(np.array(axis, dtype=np.int64))
    gathered = ops.gather(port.get_source_output(), indices, axes, name=f"{LOGITS_INDICES}/gather")
    port.replace_source_output(gathered.output(0))
    model.add_parameters([indices])
    model.validate_nodes_and_infer_types()
    return True


def prepare_lean_model(model, hidden_states: bool = False) -> None:
    """Gives a loaded `OVModelForCausalLM` (this package's) the `logits_to_keep` input, and the `hidden_states`
    output if asked, recompiling it once when the graph changes."""
    changed = add_logits_slice(model.model)
    if hidden_states:
        changed = add_hidden_output(model.model) or changed
    if changed:
        logger.info("recompiling %s with the lean loop's outputs", type(model).__name__)
        model.request = None
    model.compile()


def has_logits_slice(model) -> bool:
    return any(LOGITS_TO_KEEP in inp.get_names() for inp in model.model.inputs)
