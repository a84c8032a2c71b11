"""Speculative decoding on the real Gemma-3-270M (`make models STEPS=gemma`; skipped when it is not cached, also under
`OPTIMUM_DYNEXEC_REQUIRE_MODELS=1`: CI does not build the optional Gemma steps)."""

import pytest
import torch
from conftest import F32, needs_prepared
from optimum.intel import OVModelForCausalLM as PlainOVModel
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.reference.benchmark.speculative import austen_prompts
from optimum_dynexec.reference.gemma import check_tokenizer, gemma_openvino_path, gemma_path

FOLDER = gemma_openvino_path()
NEW_TOKENS = 40
pytestmark = needs_prepared("gemma-base")


@pytest.fixture(scope="module")
def setup():
    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    prompts = austen_prompts(1, 80)
    passages = [prompts["copy"][0], prompts["continue"][0]]
    inputs = [tokenizer(p, return_tensors="pt") for p in passages]
    plain = PlainOVModel.from_pretrained(FOLDER, ov_config=F32)
    greedy = dict(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None)
    references = [plain.generate(**x, **greedy) for x in inputs]
    return inputs, references, greedy, OVModelForCausalLM.from_pretrained(FOLDER, ov_config=F32)


@pytest.mark.parametrize("folder", [gemma_path(), FOLDER], ids=["transformers", "openvino"])
def test_tokenizer_round_trips_austen_and_adds_one_bos(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    check_tokenizer(tokenizer)
    passage = austen_prompts(1, 80)["continue"][0]
    ids = tokenizer(passage).input_ids
    assert ids[0] == tokenizer.bos_token_id == 2 and tokenizer.decode(ids, skip_special_tokens=True) == passage


def test_prompt_lookup_is_lossless_on_gemma(setup):
    inputs, references, greedy, model = setup
    calls = 0
    for x, reference in zip(inputs, references):
        before = model.num_forward_calls
        assert torch.equal(model.generate(**x, **greedy, prompt_lookup_num_tokens=4), reference)
        calls += model.num_forward_calls - before
    assert calls < len(inputs) * NEW_TOKENS  # the copy passage gets lookup tokens accepted


@needs_prepared("gemma-eagle")
@pytest.mark.parametrize("lookup", [None, 5], ids=["eagle", "eagle+lookup"])
def test_eagle_head_is_lossless_on_gemma(setup, lookup):
    from optimum_dynexec.eagle import OVEagleDraft
    from optimum_dynexec.reference.prepare import gemma_eagle_dir

    inputs, references, greedy, model = setup
    head = OVEagleDraft.from_pretrained(gemma_eagle_dir(), ov_config=F32)
    extra = dict(
        assistant_model=head,
        num_assistant_tokens=3,
        num_assistant_tokens_schedule="constant",
        assistant_confidence_threshold=0.0,
    )
    if lookup:
        extra["prompt_lookup_num_tokens"] = lookup
    calls = 0
    for x, reference in zip(inputs, references):
        before = model.num_forward_calls
        assert torch.equal(model.generate(**x, **greedy, **extra), reference)
        calls += model.num_forward_calls - before
    assert calls < len(inputs) * NEW_TOKENS  # drafts get accepted
