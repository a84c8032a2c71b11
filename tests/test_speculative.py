"""Speculative decoding on stateful OpenVINO causal LMs: KV rollback, lossless greedy, sampling, errors."""

import numpy as np
import pytest
import torch
from conftest import F32
from optimum.intel import OVModelForCausalLM as PlainOVModel
from tiny_models import make_tiny_llama

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.kv_cache import trim_states

EXACT = {**F32, "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    return {
        "target": make_tiny_llama(root / "target", num_layers=3, seed=0),
        "draft": make_tiny_llama(root / "draft", num_layers=1, seed=1),
        "other_vocab": make_tiny_llama(root / "other", vocab_size=80, num_layers=1, seed=2),
        "tiny_vocab_target": make_tiny_llama(root / "tv_target", vocab_size=8, num_layers=2, seed=3),
        "tiny_vocab_draft": make_tiny_llama(root / "tv_draft", vocab_size=8, num_layers=1, seed=4),
    }


@pytest.fixture(scope="module")
def target(folders):
    return OVModelForCausalLM.from_pretrained(folders["target"], ov_config=EXACT)


@pytest.fixture(scope="module")
def draft(folders):
    return OVModelForCausalLM.from_pretrained(folders["draft"], ov_config=EXACT)


def prompts(n, seed=0, length=12):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (1, int(torch.randint(2, length, (1,), generator=g))), generator=g) for _ in range(n)]


def greedy(model, ids, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=24,
        do_sample=False,
        min_new_tokens=24,
        **kwargs,
    )


def test_plain_generate_matches_optimum_intel(folders, target):
    plain = PlainOVModel.from_pretrained(folders["target"], ov_config=EXACT)
    for ids in prompts(3):
        assert torch.equal(greedy(target, ids), greedy(plain, ids))


def test_kv_rollback_continues_like_a_fresh_run(target):
    ids = prompts(1, seed=5, length=10)[0]
    more = torch.tensor([[7, 8, 9, 10]])
    fresh = target(input_ids=torch.cat([ids, more], 1)).logits[:, -more.shape[1] :]  # no cache given: states reset
    cache = target(input_ids=torch.cat([ids, torch.tensor([[50, 51, 52]])], 1)).past_key_values
    cache.crop(ids.shape[1])  # drop the 3 rejected tokens
    assert cache.get_seq_length() == ids.shape[1]
    assert all(s.state.shape[2] == ids.shape[1] for s in target.request.query_state())
    resumed = target(input_ids=more, past_key_values=cache).logits
    torch.testing.assert_close(resumed, fresh, atol=1e-4, rtol=1e-4)
    assert cache.get_seq_length() == ids.shape[1] + more.shape[1]


def test_trim_states_rejects_negative_length(target):
    with pytest.raises(ValueError, match="negative"):
        trim_states(target.request, -1)


@pytest.mark.parametrize("num_assistant_tokens", [1, 3, 6])
@pytest.mark.parametrize("schedule", ["constant", "heuristic"])
def test_draft_model_greedy_is_lossless(target, draft, num_assistant_tokens, schedule):
    for ids in prompts(4, seed=num_assistant_tokens):
        reference = greedy(target, ids)
        spec = greedy(
            target,
            ids,
            assistant_model=draft,
            num_assistant_tokens=num_assistant_tokens,
            num_assistant_tokens_schedule=schedule,
        )
        assert torch.equal(spec, reference)


def test_target_as_its_own_draft_accepts_everything_and_stays_lossless(folders, target):
    twin = OVModelForCausalLM.from_pretrained(folders["target"], ov_config=EXACT)
    for ids in prompts(3, seed=11):
        assert torch.equal(greedy(target, ids, assistant_model=twin, num_assistant_tokens=5), greedy(target, ids))


def test_optimum_intel_draft_is_accepted(folders, target):
    plain_draft = PlainOVModel.from_pretrained(folders["draft"], ov_config=EXACT)
    ids = prompts(1, seed=3)[0]
    assert torch.equal(greedy(target, ids, assistant_model=plain_draft), greedy(target, ids))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prompt_lookup_greedy_is_lossless(target, k):
    for ids in prompts(3, seed=20 + k, length=8):
        repetitive = torch.cat([ids, ids, ids[:, :3], ids], 1)
        assert torch.equal(greedy(target, repetitive, prompt_lookup_num_tokens=k), greedy(target, repetitive))


def first_token_law(model, ids):
    return torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1).numpy()


def test_speculative_sampling_keeps_the_target_distribution(folders):
    target = OVModelForCausalLM.from_pretrained(folders["tiny_vocab_target"], ov_config=EXACT)
    draft = OVModelForCausalLM.from_pretrained(folders["tiny_vocab_draft"], ov_config=EXACT)
    ids = torch.tensor([[3, 5, 4]])
    target_law, draft_law = first_token_law(target, ids), first_token_law(draft, ids)
    assert 0.5 * np.abs(target_law - draft_law).sum() > 0.2, "the test needs a draft whose law differs"
    n = 600
    counts = np.zeros_like(target_law)
    for seed in range(n):
        torch.manual_seed(seed)
        out = target.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            max_new_tokens=2,
            assistant_model=draft,
            num_assistant_tokens=3,
            top_k=0,
        )
        counts[int(out[0, ids.shape[1]])] += 1
    # total variation between the empirical first-token law and the target's own; sampling noise is about 0.05
    assert 0.5 * np.abs(counts / n - target_law).sum() < 0.1


def test_errors(folders, target, draft):
    ids = prompts(1)[0]
    with pytest.raises(ValueError, match="positive number"):
        target.generate(input_ids=ids, prompt_lookup_num_tokens=0)
    with pytest.raises(ValueError, match="positive number"):
        target.generate(input_ids=ids, assistant_model=draft, num_assistant_tokens=-1)
    other = OVModelForCausalLM.from_pretrained(folders["other_vocab"], ov_config=EXACT)
    with pytest.raises(ValueError, match="vocabulary"):
        target.generate(input_ids=ids, assistant_model=other)
    with pytest.raises(TypeError, match="causal LM"):
        target.generate(input_ids=ids, assistant_model=object())
    with pytest.raises(ValueError, match="context"):
        target.generate(input_ids=ids, max_new_tokens=1000)


@pytest.mark.parametrize("speculate", [{}, {"prompt_lookup_num_tokens": 3}], ids=["plain", "prompt lookup"])
def test_bad_prompts_are_refused_with_a_message(target, speculate):
    ids = prompts(1)[0]
    vocab = target.config.vocab_size
    with pytest.raises(ValueError, match="prompt is empty"):
        target.generate(input_ids=ids[:, :0], max_new_tokens=4, **speculate)
    for bad in (vocab, vocab + 1000, -1):
        wrong = ids.clone()
        wrong[0, -1] = bad
        with pytest.raises(ValueError, match=f"Token id {bad} is outside the model's vocabulary of {vocab}"):
            target.generate(input_ids=wrong, max_new_tokens=4, **speculate)
    with pytest.raises(ValueError, match="integer token ids"):
        target.generate(input_ids=ids.float(), max_new_tokens=4, **speculate)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        target.generate(input_ids=ids, attention_mask=torch.ones(1, ids.shape[1] + 1), max_new_tokens=4, **speculate)
    # the model still decodes after refusing
    out = target.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, **speculate)
    assert out.shape[1] == ids.shape[1] + 4
