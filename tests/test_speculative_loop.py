"""The lean greedy speculative loop and its pure lookahead policies."""

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_llama, plain_greedy, random_prompts

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.policies.lookahead import LookaheadSchedule, prompt_lookup_candidates
from optimum_dynexec.speculative_loop import speculative_greedy

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def test_heuristic_schedule_grows_and_shrinks():
    s = LookaheadSchedule(3, "heuristic", max_tokens=6)
    s.update(3, 3)
    assert s.num_tokens == 5
    s.update(5, 5)
    assert s.num_tokens == 6  # capped
    s.update(6, 2)
    assert s.num_tokens == 5
    for _ in range(10):
        s.update(5, 0)
    assert s.num_tokens == 1
    c = LookaheadSchedule(4, "constant")
    c.update(4, 4)
    c.update(4, 0)
    assert c.num_tokens == 4


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_schedule_rejects_bad_lookahead(bad):
    with pytest.raises(ValueError, match="lookahead"):
        LookaheadSchedule(bad)


def test_prompt_lookup_candidates():
    tokens = np.array([5, 6, 7, 8, 9, 1, 5, 6, 7])
    np.testing.assert_array_equal(prompt_lookup_candidates(tokens, 3), [8, 9, 1])
    np.testing.assert_array_equal(prompt_lookup_candidates(tokens, 1), [8])
    assert len(prompt_lookup_candidates(np.array([1, 2, 3, 4]), 3)) == 0
    # the latest earlier occurrence wins
    np.testing.assert_array_equal(prompt_lookup_candidates(np.array([4, 1, 4, 2, 4]), 2), [2, 4])
    # a match near the end: the copy runs on over its own tokens (the text's period), not stopping short
    np.testing.assert_array_equal(prompt_lookup_candidates(np.array([4, 1, 4, 2, 4]), 5), [2, 4, 2, 4, 2])
    loop = np.array([9, 7, 5, 1, 2, 3, 1, 2, 3, 1, 2])  # "1 2 3" repeated: period 3
    np.testing.assert_array_equal(prompt_lookup_candidates(loop, 4), [3, 1, 2, 3])
    np.testing.assert_array_equal(prompt_lookup_candidates(np.array([3, 3, 3]), 4), [3, 3, 3, 3])
    assert prompt_lookup_candidates(loop, 0).size == 0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    target = OVModelForCausalLM.from_pretrained(make_tiny_llama(root / "t", num_layers=3, seed=0), ov_config=EXACT)
    draft = OVModelForCausalLM.from_pretrained(make_tiny_llama(root / "d", num_layers=1, seed=1), ov_config=EXACT)
    twin = OVModelForCausalLM.from_pretrained(root / "t" / "ov", ov_config=EXACT)
    return target, draft, twin


def prompts():
    return random_prompts(0)


@pytest.mark.parametrize("schedule", ["constant", "heuristic"])
@pytest.mark.parametrize("k", [1, 4])
def test_draft_loop_is_lossless(models, schedule, k):
    target, draft, twin = models
    for ids in prompts():
        reference = plain_greedy(target, ids, 30)
        for d in (draft, twin):
            out, stats = speculative_greedy(target, ids, 30, draft=d, schedule=LookaheadSchedule(k, schedule))
            np.testing.assert_array_equal(out, reference)
            assert stats.target_calls <= 30
        # the twin agrees with the target on everything it proposes
        assert stats.accepted == stats.proposed and stats.target_calls < 30


def test_confidence_stop_is_lossless(models):
    target, draft, _ = models
    for ids in prompts():
        out, _ = speculative_greedy(target, ids, 20, draft=draft, confidence_threshold=0.5)
        np.testing.assert_array_equal(out, plain_greedy(target, ids, 20))


@pytest.mark.parametrize("k", [2, 5])
def test_prompt_lookup_loop_is_lossless(models, k):
    target, _, _ = models
    for ids in prompts():
        repetitive = np.concatenate([ids, ids, ids], 1)
        out, stats = speculative_greedy(target, repetitive, 25, prompt_lookup_num_tokens=k)
        np.testing.assert_array_equal(out, plain_greedy(target, repetitive, 25))


def test_loop_errors(models):
    target, draft, _ = models
    with pytest.raises(ValueError, match="one sequence"):
        speculative_greedy(target, np.zeros((2, 3), dtype=np.int64), 5, draft=draft)
    with pytest.raises(ValueError, match="draft model or prompt_lookup"):
        speculative_greedy(target, np.zeros((1, 3), dtype=np.int64), 5)


def test_generate_routes_plain_greedy_to_the_lean_loop(models):
    target, draft, _ = models
    for ids in prompts():
        t = torch.from_numpy(ids)
        kwargs = dict(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=30, do_sample=False)
        reference = target.generate(**kwargs)
        for extra in ({"assistant_model": draft}, {"prompt_lookup_num_tokens": 3}):
            assert torch.equal(target.generate(**kwargs, **extra), reference)
            assert target.last_speculative_stats is not None, "plain greedy speculation should take the lean loop"
            target.generate(**kwargs)
            assert target.last_speculative_stats is None, "a call that does not speculate clears the last stats"
            target.generate(**kwargs, **extra)
            target.use_lean_loop = False
            try:
                assert torch.equal(target.generate(**kwargs, **extra), reference)
                assert target.last_speculative_stats is None
            finally:
                target.use_lean_loop = True


def test_logits_processors_stay_on_the_lean_loop(models):
    target, draft, _ = models
    t = torch.from_numpy(prompts()[0])
    out = target.generate(
        input_ids=t, max_new_tokens=12, do_sample=False, repetition_penalty=1.3, assistant_model=draft
    )
    assert target.last_speculative_stats is not None
    assert torch.equal(out, target.generate(input_ids=t, max_new_tokens=12, do_sample=False, repetition_penalty=1.3))


def test_back_off_stops_drafting_and_probes():
    s = LookaheadSchedule(2, "heuristic", back_off=True, probe_every=4)
    s.update(2, 0)
    s.update(1, 0)
    assert s.num_tokens == 0
    plan = [s.next() for _ in range(4)]
    assert plan == [0, 0, 0, 1]
    s.update(1, 0)  # a failed probe doubles the interval, up to max_probe_every
    assert [s.next() for _ in range(8)] == [0] * 7 + [1]
    s.update(1, 0)
    s.update(1, 0)
    assert s._interval == 32
    for _ in range(5):
        s.update(1, 0)
    assert s._interval == s.max_probe_every == 64
    s.update(1, 1)  # a probe that succeeds brings drafting back and resets the interval
    assert s.next() == 3 and s._interval == 4
    with pytest.raises(ValueError, match="probe_every"):
        LookaheadSchedule(probe_every=0)


def test_back_off_loop_is_lossless_and_makes_fewer_drafts(models):
    target, draft, _ = models
    for ids in prompts():
        reference = plain_greedy(target, ids, 30)
        out, stats = speculative_greedy(target, ids, 30, draft=draft, schedule=LookaheadSchedule(3, back_off=True))
        np.testing.assert_array_equal(out, reference)
        _, eager = speculative_greedy(target, ids, 30, draft=draft, schedule=LookaheadSchedule(3))
        assert stats.proposed <= eager.proposed


def test_runner_masks_rolled_back_positions_and_compacts(models):
    from optimum_dynexec.speculative_loop import StatefulRunner

    target, _, _ = models
    prompt, junk, more = np.array([5, 9, 33, 41, 7]), np.array([60, 61, 62]), np.array([11, 12])
    fresh = StatefulRunner(target)
    fresh.reset()
    expected = fresh(np.concatenate([prompt, more]))[-len(more) :]
    for max_masked in (256, 1):  # masked only, then compacted
        runner = StatefulRunner(target, max_masked=max_masked)
        runner.reset()
        runner(np.concatenate([prompt, junk]))
        runner.trim(len(prompt))
        assert runner.length == len(prompt)
        assert len(runner.kept) == (len(prompt) + len(junk) if max_masked == 256 else len(prompt))
        np.testing.assert_allclose(runner(more), expected, atol=1e-4, rtol=1e-4)


def test_draft_with_prompt_lookup_is_lossless(models):
    target, draft, _ = models
    for ids in [*prompts(), np.asarray([[7, 8, 9, 10, 7, 8, 9, 10, 7]])]:
        reference = plain_greedy(target, ids, 30)
        out, stats = speculative_greedy(
            target, ids, 30, draft=draft, prompt_lookup_num_tokens=3, schedule=LookaheadSchedule(2, "constant")
        )
        np.testing.assert_array_equal(out, reference)
        assert stats.proposed > 0
    t = torch.from_numpy(prompts()[0])
    via_generate = target.generate(
        input_ids=t, max_new_tokens=12, do_sample=False, assistant_model=draft, prompt_lookup_num_tokens=3
    )
    np.testing.assert_array_equal(via_generate.numpy(), plain_greedy(target, prompts()[0], 12))


def test_heuristic_schedule_carries_over_between_calls_with_the_same_draft(models):
    """As transformers' `heuristic`: a draft the schedule backed off stays backed off in the next call;
    `heuristic_transient` starts afresh."""
    target, draft, _ = models
    t = torch.from_numpy(prompts()[0])
    kwargs = dict(max_new_tokens=8, do_sample=False, assistant_model=draft, num_assistant_tokens=3)
    target.generate(input_ids=t, num_assistant_tokens_schedule="heuristic", **kwargs)
    kept = target._draft_schedule(draft, 3, "heuristic")
    kept.num_tokens = 0  # as after a useless draft
    target.generate(input_ids=t, num_assistant_tokens_schedule="heuristic", **kwargs)
    assert target._draft_schedule(draft, 3, "heuristic") is kept and kept.num_tokens == 0
    assert target.last_speculative_stats.proposed <= 1  # at most a probe
    assert target._draft_schedule(draft, 3, "heuristic_transient").num_tokens == 3
    assert target._draft_schedule(draft, 4, "heuristic") is not kept  # other settings start afresh


def test_a_call_resumes_after_the_prefix_the_last_one_left_in_the_cache(models):
    """A repeated prompt, and a conversation going on after the last answer, reuse the paged cache's keys and values
    (as GenAI's prefix caching does) and still give the plain greedy text; a batch in between, or the switch, turns
    the reuse off."""
    target, draft, _ = models
    lookup = {"prompt_lookup_num_tokens": 3}
    ids = np.concatenate([prompts()[1]] * 3, 1)
    first = plain_greedy(target, ids, 12)
    assert np.array_equal(target.generate(input_ids=torch.from_numpy(ids), max_new_tokens=12, **lookup), first)
    out = target.generate(input_ids=torch.from_numpy(ids), max_new_tokens=12, **lookup).numpy()
    np.testing.assert_array_equal(out, first)
    assert target.last_speculative_stats.reused == ids.shape[1] - 1  # all but the token the call must feed
    turn = np.concatenate([out, prompts()[2]], 1)  # the user answers: the history is the new prompt's prefix
    reference = plain_greedy(target, turn, 12)  # plain decoding runs on the stateful request, not the paged cache
    out = target.generate(input_ids=torch.from_numpy(turn), max_new_tokens=12, **lookup).numpy()
    assert target.last_speculative_stats.reused == first.shape[1] - 1  # the last answer's final token was not fed
    np.testing.assert_array_equal(out, reference)
    # a draft model's call resumes too (the target's cache is the same)
    again = target.generate(input_ids=torch.from_numpy(turn), max_new_tokens=12, assistant_model=draft)
    np.testing.assert_array_equal(again.numpy(), out)
    assert target.last_speculative_stats.reused == turn.shape[1] - 1
    batch = torch.from_numpy(np.concatenate([turn, turn], 0))
    target.generate(input_ids=batch, max_new_tokens=4, **lookup)
    target.generate(input_ids=torch.from_numpy(turn), max_new_tokens=12, **lookup)
    assert target.last_speculative_stats.reused == 0, "a batch lays out the cache its own way"
    target.reuse_prompt_cache = False
    try:
        out = target.generate(input_ids=torch.from_numpy(turn), max_new_tokens=12, **lookup).numpy()
        assert target.last_speculative_stats.reused == 0
        np.testing.assert_array_equal(out, reference)
    finally:
        target.reuse_prompt_cache = True
