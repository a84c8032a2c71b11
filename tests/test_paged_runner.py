"""The paged-attention form of the target: same logits as the stateful model, exact rollback, padding, growth."""

import numpy as np
import pytest
from tiny_models import make_tiny_llama, plain_greedy, random_prompts

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec import paged_runner as paged
from optimum_dynexec.paged_batch import PagedBatchRunner
from optimum_dynexec.paged_runner import PagedRunner, paged_config
from optimum_dynexec.policies.lookahead import LookaheadSchedule
from optimum_dynexec.policies.width import VerifyWidth, pad_to_width
from optimum_dynexec.speculative_loop import StatefulRunner, speculative_greedy
from optimum_dynexec.target_graph import HIDDEN_OUTPUT, prepare_lean_model

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("paged")
    target = OVModelForCausalLM.from_pretrained(make_tiny_llama(root / "t", num_layers=2, seed=3), ov_config=EXACT)
    draft = OVModelForCausalLM.from_pretrained(make_tiny_llama(root / "d", num_layers=1, seed=4), ov_config=EXACT)
    return target, draft


def stateful_logits(target, tokens):
    runner = StatefulRunner(target)
    runner.reset()
    return runner(tokens)


def test_paged_logits_match_the_stateful_model(models):
    target, _ = models
    tokens = np.random.default_rng(0).integers(3, 96, 40)
    expected = stateful_logits(target, tokens)
    runner = PagedRunner(target)
    runner.reset()
    got = np.concatenate([runner(tokens[:25]), runner(tokens[25:31]), runner(tokens[31:32]), runner(tokens[32:])])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert runner.length == 40
    # keep: the last rows only
    runner.reset()
    np.testing.assert_allclose(runner(tokens, keep=1), expected[-1:], atol=1e-4, rtol=1e-4)


def test_a_batch_call_returns_the_logits_asked_for_at_each_sequence(models):
    target, _ = models
    rng = np.random.default_rng(5)
    prompts = {i: rng.integers(3, 96, n) for i, n in enumerate([7, 40, 19])}
    expected = {i: stateful_logits(target, p) for i, p in prompts.items()}
    runner = PagedBatchRunner(target, num_sequences=3, max_length=64)
    # the prefill keeps each prompt's last logits, a later call an arbitrary set, in the order asked
    out = runner.infer({i: p[:-3] for i, p in prompts.items()}, {i: [len(p) - 4] for i, p in prompts.items()})
    for i, p in prompts.items():
        np.testing.assert_allclose(out[i]["logits"], expected[i][len(p) - 4 : len(p) - 3], atol=1e-4, rtol=1e-4)
    out = runner.infer({i: p[-3:] for i, p in prompts.items() if i != 1}, {0: [2, 0], 2: []})
    assert set(out) == {0, 2} and out[2]["logits"].shape[0] == 0
    np.testing.assert_allclose(out[0]["logits"], expected[0][[-1, -3]], atol=1e-4, rtol=1e-4)
    out = runner.infer({1: prompts[1][-3:]})  # default: every position
    np.testing.assert_allclose(out[1]["logits"], expected[1][-3:], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="outside a sequence's feed"):
        runner.infer({0: prompts[0][:2]}, {0: [2]})


def test_paged_rollback_and_padding_are_exact(models):
    target, _ = models
    rng = np.random.default_rng(1)
    prompt, junk, more = rng.integers(3, 96, 30), rng.integers(3, 96, 6), rng.integers(3, 96, 3)
    expected = stateful_logits(target, np.concatenate([prompt, more]))[-len(more) :]
    runner = PagedRunner(target)
    runner.reset()
    runner(np.concatenate([prompt, junk]))  # crosses a block boundary (32 tokens)
    runner.trim(len(prompt))
    assert runner.length == len(prompt)
    out = runner.infer(more, width=8)  # padded to 8 positions; the first 3 rows are the tokens'
    assert out["logits"].shape[1] == 8 and runner.length == len(prompt) + len(more)
    np.testing.assert_allclose(out["logits"][0, : len(more)], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="every row"):
        runner.infer(more, keep=1, width=8)
    with pytest.raises(ValueError, match="no extra inputs"):
        runner.infer(more, hidden_states=np.zeros((1, 3, 32), np.float32))


def test_paged_cache_grows_and_keeps_its_content(models, monkeypatch):
    target, _ = models
    fresh = OVModelForCausalLM.from_pretrained(target.model_save_dir, ov_config=EXACT)  # its own paged request
    monkeypatch.setattr(paged, "_GROW_BLOCKS", 1)
    tokens = np.random.default_rng(2).integers(3, 96, 100)
    expected = stateful_logits(target, tokens)
    runner = PagedRunner(fresh)
    runner.reset()
    got = np.concatenate([runner(tokens[i : i + 20]) for i in range(0, 100, 20)])
    assert runner.blocks == 4  # grew block by block: 32, 64, 96, 128 tokens
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    again = PagedRunner(fresh)  # a later runner reuses the blocks
    assert again.blocks == 4
    again.reset()
    np.testing.assert_allclose(again(tokens[:50]), expected[:50], atol=1e-4, rtol=1e-4)


class CountingRequest:
    """An infer request that counts the token count of each call."""

    def __init__(self, request):
        self.request, self.widths = request, []

    def infer(self, feeds, **kwargs):
        self.widths.append(len(feeds["input_ids"]))
        return self.request.infer(feeds, **kwargs)


def test_single_token_steps_have_a_request_of_their_own_on_the_same_cache(models, monkeypatch):
    target, _ = models
    fresh = OVModelForCausalLM.from_pretrained(target.model_save_dir, ov_config=EXACT)
    monkeypatch.setattr(paged, "_GROW_BLOCKS", 1)
    rng = np.random.default_rng(5)
    tokens = rng.integers(3, 96, 72)
    expected = stateful_logits(target, tokens)
    runner = PagedRunner(fresh)
    assert runner.single_steps and runner.step_request is not runner.request
    runner.request, runner.step_request = CountingRequest(runner.request), CountingRequest(runner.step_request)
    runner.reset()
    got = [runner(tokens[:30])]
    for at in (30, 31, 32):  # single steps, the last one growing the cache to a second block
        got.append(runner(tokens[at : at + 1]))
    assert runner.blocks == 2
    runner(rng.integers(3, 96, 5))  # rejected: rolled back below
    runner.trim(33)
    got.append(runner.infer(tokens[33:36], width=6)["logits"][0, :3])  # padded verification on the grown cache
    for at in range(36, 72):  # steps again, across the next block boundaries
        got.append(runner(tokens[at : at + 1]))
    np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-4, rtol=1e-4)
    assert runner.request.widths == [30, 5, 6] and runner.step_request.widths == [1] * 39
    single = PagedRunner(fresh, single_steps=False)
    assert not single.single_steps and single.step_request is None
    single.reset()
    np.testing.assert_allclose(single(tokens[:1]), expected[:1], atol=1e-4, rtol=1e-4)


def test_paged_hidden_states(models):
    target, _ = models
    tokens = np.arange(5, 17)
    runner = PagedRunner(target, hidden_states=True)
    runner.reset()
    out = runner.infer(tokens, keep=1)
    assert out["logits"].shape == (1, 1, 96) and out[HIDDEN_OUTPUT].shape == (1, 12, 32)
    assert PagedRunner(target).has_hidden  # compiled once, with the output, for every later runner


def test_paged_config_wants_a_cache_that_rolls_back_exactly():
    import openvino as ov

    core = ov.Core()
    assert paged_config(core, "CPU", EXACT)["KV_CACHE_PRECISION"] == "f32"
    default = paged_config(core, "CPU", {})["KV_CACHE_PRECISION"]
    assert default in ("bf16", "f16", "f32")
    for integer in ({"KV_CACHE_PRECISION": "u8"}, {"KEY_CACHE_PRECISION": ov.Type.i8}):
        assert paged_config(core, "CPU", integer)["KEY_CACHE_QUANT_MODE"] == "BY_TOKEN"
    with pytest.raises(ValueError, match="quantized per token"):
        paged_config(core, "CPU", {"KV_CACHE_PRECISION": "u8", "KEY_CACHE_QUANT_MODE": "BY_CHANNEL"})


def test_paged_rollback_is_exact_with_an_integer_cache(tmp_path):
    path = make_tiny_llama(tmp_path / "t", num_layers=2, seed=3)
    target = OVModelForCausalLM.from_pretrained(path, ov_config={"KV_CACHE_PRECISION": "u8"})
    rng = np.random.default_rng(4)
    # junk written into a partly filled block: quantized per channel, it would shift `more`'s logits (by ~5e-3 here)
    prompt, junk, more = rng.integers(3, 96, 20), rng.integers(3, 96, 6), rng.integers(3, 96, 3)
    runner = PagedRunner(target)
    runner.reset()
    runner(prompt)
    clean = runner(more)
    runner.reset()
    runner(np.concatenate([prompt, junk]))
    runner.trim(len(prompt))
    np.testing.assert_array_equal(runner(more), clean)


@pytest.mark.parametrize("paged_form", [True, False])
def test_loop_is_lossless_through_either_form(models, paged_form):
    target, draft = models
    for ids in random_prompts(5):
        reference = plain_greedy(target, ids, 24)
        repetitive = np.concatenate([ids, ids], 1)
        for kwargs in (
            dict(draft=draft, schedule=LookaheadSchedule(3, "heuristic")),
            dict(prompt_lookup_num_tokens=4),
            dict(draft=draft, prompt_lookup_num_tokens=3),
        ):
            for patience, single_steps in ((0, True), (2, True), (2, False)):
                out, _ = speculative_greedy(
                    target, ids, 24, paged=paged_form, pad_patience=patience, single_steps=single_steps, **kwargs
                )
                np.testing.assert_array_equal(out, reference)
        out, _ = speculative_greedy(target, repetitive, 24, paged=paged_form, prompt_lookup_num_tokens=5)
        np.testing.assert_array_equal(out, plain_greedy(target, repetitive, 24))


def test_verify_width_pads_then_shrinks():
    width = VerifyWidth(patience=2)
    assert width(6) == 6
    assert [width(1), width(3)] == [6, 6]  # padded twice
    assert width(2) == 3  # a third narrower call: shrink to the widest of the streak
    assert width(5) == 5  # wider: at once
    never = VerifyWidth(patience=0)
    assert [never(6), never(1), never(4)] == [6, 1, 4]
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="patience"):
            VerifyWidth(patience=bad)
    with pytest.raises(ValueError, match="at least one"):
        width(0)


def test_a_model_without_paged_form_is_tried_once(tmp_path, monkeypatch, caplog):
    path = make_tiny_llama(tmp_path / "t", num_layers=1, seed=5)
    config = {**EXACT, "KV_CACHE_PRECISION": "u8", "KEY_CACHE_QUANT_MODE": "BY_CHANNEL"}  # no exact rollback
    target = OVModelForCausalLM.from_pretrained(path, ov_config=config)
    tried = []
    real_config = paged.paged_config
    monkeypatch.setattr(paged, "paged_config", lambda *a: tried.append(1) or real_config(*a))
    ids = random_prompts(6)[0]
    for _ in range(2):
        with caplog.at_level("WARNING"):
            out, _ = speculative_greedy(target, ids, 8, prompt_lookup_num_tokens=3)
        np.testing.assert_array_equal(out, plain_greedy(target, ids, 8))
    assert "stateful model" in caplog.text and "quantized per token" in caplog.text
    with pytest.raises(ValueError, match="quantized per token"):
        PagedRunner(target)
    assert len(tried) == 1  # refused once; later calls neither re-read the config nor clone and transform the graph


def test_pad_to_width():
    tokens, pad = pad_to_width(np.array([4, 5]), 5)
    np.testing.assert_array_equal(tokens, [4, 5, 5, 5, 5])
    assert pad == 3
    assert pad_to_width(np.array([4, 5]), None)[1] == 0 and pad_to_width(np.array([4, 5]), 1)[1] == 0


def test_the_paged_form_of_a_model_prepared_for_the_stateful_loop_reads_the_positions_asked_for(tmp_path):
    """A model whose stateful graph has the lean loop's `logits_to_keep` slice (and hidden states) gets a paged form
    without it: the Gather alone picks the positions."""
    target = OVModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "t", num_layers=2, seed=3), ov_config=EXACT)
    tokens = np.random.default_rng(1).integers(3, 96, 20)
    expected = stateful_logits(target, tokens)
    prepare_lean_model(target, hidden_states=True)
    runner = PagedRunner(target, hidden_states=True)
    assert "logits_to_keep" not in runner.names
    runner.reset()
    out = runner.infer(tokens[:17], keep=2)
    np.testing.assert_allclose(out["logits"][0], expected[15:17], atol=1e-4, rtol=1e-4)
    assert out[HIDDEN_OUTPUT].shape[:2] == (1, 17)
    np.testing.assert_allclose(runner(tokens[17:]), expected[17:], atol=1e-4, rtol=1e-4)
