"""vote(): hard voting with its documented tie-break, soft voting, agreement,
from_logits, bad inputs, and array types kept."""

from __future__ import annotations

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, Vote, vote


def test_hard_majority():
    p = np.array([[[0.9, 0.1, 0.0]], [[0.2, 0.7, 0.1]], [[0.6, 0.3, 0.1]]])  # K=3, N=1
    v = vote(p, "hard")
    assert isinstance(v, Vote)
    assert v.labels.tolist() == [0]
    np.testing.assert_allclose(v.scores, [[2 / 3, 1 / 3, 0.0]])
    np.testing.assert_allclose(v.agreement, [2 / 3])


def test_hard_tie_broken_by_mean_probability():
    # Two groups vote 0, two vote 1; class 1's mean probability is larger.
    p = np.array([[[0.55, 0.45]], [[0.51, 0.49]], [[0.1, 0.9]], [[0.4, 0.6]]])
    v = vote(p, "hard")
    assert v.labels.tolist() == [1]
    np.testing.assert_allclose(v.scores, [[0.5, 0.5]])
    np.testing.assert_allclose(v.agreement, [0.5])


def test_hard_full_tie_goes_to_smaller_class_index():
    p = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]])  # argmax 0 for both
    assert vote(p, "hard").labels.tolist() == [0]
    q = np.array([[[0.0, 0.6, 0.4]], [[0.0, 0.4, 0.6]]])  # 1 vs 2, equal mean 0.5
    assert vote(q, "hard").labels.tolist() == [1]


def test_hard_tie_break_ignores_classes_outside_the_tie():
    # Votes: class 0 twice, class 1 twice; class 2 has the highest mean probability but
    # no vote majority, so it cannot win.
    p = np.array([[[0.4, 0.0, 0.35]], [[0.4, 0.0, 0.35]], [[0.0, 0.4, 0.35]],
                  [[0.0, 0.45, 0.35]]])
    v = vote(p, "hard")
    assert v.labels.tolist() == [1]


def test_a_group_whose_own_top_scores_tie_votes_for_the_smaller_class_index():
    # Group 0 ties classes 0 and 1, group 2 ties classes 0 and 2: both vote for class 0
    # (argmax takes the first index), which then wins 2 votes to 1. Had ties gone to the
    # larger index, class 1 would win.
    p = np.array([[[0.4, 0.4, 0.2]], [[0.1, 0.9, 0.0]], [[0.45, 0.1, 0.45]]])
    v = vote(p, "hard")
    assert v.labels.tolist() == [0]
    np.testing.assert_allclose(v.scores, [[2 / 3, 1 / 3, 0.0]])
    np.testing.assert_allclose(v.agreement, [2 / 3])
    # Soft voting's agreement counts the same per-group votes.
    np.testing.assert_allclose(vote(p, "soft").agreement,
                               [np.mean(p.argmax(-1)[:, 0] == vote(p, "soft").labels[0])])


def test_soft_tie_goes_to_smaller_class_index():
    # Mean probabilities tie exactly between classes 1 and 2: class 1 wins.
    p = np.array([[[0.1, 0.6, 0.3]], [[0.1, 0.3, 0.6]]])
    v = vote(p, "soft")
    assert v.scores[0, 1] == v.scores[0, 2]
    assert v.labels.tolist() == [1]
    np.testing.assert_allclose(v.agreement, [0.5])  # group 0 ranked 1 first, group 1 ranked 2
    q = p[:, :, ::-1].copy()  # the same tie on classes 1 and 0: class 0 wins
    assert vote(q, "soft").labels.tolist() == [0]


def test_soft_is_mean_of_probabilities():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=(4, 6))  # K=4, N=6, 5 classes
    v = vote(p, "soft")
    np.testing.assert_allclose(v.scores, p.mean(axis=0))
    assert v.labels.tolist() == p.mean(axis=0).argmax(-1).tolist()
    want = (p.argmax(-1) == v.labels[None]).mean(axis=0)
    np.testing.assert_allclose(v.agreement, want)


def test_soft_can_differ_from_hard():
    p = np.array([[[0.51, 0.49]], [[0.51, 0.49]], [[0.0, 1.0]]])
    assert vote(p, "hard").labels.tolist() == [0]
    assert vote(p, "soft").labels.tolist() == [1]
    np.testing.assert_allclose(vote(p, "soft").agreement, [1 / 3])


def test_from_logits_applies_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 5)) * 4
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for method in ("hard", "soft"):
        a, b = vote(logits, method, from_logits=True), vote(probs, method)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-12)
        assert a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.agreement, b.agreement)


def test_from_logits_stable_for_huge_logits():
    logits = np.array([[[1000.0, -1000.0]], [[999.0, 1001.0]]])
    v = vote(logits, "soft", from_logits=True)
    assert np.all(np.isfinite(v.scores))
    np.testing.assert_allclose(v.scores.sum(-1), 1.0)


def test_agreement_bounds_and_unanimity():
    rng = np.random.default_rng(2)
    k = 4
    p = rng.dirichlet(np.ones(3), size=(k, 50))
    v = vote(p, "hard")
    assert np.all(v.agreement >= 1 / k - 1e-12) and np.all(v.agreement <= 1.0)
    same = np.broadcast_to(p[:1], p.shape)
    np.testing.assert_allclose(vote(same, "hard").agreement, 1.0)


def test_single_group_vote_is_argmax():
    p = np.random.default_rng(3).dirichlet(np.ones(4), size=(1, 7))
    v = vote(p, "hard")
    assert v.labels.tolist() == p[0].argmax(-1).tolist()
    np.testing.assert_allclose(v.agreement, 1.0)


def test_integer_scores_are_accepted():
    p = np.array([[[3, 1]], [[0, 2]], [[5, 0]]])
    assert vote(p).labels.tolist() == [0]


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (0, 3, 4), (2, 3, 0)])
def test_bad_score_shapes(shape):
    with pytest.raises(LocalNormError) as info:
        vote(np.zeros(shape))
    assert f"scores.shape={shape}" in str(info.value) and "(K, N, classes)" in str(info.value)


@pytest.mark.parametrize("method", ["majority", "Hard", None])
def test_unknown_method(method):
    with pytest.raises(LocalNormError, match="method="):
        vote(np.zeros((2, 3, 4)), method)


def test_vote_on_torch_and_jax_keeps_array_type():
    torch = pytest.importorskip("torch")
    p = np.random.default_rng(4).dirichlet(np.ones(3), size=(3, 5))
    v = vote(torch.from_numpy(p), "hard")
    assert isinstance(v.labels, torch.Tensor)
    assert v.labels.tolist() == vote(p, "hard").labels.tolist()
    jnp = pytest.importorskip("jax.numpy")
    vj = vote(jnp.asarray(p, dtype=jnp.float32), "soft")
    assert type(vj.scores).__module__.startswith("jax")
    assert np.asarray(vj.labels).tolist() == vote(p, "soft").labels.tolist()


def test_exported():
    assert localnorm.vote is vote and localnorm.Vote is Vote
