"""Every decoder family optimum-intel exports under the pinned stack speculates losslessly; the class optimum-intel
picks for a family (Phi-3, GPTBigCode) is kept and gains rollback; what cannot roll back says so."""

import pytest
import torch
from conftest import F32
from optimum.intel import OVModelForCausalLM as PlainOVModel
from tiny_models import FAMILY_CONFIGS, make_tiny_decoder

from optimum_dynexec import OVModelForCausalLM

EXACT = {**F32, "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@pytest.mark.parametrize("model_type", sorted(FAMILY_CONFIGS))
def test_family_class_gains_rollback_and_stays_lossless(tmp_path, model_type):
    folder = make_tiny_decoder(tmp_path / model_type, model_type)
    plain = PlainOVModel.from_pretrained(folder, ov_config=EXACT)
    ours = OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)
    assert isinstance(ours, OVModelForCausalLM) and isinstance(ours, type(plain)), "optimum-intel's choice is kept"
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    settings = {"max_new_tokens": 16, "do_sample": False, "eos_token_id": None}
    expected = plain.generate(input_ids=ids, **settings)
    assert torch.equal(ours.generate(input_ids=ids, **settings, prompt_lookup_num_tokens=3), expected)
    assert ours.last_speculative_stats is not None
    # optimum-intel's own family class as a draft gains rollback too
    draft = PlainOVModel.from_pretrained(folder, ov_config=EXACT)
    got = ours.generate(input_ids=ids, **settings, assistant_model=draft, assistant_confidence_threshold=0.0)
    assert torch.equal(got, expected) and isinstance(draft, OVModelForCausalLM)
    assert ours.last_speculative_stats.accepted == ours.last_speculative_stats.proposed  # the target drafts itself


def test_a_stateless_export_refuses_to_speculate(tmp_path):
    folder = make_tiny_decoder(tmp_path / "stateless", "llama", stateful=False)
    model = OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 14, 5, 9]])
    with pytest.raises(ValueError, match="stateful export"):
        model.generate(input_ids=ids, max_new_tokens=4, prompt_lookup_num_tokens=3)
    assert model.generate(input_ids=ids, max_new_tokens=4).shape == (1, 9)  # plain decoding still works
