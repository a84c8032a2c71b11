"""Speculative decoding on the real SmolLM2-135M (run `make models` first; skipped when it is not cached)."""

import pytest
import torch
from conftest import needs_prepared
from optimum.intel import OVModelForCausalLM as PlainOVModel
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.reference.prepare import smollm2_openvino_path

FOLDER = smollm2_openvino_path("fp32")
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
# tokens accepted per target call the trained EAGLE head must reach on Austen passages (exact f32, 48 tokens)
MIN_EAGLE_ACCEPTED_PER_CALL = 0.3  # untrained head ~0; CI-size heads: 400 windows, 69 steps 0.57; 250, 3.5 min 0.47
pytestmark = needs_prepared("llm-base")


@pytest.fixture(scope="module")
def setup():
    from optimum_dynexec.reference.sentiment import load_sentiment_splits

    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    tweets = load_sentiment_splits()["test"].texts[:6]
    prompts = [
        " ".join(tweets[:3]) + "\nRepeat the three texts above: " + tweets[0][:20],
        "Continue this text: " + tweets[3],
    ]
    return tokenizer, prompts, OVModelForCausalLM.from_pretrained(FOLDER, ov_config=EXACT)


def test_tokenizer_round_trips_text(setup):
    tokenizer, prompts, _ = setup
    for p in prompts:
        assert tokenizer.decode(tokenizer(p)["input_ids"]) == p
    assert tokenizer.convert_ids_to_tokens(tokenizer(" world")["input_ids"]) == ["Ġworld"]


@pytest.mark.parametrize("lean", [True, False])
def test_prompt_lookup_is_lossless_on_smollm2(setup, lean):
    tokenizer, prompts, model = setup
    plain = PlainOVModel.from_pretrained(FOLDER, ov_config=EXACT)
    model.use_lean_loop = lean
    try:
        for p in prompts:
            ids = tokenizer(p, return_tensors="pt")
            reference = plain.generate(**ids, max_new_tokens=48, do_sample=False)
            assert torch.equal(
                model.generate(**ids, max_new_tokens=48, do_sample=False, prompt_lookup_num_tokens=4), reference
            )
    finally:
        model.use_lean_loop = True


def test_eagle_head_is_lossless_and_accepted_on_smollm2(setup):
    """The trained EAGLE head keeps the target's exact f32 greedy text and gets tokens accepted on Austen passages."""
    from optimum_dynexec.eagle import OVEagleDraft
    from optimum_dynexec.reference.benchmark.speculative import austen_prompts
    from optimum_dynexec.reference.prepare import smollm2_eagle_dir

    eagle_dir = smollm2_eagle_dir()
    if eagle_dir is None:
        pytest.skip("the SmolLM2 EAGLE head is not trained (make models)")
    tokenizer, _, model = setup
    plain = PlainOVModel.from_pretrained(FOLDER, ov_config=EXACT)
    head = OVEagleDraft.from_pretrained(eagle_dir, ov_config=EXACT)
    accepted = calls = 0
    for passage in austen_prompts(2, 80)["continue"]:
        ids = tokenizer(passage, return_tensors="pt")
        reference = plain.generate(**ids, max_new_tokens=48, do_sample=False)
        out = model.generate(
            **ids,
            max_new_tokens=48,
            do_sample=False,
            assistant_model=head,
            num_assistant_tokens=3,
            num_assistant_tokens_schedule="constant",
            assistant_confidence_threshold=0.0,
        )
        assert torch.equal(out, reference)
        accepted += model.last_speculative_stats.accepted
        calls += model.last_speculative_stats.target_calls
    assert accepted / calls > MIN_EAGLE_ACCEPTED_PER_CALL
