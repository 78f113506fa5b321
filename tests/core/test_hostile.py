"""Regression tests of issue 16 (hostile input) for the core: every case of the issue's
list that concerns localnorm.local_norm, vote, noise and the protocols gives the
project's error (naming the argument and the value received) or a defined finite result.
Meanings are tested, not wordings."""

from __future__ import annotations

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, noise, vote
from localnorm import _spec
from localnorm.protocols import run_protocol


def _data(n=8, c=3, k=2, dtype=np.float64):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, c)).astype(dtype), np.ones((k, c), dtype),
            np.zeros((k, c), dtype))


# -- group: never truncated -------------------------------------------------------------

@pytest.mark.parametrize("group", [np.float64(1.7), np.float32(1.0), np.array(1.0),
                                   np.array(True), np.bool_(True), np.array(1.5)],
                         ids=["np.float64(1.7)", "np.float32(1.0)", "array(1.0)",
                              "array(True)", "np.bool_(True)", "array(1.5)"])
@pytest.mark.parametrize("mode", ["set", "single"])
def test_0d_float_or_bool_group_is_refused_like_python_float_and_bool(group, mode):
    x, g, b = _data()
    x = np.repeat(x[:, :, None], 2, axis=2)  # single mode needs a spatial axis
    with pytest.raises(LocalNormError) as info:
        localnorm.local_norm(x, g, b, axis=1, mode=mode, group=group)
    text = str(info.value)
    assert "group=" in text and "batch axis" in text
    # The same refusal as the Python value it holds.
    with pytest.raises(LocalNormError):
        localnorm.local_norm(x, g, b, axis=1, mode=mode, group=group.item())


def test_0d_integer_group_is_an_int_group():
    x, g, b = _data()
    g[1] = 2.0
    y = localnorm.local_norm(x, g, b, mode="set", group=np.array(1, dtype=np.int32))
    np.testing.assert_allclose(y, localnorm.local_norm(x, g, b, mode="set", group=1))


def test_group_column_array_is_reported_by_its_shape():
    x, g, b = _data()
    x = np.repeat(x[:, :, None], 2, axis=2)
    with pytest.raises(LocalNormError) as info:
        localnorm.local_norm(x, g, b, axis=1, mode="single", group=np.zeros((8, 1), int))
    text = str(info.value)
    assert "(8, 1)" in text and "1-D" in text and "reshape" in text


# -- eps: never 0 in the statistics ---------------------------------------------------------

@pytest.mark.parametrize("eps", [1e-50, 1e-40, 5e-324])
def test_eps_that_underflows_in_float32_is_refused(eps):
    x, g, b = _data(dtype=np.float32)
    x[:, 0] = 3.0  # a constant channel: variance 0, so the output is 0/sqrt(eps)
    with pytest.raises(LocalNormError) as info:
        localnorm.local_norm(x, g, b, eps=eps)
    assert f"eps={eps!r}" in str(info.value) and "float32" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_smallest_accepted_eps_gives_finite_output_on_a_constant_channel(dtype):
    x, g, b = _data(dtype=dtype)
    x[:, 0] = 3.0
    y = localnorm.local_norm(x, g, b, eps=_spec.MIN_EPS)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[:, 0], 0.0)


@pytest.mark.parametrize("eps", [True, "1e-5", np.array([1e-5, 1e-5]), np.bool_(False),
                                 float("nan"), float("inf"), 0.0, -1e-5])
def test_eps_of_wrong_type_or_value_is_refused(eps):
    x, g, b = _data()
    with pytest.raises(LocalNormError, match="eps="):
        localnorm.local_norm(x, g, b, eps=eps)


def test_eps_0d_array_is_its_value():
    x, g, b = _data()
    np.testing.assert_allclose(localnorm.local_norm(x, g, b, eps=np.array(1e-3)),
                               localnorm.local_norm(x, g, b, eps=1e-3))


# -- NaN in gamma/beta ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gamma", "beta"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gamma_or_beta_is_refused_when_check_finite(name, bad):
    x, g, b = _data()
    params = {"gamma": g, "beta": b}
    params[name][1, 2] = bad
    with pytest.raises(LocalNormError) as info:
        localnorm.local_norm(x, params["gamma"], params["beta"])
    assert f"{name} with 1 non-finite" in str(info.value)
    assert "check_finite=False" in str(info.value)
    y = localnorm.local_norm(x, params["gamma"], params["beta"], check_finite=False)
    assert not np.all(np.isfinite(y))  # the check is what stands between them


# -- vote -------------------------------------------------------------------------------

def _probs(k=3, n=4, classes=5, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=(k, n))


@pytest.mark.parametrize("method", ["hard", "soft"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_vote_refuses_nan_scores(method, from_logits):
    p = _probs()
    p[1, 2] = np.nan  # one group's scores of one sample
    with pytest.raises(LocalNormError) as info:
        vote(p, method, from_logits=from_logits)
    assert "NaN" in str(info.value) and "Received:" in str(info.value)
    with pytest.raises(LocalNormError):
        vote(np.full((3, 2, 4), np.nan), method, from_logits=from_logits)


def test_vote_refuses_infinite_probabilities():
    p = _probs()
    p[0, 0, 0] = np.inf
    with pytest.raises(LocalNormError, match="from_logits=True"):
        vote(p, "soft")


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_vote_infinite_logits_are_the_softmax_limit(method):
    logits = np.log(_probs())
    logits[0, 0] = [np.inf, 0.0, -np.inf, 1.0, 2.0]  # group 0 is certain of class 0
    logits[1, 0] = -np.inf  # group 1 gives no class any chance: uniform
    logits[2, 0] = [0.0, np.inf, np.inf, 0.0, 0.0]  # two certain classes share the mass
    v = vote(logits, method, from_logits=True)
    assert np.all(np.isfinite(v.scores)) and np.all(np.isfinite(v.agreement))
    if method == "soft":
        np.testing.assert_allclose(v.scores[0], [(1 + .2 + 0) / 3, (.2 + .5) / 3,
                                                 (.2 + .5) / 3, .2 / 3, .2 / 3])
        assert v.labels[0] == 0
    # Other samples are unaffected by the infinities of sample 0.
    ref = vote(np.log(_probs()), method, from_logits=True)
    np.testing.assert_allclose(v.scores[1:], ref.scores[1:])


def test_soft_vote_on_raw_logits_without_from_logits_is_refused():
    logits = np.random.default_rng(1).normal(scale=3, size=(3, 4, 5))
    with pytest.raises(LocalNormError) as info:
        vote(logits, "soft")
    assert "from_logits=True" in str(info.value)
    v = vote(logits, "soft", from_logits=True)
    np.testing.assert_allclose(v.scores.sum(-1), 1.0)
    # Hard voting needs only each group's ranking: logits are fine either way.
    assert vote(logits, "hard").labels.tolist() == vote(
        logits, "hard", from_logits=True).labels.tolist()


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_vote_takes_python_lists(method):
    p = _probs(k=3, n=2, classes=3)
    v = vote(p.tolist(), method)
    ref = vote(p, method)
    np.testing.assert_allclose(v.scores, ref.scores)
    assert v.labels.tolist() == ref.labels.tolist()


@pytest.mark.parametrize("scores", [[[[0.5, 0.5]], [[1.0]]], [[["a", "b"]]], "abc", None])
def test_vote_refuses_ragged_or_non_numeric_lists(scores):
    with pytest.raises(LocalNormError, match="scores"):
        vote(scores)


# -- noise ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(noise.NOISES))
@pytest.mark.parametrize("sigma", [True, False, np.bool_(True), "0.1", b"0.1",
                                   np.array([0.1, 0.2]), np.array([0.1]), None, 1j],
                         ids=repr)
def test_sigma_of_wrong_type_is_refused(name, sigma):
    with pytest.raises(LocalNormError) as info:
        noise.NOISES[name](np.ones((2, 3, 3)), sigma, seed=0)
    text = str(info.value)
    assert "sigma=" in text
    assert "out of range" not in text  # the reason is the type or shape, not a range


@pytest.mark.parametrize("name", sorted(noise.NOISES))
@pytest.mark.parametrize("sigma", [np.float32(0.5), np.array(0.5), 0, np.int64(0)],
                         ids=repr)
def test_sigma_numpy_scalars_are_numbers(name, sigma):
    x = np.full((2, 3, 3), 0.5)
    np.testing.assert_array_equal(noise.NOISES[name](x, sigma, seed=3),
                                  noise.NOISES[name](x, float(sigma), seed=3))


@pytest.mark.parametrize("name", sorted(noise.NOISES))
def test_noise_takes_python_lists(name):
    x = np.random.default_rng(0).random((2, 3, 3))
    y = noise.NOISES[name](x.tolist(), 0.5, seed=1)
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, noise.NOISES[name](x, 0.5, seed=1))


def test_noise_refuses_non_numeric_lists():
    with pytest.raises(TypeError, match="type\\(x\\)"):
        noise.agn([["a", "b"]], 0.1)
    with pytest.raises(TypeError, match="x.dtype"):  # ints: the non-floating error
        noise.agn([[1, 2]], 0.1)


# -- the BATCH protocol with fewer images than K ----------------------------------------

def test_batch_protocol_with_fewer_images_than_groups_suggests_a_fix_that_helps():
    def forward(x, mode, group):
        return x[:, :3]

    x = np.ones((3, 5))
    with pytest.raises(LocalNormError) as info:
        run_protocol(forward, x, protocol="batch", num_groups=4, batch_size=2)
    text = str(info.value)
    assert "x.shape[0]=3" in text and "single" in text and "voting" in text
    assert "smaller batch_size" not in text  # cannot help: BATCH never has fewer groups
    # The suggested protocols do take 3 images.
    for protocol in ("single-voting", "voting"):
        run_protocol(forward, x, protocol=protocol, num_groups=4)
