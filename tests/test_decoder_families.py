"""Every decoder family optimum-intel exports under the installed transformers speculates losslessly and rolls its KV
cache back exactly; the class optimum-intel picks for a family (Phi-3, GPTBigCode, the SSM families) is kept and
gains rollback; what cannot roll back says so, and so does an export optimum-intel refuses under this transformers.

Which families export is optimum-intel's export configs' business (their MIN/MAX_TRANSFORMERS_VERSION): the
parametrization reads them, so the same file run under another transformers sorts the families again (see
docs/transformers_pin.md)."""

import numpy as np
import pytest
import torch
import transformers
from conftest import F32
from optimum.exporters.tasks import TasksManager
from optimum.intel import OVModelForCausalLM as PlainOVModel
from optimum.intel.openvino.modeling_decoder import SSM_MODELS
from packaging.version import Version
from tiny_models import FAMILY_CONFIGS, make_tiny_decoder, save_tiny_decoder

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.paged_runner import PagedRunner
from optimum_dynexec.stateful_runner import StatefulRunner
from optimum_dynexec.target_graph import prepare_lean_model

EXACT = {**F32, "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
GREEDY = {"max_new_tokens": 16, "do_sample": False, "eos_token_id": None}


def export_cap(model_type: str) -> str | None:
    """The bound of optimum-intel's export config for `model_type` that the installed transformers breaks (e.g.
    `"<= 5.0"`), or `None` when optimum-intel exports it."""
    constructor = TasksManager.get_exporter_config_constructor(
        "openvino", model_type=model_type, task="text-generation-with-past", library_name="transformers"
    )
    export_config = getattr(constructor, "func", constructor)
    low = getattr(export_config, "MIN_TRANSFORMERS_VERSION", None)
    high = getattr(export_config, "MAX_TRANSFORMERS_VERSION", None)
    installed = Version(Version(transformers.__version__).base_version)
    if low is not None and installed < Version(str(low)):
        return f">= {low}"
    if high is not None and installed > Version(str(high)):
        return f"<= {high}"
    return None


CAPS = {t: export_cap(t) for t in sorted(FAMILY_CONFIGS)}
KV_FAMILIES = [t for t, cap in CAPS.items() if cap is None and t not in SSM_MODELS]
SSM_FAMILIES = [t for t, cap in CAPS.items() if cap is None and t in SSM_MODELS]
REFUSED = [(t, cap) for t, cap in CAPS.items() if cap is not None]


@pytest.fixture(scope="module", params=KV_FAMILIES)
def family(request, tmp_path_factory):
    """One export per family: `(folder, optimum-intel's model, ours)`, both in exact f32."""
    folder = make_tiny_decoder(tmp_path_factory.mktemp(request.param), request.param)
    plain = PlainOVModel.from_pretrained(folder, ov_config=EXACT)
    return folder, plain, OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)


def test_family_class_gains_rollback_and_stays_lossless(family):
    folder, plain, ours = family
    assert isinstance(ours, OVModelForCausalLM) and isinstance(ours, type(plain)), "optimum-intel's choice is kept"
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    expected = plain.generate(input_ids=ids, **GREEDY)
    assert torch.equal(ours.generate(input_ids=ids, **GREEDY, prompt_lookup_num_tokens=3), expected)
    assert ours.last_speculative_stats is not None
    # optimum-intel's own family class as a draft gains rollback too
    draft = PlainOVModel.from_pretrained(folder, ov_config=EXACT)
    got = ours.generate(input_ids=ids, **GREEDY, assistant_model=draft, assistant_confidence_threshold=0.0)
    assert torch.equal(got, expected) and isinstance(draft, OVModelForCausalLM)
    stats = ours.last_speculative_stats
    assert stats.proposed > 0 and stats.accepted == stats.proposed  # the target drafts itself


def test_rollback_equals_a_fresh_run(family):
    """Feeding a prefix, then rejected tokens, rolling back to the prefix and feeding the next token gives the logits
    of optimum-intel's model run afresh on the prefix and that token, through every rollback the loops use."""
    _, plain, ours = family
    prefix, rejected, token = [5, 9, 14, 5, 9, 14, 7], [33, 40, 41], 17
    ids = torch.tensor([prefix + [token]])
    expected = plain(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].numpy()
    prepare_lean_model(ours)  # the stateful request as the lean loop runs it (the paged form has its own graph)
    runners = {
        "paged form (shorter past_lens)": PagedRunner(ours),
        "stateful request (masked positions)": StatefulRunner(ours),
        "stateful request (compacted states)": StatefulRunner(ours, max_masked=0),
    }
    for name, runner in runners.items():
        runner.reset()
        runner(np.asarray(prefix))
        runner(np.asarray(rejected[:1]))
        runner(np.asarray(rejected[1:]))
        runner.trim(len(prefix))
        assert runner.length == len(prefix)
        got = runner(np.asarray([token]))[-1]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)
    # transformers' assisted loop (use_lean_loop=False) crops the states through the cache object
    out = ours(input_ids=torch.tensor([prefix + rejected]), attention_mask=torch.ones(1, len(prefix + rejected)))
    out.past_key_values.crop(len(prefix))
    mask = torch.ones(1, len(prefix) + 1, dtype=torch.int64)
    got = ours(input_ids=torch.tensor([[token]]), attention_mask=mask, past_key_values=out.past_key_values).logits
    np.testing.assert_allclose(got[0, -1].numpy(), expected, rtol=0, atol=1e-4, err_msg="StatefulKVCache.crop")


@pytest.mark.parametrize("model_type", SSM_FAMILIES)
def test_a_recurrent_state_decodes_plainly_and_refuses_to_speculate(tmp_path, model_type):
    folder = make_tiny_decoder(tmp_path, model_type)
    plain = PlainOVModel.from_pretrained(folder, ov_config=EXACT)
    ours = OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)
    assert isinstance(ours, OVModelForCausalLM) and isinstance(ours, type(plain)), "optimum-intel's choice is kept"
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    assert torch.equal(ours.generate(input_ids=ids, **GREEDY), plain.generate(input_ids=ids, **GREEDY))
    for role, drafter in (("the model", {"prompt_lookup_num_tokens": 3}), ("the draft", {"assistant_model": plain})):
        with pytest.raises(ValueError, match=rf"{role}, a {model_type}, keeps a recurrent \(SSM\) state"):
            ours.generate(input_ids=ids, **GREEDY, **drafter)


@pytest.mark.parametrize("model_type, cap", REFUSED)
def test_an_export_refused_under_this_transformers_names_the_family_and_the_cap(tmp_path, model_type, cap):
    hf = save_tiny_decoder(tmp_path, model_type)
    with pytest.raises(ValueError) as refused:
        OVModelForCausalLM.from_pretrained(hf, export=True, compile=False)
    message = str(refused.value)
    for part in (f"the {model_type} family", f"transformers {transformers.__version__}", cap.split()[-1]):
        assert part in message, f"{part!r} is missing from: {message}"


def test_a_stateless_export_refuses_to_speculate(tmp_path):
    folder = make_tiny_decoder(tmp_path / "stateless", "llama", stateful=False)
    model = OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 14, 5, 9]])
    with pytest.raises(ValueError, match="stateful export"):
        model.generate(input_ids=ids, max_new_tokens=4, prompt_lookup_num_tokens=3)
    assert model.generate(input_ids=ids, max_new_tokens=4).shape == (1, 9)  # plain decoding still works
