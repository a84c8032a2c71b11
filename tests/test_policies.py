import numpy as np
import pytest

from optimum_dynexec.policies import (
    ExitPolicy,
    calibrate_threshold,
    exit_scores,
    expected_cost,
    select_exits,
    simulate_exits,
)
from optimum_dynexec.policies.lookahead import LookaheadSchedule, batch_schedule
from optimum_dynexec.policies.width import VerifyWidth
from optimum_dynexec.speculative_batch import _MAX_WIDTH, _padded


def test_exit_scores_confidence_and_entropy():
    logits = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(exit_scores(logits, "confidence"), [0.5, 1 / (1 + np.exp(-10))])
    ent = exit_scores(logits, "entropy")
    assert ent[0] == pytest.approx(0.0, abs=1e-12) and 0.99 < ent[1] <= 1.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None, True])
def test_policy_rejects_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        ExitPolicy(bad)


def test_policy_rejects_unknown_criterion():
    with pytest.raises(ValueError, match="criterion"):
        ExitPolicy(0.5, "margin")


def test_simulate_exits_takes_first_confident_head_and_final_otherwise():
    # three heads, four samples: confident at head 0, at head 1, never, and confident only at head 0 for class 1
    layer_logits = np.array(
        [
            [[5.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.0, 5.0]],
            [[0.0, 0.0], [0.0, 5.0], [0.1, 0.0], [5.0, 0.0]],
            [[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]],
        ]
    )
    exit_index, logits = simulate_exits(layer_logits, 0.9)
    np.testing.assert_array_equal(exit_index, [0, 1, 2, 0])
    np.testing.assert_array_equal(logits, layer_logits[[0, 1, 2, 0], np.arange(4)])


def test_calibrate_returns_loosest_threshold_meeting_target():
    rng = np.random.default_rng(0)
    final = rng.normal(size=(200, 2)) * 3
    # head 0 agrees with the final classifier when confident, disagrees on its low-confidence half
    head = final.copy()
    weak = np.abs(final[:, 0] - final[:, 1]) < 2
    head[weak] = -0.1 * final[weak]
    layer_logits = np.stack([head, final])
    threshold, stats = calibrate_threshold(layer_logits, target_agreement=1.0)
    assert stats["agreement"] == 1.0
    # any looser observed threshold breaks the target
    scores = np.sort(exit_scores(head))
    looser = scores[scores < threshold - 1e-6]
    if len(looser):
        exits = simulate_exits(layer_logits, looser[-1])[1].argmax(-1)
        assert (exits == final.argmax(-1)).mean() < 1.0


def test_calibrate_rejects_bad_target():
    with pytest.raises(ValueError, match="target_agreement"):
        calibrate_threshold(np.zeros((2, 3, 2)), 1.5)


def test_expected_cost_counts_layers_and_calls():
    costs = np.array([1.0, 1.0, 1.0])  # two candidate exits, then the final segment
    # one sample exits at the first kept exit, one runs to the end through both
    assert expected_cost(np.array([0, 2]), [0, 1], costs, 0.5) == pytest.approx(((1 + 0.5) + (3 + 1.5)) / 2)
    # dropping the second candidate: the late sample makes one call fewer
    assert expected_cost(np.array([0, 1]), [0], costs, 0.5) == pytest.approx(((1 + 0.5) + (3 + 1.0)) / 2)


def test_select_exits_drops_an_exit_nobody_takes():
    rng = np.random.default_rng(1)
    final = rng.normal(size=(300, 2)) * 4
    confident_early = final * 3  # head 0 agrees with the final classifier and is sure of itself
    useless = np.zeros_like(final)  # head 1 never reaches a threshold, so it only costs a call
    layer_logits = np.stack([confident_early, useless, final])
    chosen, threshold, stats = select_exits(layer_logits, np.array([1.0, 1.0, 1.0]), 0.5, target_agreement=1.0)
    assert chosen == [0]
    assert stats["agreement"] == 1.0 and stats["expected_cost"] < stats["expected_cost_full"]


def test_batch_schedule_adapts_up_to_the_asked_length_and_backs_off_only_when_asked():
    asked = LookaheadSchedule(5, "constant")
    row = batch_schedule(asked)
    assert row is not asked and row.next() == 5
    row.update(5, 5)
    assert row.next() == 5  # never beyond the asked length
    for _ in range(5):
        row.update(row.next(), 0)
    assert row.num_tokens == 1  # a failing row keeps proposing one token: it must not become the batch's straggler
    row.update(1, 1)
    assert row.next() == 3  # and grows again after an acceptance
    costly = batch_schedule(asked, back_off=True)  # a draft model's row: drafting costs calls of its own
    for _ in range(5):
        costly.update(costly.next(), 0)
    assert costly.num_tokens == 0  # it stops proposing, then probes
    probes = [costly.next() for _ in range(costly.probe_every)]
    assert probes.count(1) == 1 and probes.count(0) == costly.probe_every - 1
    assert asked.num_tokens == 5  # the call's own schedule is untouched


def test_batch_padding_keeps_the_total_stable_and_each_row_within_its_room():
    widths = VerifyWidth(patience=2)
    wide = _padded({0: [1, 2, 3, 4, 5, 6], 1: [7], 2: [8, 9]}, widths)
    assert [len(v) for v in wide.values()] == [6, 1, 2]  # widening: no padding
    narrow = _padded({0: [1, 2], 1: [7], 2: [8, 9, 10]}, widths)
    assert sum(len(v) for v in narrow.values()) == 9  # padded back to the last total, not to 3 x the widest row
    # spread over the rows, each repeating its last token
    assert [v.tolist() for v in narrow.values()] == [[1, 2, 2], [7, 7], [8, 9, 10, 10]]
    full = _padded({0: list(range(_MAX_WIDTH)), 1: [1]}, VerifyWidth(patience=2))
    widths_big = VerifyWidth(patience=2)
    widths_big(3 * _MAX_WIDTH)
    capped = _padded({0: list(range(_MAX_WIDTH)), 1: [1]}, widths_big)
    assert len(capped[0]) == _MAX_WIDTH and len(capped[1]) == _MAX_WIDTH and len(full[0]) == _MAX_WIDTH
