import numpy as np
import pytest

from optimum_dynexec.policies import ExitPolicy, calibrate_threshold, exit_scores, simulate_exits


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
