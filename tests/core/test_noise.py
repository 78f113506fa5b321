"""The paper's noise models: moments with a fixed seed, determinism per seed, MBN's mask
shared across channels, channel_axis, errors, and the array type kept."""

from __future__ import annotations

import numpy as np
import pytest

from localnorm import LocalNormError, noise

SHAPE = (8, 64, 64, 3)  # NHWC
ONES = np.ones(SHAPE)


def _se(std, n):
    """Five standard errors of a sample mean: generous and still a real test."""
    return 5 * std / np.sqrt(n)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_agn_moments(sigma):
    f = noise.agn(ONES, sigma, seed=0)  # = 1 + xi
    assert abs(f.mean() - 1) < _se(sigma, f.size)
    assert abs(f.std() - sigma) < 0.01 * sigma


@pytest.mark.parametrize("sigma", [0.2, 1.0])
def test_apn_moments(sigma):
    f = noise.apn(ONES, sigma, seed=0) - 1  # xi ~ Poisson(sigma): mean = var = sigma
    assert abs(f.mean() - sigma) < _se(np.sqrt(sigma), f.size)
    assert abs(f.var() - sigma) < 0.02 * sigma
    assert np.array_equal(f, np.round(f)) and f.min() >= 0  # integer counts


@pytest.mark.parametrize("sigma", [0.1, 0.7])
def test_mbn_fraction_dropped(sigma):
    m = noise.mbn(ONES, sigma, seed=0)
    assert set(np.unique(m).tolist()) <= {0.0, 1.0}
    assert abs((m == 0).mean() - sigma) < _se(np.sqrt(sigma * (1 - sigma)), m.size / 3)


def test_mbn_mask_shared_across_channels():
    m = noise.mbn(ONES, 0.5, seed=1)  # channel_axis=-1
    assert np.all(m == m[..., :1])
    nchw = np.ones((4, 3, 16, 16))
    m1 = noise.mbn(nchw, 0.5, seed=1, channel_axis=1)
    assert np.all(m1 == m1[:, :1])
    assert 0.3 < (m1 == 0).mean() < 0.7


def test_mbn_without_channel_axis_is_per_element():
    grey = np.ones((4, 32, 32))
    m = noise.mbn(grey, 0.5, seed=2, channel_axis=None)
    assert m.shape == grey.shape and 0.4 < (m == 0).mean() < 0.6
    m_last = noise.mbn(grey, 0.5, seed=2)  # channel_axis=-1 shares along the last axis
    assert np.all(m_last == m_last[..., :1])


def test_mbn_extremes():
    assert np.all(noise.mbn(ONES, 0.0, seed=0) == 1)
    assert np.all(noise.mbn(ONES, 1.0, seed=0) == 0)


@pytest.mark.parametrize("centered, mean", [(False, 0.5), (True, 0.0)])
def test_uniform_moments(centered, mean):
    sigma = 0.4
    f = (noise.uniform(ONES, sigma, seed=0, centered=centered) - 1) / sigma  # u
    assert abs(f.mean() - mean) < _se(np.sqrt(1 / 12), f.size)
    assert abs(f.var() - 1 / 12) < 0.02 / 12
    lo, hi = (mean - 0.5, mean + 0.5)
    assert f.min() >= lo - 1e-12 and f.max() <= hi + 1e-12


@pytest.mark.parametrize("centered", ["False", 0, 1, None])
def test_uniform_centered_is_a_bool(centered):
    # The string "False" is truthy: an on/off option is never read for its truth value.
    with pytest.raises(LocalNormError, match="centered"):
        noise.uniform(ONES, 0.4, seed=0, centered=centered)


@pytest.mark.parametrize("name", sorted(noise.NOISES))
def test_multiplicative_and_deterministic(name):
    fn = noise.NOISES[name]
    x = np.random.default_rng(9).uniform(0, 1, size=(2, 8, 8, 3))
    a, b = fn(x, 0.3, seed=123), fn(x, 0.3, seed=123)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, fn(x, 0.3, seed=124))
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(fn(x, 0.3, seed=g1), fn(x, 0.3, seed=g2))
    # Multiplicative: noise on x is x times the noise on ones.
    np.testing.assert_allclose(a, x * fn(np.ones_like(x), 0.3, seed=123))
    np.testing.assert_array_equal(fn(x, 0.0, seed=1), x)


@pytest.mark.parametrize("name", sorted(noise.NOISES))
def test_dtype_kept(name):
    x = np.ones((2, 4, 4, 3), dtype=np.float32)
    y = noise.NOISES[name](x, 0.2, seed=0)
    assert y.dtype == np.float32 and y.shape == x.shape


@pytest.mark.parametrize("name", sorted(noise.NOISES))
@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "x", None])
def test_bad_sigma(name, sigma):
    with pytest.raises(LocalNormError) as info:
        noise.NOISES[name](ONES[:1], sigma, seed=0)
    assert f"sigma={sigma!r}" in str(info.value)


@pytest.mark.parametrize("name", sorted(noise.NOISES))
@pytest.mark.parametrize("seed", ["abc", True, -1, 0.5])
def test_bad_seed(name, seed):
    with pytest.raises(LocalNormError) as info:
        noise.NOISES[name](ONES[:1], 0.1, seed=seed)
    assert f"seed={seed!r}" in str(info.value) and "Fix" in str(info.value)


def test_seed_sequence_is_a_seed():
    ss = np.random.SeedSequence(7)
    np.testing.assert_array_equal(noise.agn(ONES[:1], 0.1, seed=ss),
                                  noise.agn(ONES[:1], 0.1, seed=np.random.default_rng(ss)))


def test_dtype_is_checked_before_anything_else():
    with pytest.raises(TypeError, match="x.dtype=int64"):
        noise.agn(np.ones((2, 3, 3), dtype=np.int64), -1.0, seed="abc")


def test_numpy_bfloat16_kept():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones((2, 4, 4, 3)).astype(ml_dtypes.bfloat16)
    for fn in noise.NOISES.values():
        y = fn(x, 0.2, seed=0)
        assert y.dtype == x.dtype and y.shape == x.shape


def test_mbn_sigma_above_one():
    with pytest.raises(LocalNormError, match=r"sigma=1\.5.*\[0, 1\.0\]"):
        noise.mbn(ONES[:1], 1.5, seed=0)


@pytest.mark.parametrize("name", sorted(noise.NOISES))
def test_non_floating_input(name):
    with pytest.raises(TypeError, match="x.dtype=uint8") as info:
        noise.NOISES[name](np.ones((2, 3, 3), dtype=np.uint8), 0.1, seed=0)
    # the noise's own reason, not the normalization's (it once said "LocalNorm normalizes")
    assert "noise" in str(info.value) and "normalizes" not in str(info.value)


@pytest.mark.parametrize("axis", [0, 4, -5])
def test_mbn_bad_channel_axis(axis):
    with pytest.raises(LocalNormError, match=f"axis={axis}"):
        noise.mbn(ONES[:1], 0.5, seed=0, channel_axis=axis)


@pytest.mark.parametrize("name", sorted(noise.NOISES))
def test_namespace_kept_and_same_noise_everywhere(name):
    """torch, jax and array-api-strict arrays come back as their own type, with the
    same noise as NumPy for the same seed."""
    fn = noise.NOISES[name]
    x = np.random.default_rng(0).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    want = fn(x, 0.3, seed=11)
    torch = pytest.importorskip("torch")
    yt = fn(torch.from_numpy(x), 0.3, seed=11)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_array_equal(yt.numpy(), want)
    jnp = pytest.importorskip("jax.numpy")
    yj = fn(jnp.asarray(x), 0.3, seed=11)
    assert type(yj).__module__.startswith("jax") and yj.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(yj), want, rtol=1e-6)
    xps = pytest.importorskip("array_api_strict")
    ys = fn(xps.asarray(x), 0.3, seed=11)
    assert type(ys).__module__.startswith("array_api_strict") and ys.dtype == xps.float32
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-6)
