"""The paper's noises and the standard corruptions (published CIFAR-10-C parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from localnorm import LocalNormError
from localnorm.experiments import corruptions as C


@pytest.fixture(scope="module")
def grey():
    rng = np.random.default_rng(0)
    return rng.random((6, 1, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(1)
    return rng.random((4, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("name", C.NOISES)
def test_shape_dtype_determinism(name, grey, rgb):
    for x in (grey, rgb):
        level = C.DEFAULT_LEVELS[name][2]
        a = C.corrupt(x, name, level, seed=7)
        b = C.corrupt(x, name, level, seed=7)
        assert a.shape == x.shape and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, x)
        if name in C.CORRUPTIONS:
            assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("name", [n for n in C.CORRUPTIONS if n != "brightness"])
def test_severity_increases_damage(name, rgb):
    # Averaged over the images, each step of severity moves the result further from the clean
    # images (a loose check of the parameter order; pixelate/JPEG steps can tie on 16x16).
    d = [np.abs(C.corrupt(rgb, name, s, seed=0) - rgb).mean() for s in range(1, 6)]
    assert d[4] > d[0]
    assert all(b >= a - 1e-3 for a, b in zip(d, d[1:])), d


def test_paper_noises_match_localnorm_noise(grey):
    from localnorm import noise

    np.testing.assert_array_equal(C.corrupt(grey, "agn", 1.0, seed=3),
                                  noise.agn(grey, 1.0, seed=3))
    # MBN drops whole pixels: one mask shared by the channels (axis 1).
    rgb = np.ones((2, 3, 8, 8), np.float32)
    y = C.corrupt(rgb, "mbn", 0.5, seed=0)
    assert np.all(y.min(axis=1) == y.max(axis=1)) and 0.3 < (y == 0).mean() < 0.7


def test_published_parameters_closed_forms(grey):
    x = grey
    # contrast: (x - mean) * c + mean with the per-image, per-channel mean, c = 0.5 at 2.
    m = x.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(C.corrupt(x, "contrast", 2), np.clip((x - m) * 0.5 + m, 0, 1), atol=1e-6)
    # brightness on grey is x + c, c = 0.3 at 5.
    np.testing.assert_allclose(C.corrupt(x, "brightness", 5), np.clip(x + 0.3, 0, 1), atol=1e-6)
    # gaussian noise has std c = 0.04 at 1 (away from the clip).
    mid = np.full((50, 1, 16, 16), 0.5, np.float32)
    assert abs(np.std(C.corrupt(mid, "gaussian_noise", 1, seed=0) - mid) - 0.04) < 2e-3
    # impulse noise replaces a fraction c = 0.07 at 5 by 0 or 1.
    changed = C.corrupt(mid, "impulse_noise", 5, seed=0) != mid
    assert abs(changed.mean() - 0.07) < 0.01
    # shot noise: Poisson(x * c) / c, c = 50 at 5: mean kept, variance x / c.
    y = C.corrupt(mid, "shot_noise", 5, seed=0)
    assert abs(y.mean() - 0.5) < 0.01 and abs(y.var() - 0.5 / 50) < 1e-3


def test_brightness_rgb_matches_hsv_definition(rgb):
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hwc = rgb.transpose(0, 2, 3, 1).astype(np.float64)
    hsv = rgb_to_hsv(hwc)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.2, 0, 1)
    expected = hsv_to_rgb(hsv).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(C.corrupt(rgb, "brightness", 4), expected, atol=1e-5)


def test_blur_kernels_preserve_constants_and_mass():
    k = C._disk(1.5, 0.1)
    assert k.shape == (17, 17) and abs(k.sum() - 1) < 1e-12
    const = np.full((2, 3, 12, 12), 0.25, np.float32)
    for name in ("defocus_blur", "gaussian_blur", "pixelate"):
        np.testing.assert_allclose(C.corrupt(const, name, 5), const, atol=2e-3)
    # A point spreads over the disk radius (1.5 px at severity 5) but not beyond ~2 px.
    point = np.zeros((1, 1, 17, 17), np.float32)
    point[0, 0, 8, 8] = 1
    y = C.corrupt(point, "defocus_blur", 5)
    assert y[0, 0, 8, 8] < 0.2 and y[0, 0, 8, 9] > 0 and y[0, 0, 8, 12] == 0


def test_gaussian_blur_matches_scipy_reference():
    from scipy import ndimage

    rng = np.random.default_rng(2)
    x = rng.random((1, 1, 10, 10)).astype(np.float32)
    expected = ndimage.gaussian_filter(x[0, 0].astype(np.float64), 1.0, mode="nearest")
    np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", 5)[0, 0], np.clip(expected, 0, 1), atol=1e-5)


@pytest.mark.parametrize("name,level", [("gaussian_noise", 0), ("contrast", 6), ("jpeg_compression", 2.5),
                                        ("mbn", 1.5), ("agn", -1)])
def test_bad_levels_name_the_value(name, level, grey):
    with pytest.raises(LocalNormError) as info:
        C.corrupt(grey, name, level)
    assert repr(level) in str(info.value) or str(level) in str(info.value)


def test_unknown_noise_and_bad_rank(grey):
    with pytest.raises(LocalNormError, match="fog"):
        C.corrupt(grey, "fog", 1)
    with pytest.raises(LocalNormError, match="ndim=3"):
        C.corrupt(grey[:, 0], "agn", 1)
