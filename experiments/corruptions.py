"""Image degradations for the robustness experiment, on NumPy batches (N, C, H, W) in [0, 1].

Two families, one entry point :func:`corrupt`:

**The paper's noise models** (section 4), from :mod:`localnorm.noise`, with a level sigma:
``agn`` (additive Gaussian, ``x * (1 + xi)``), ``apn`` (additive Poisson) and ``mbn``
(multiplicative Bernoulli, one mask per pixel shared by the channels). As in the paper,
the result is not clipped. ``uniform`` is the noise the paper's original code applied
under the name "gaussian": ``x * (1 + sigma * u)``, ``u ~ Uniform(0, 1)`` (a random
brightening, see :func:`localnorm.noise.uniform`); it is here to compare with AGN.

**Standard corruptions** (Hendrycks & Dietterich, ICLR 2019: ImageNet-C / CIFAR-10-C),
severities 1 to 5, with the published CIFAR-10-C parameters (``make_cifar_c.py``),
re-implemented with NumPy, SciPy and Pillow (the ``imagecorruptions`` package is broken on
NumPy 2). The result is clipped to [0, 1]; unlike the published .npy files it is not
quantized to 8 bits.

======================  ===================================================================
``gaussian_noise``      ``x + Normal(0, c)``, c = .04, .06, .08, .09, .10
``shot_noise``          ``Poisson(x * c) / c``, c = 500, 250, 100, 75, 50
``impulse_noise``       salt and pepper on a fraction c = .01, .02, .03, .05, .07 of the
                        values (per pixel and channel, half salt, half pepper, as
                        ``skimage.util.random_noise(mode="s&p")``)
``defocus_blur``        a disk of radius r anti-aliased by a 3x3 Gaussian of sigma a,
                        (r, a) = (.3, .4), (.4, .5), (.5, .6), (1, .2), (1.5, .1); borders
                        mirrored (OpenCV's BORDER_REFLECT_101)
``gaussian_blur``       Gaussian of sigma c = .4, .6, .7, .8, 1 on the spatial axes; borders
                        "nearest", truncated at 4 sigma (as ``skimage.filters.gaussian``)
``contrast``            ``(x - mean) * c + mean`` with the per-image, per-channel mean,
                        c = .75, .5, .4, .3, .15
``brightness``          HSV value ``v + c``, clipped to 1, c = .05, .1, .15, .2, .3 (for
                        grey images simply ``x + c``)
``pixelate``            box-downsample to ``int(size * c)`` then box-upsample, c = .95, .9,
                        .85, .75, .65 (on 8x8 digits the sizes collapse to 7, 7, 6, 6, 5,
                        so severities 1-2 and 3-4 are the same image; on 28x28 MNIST:
                        26, 25, 23, 21, 18; on 32x32 CIFAR: 30, 28, 27, 24, 20)
``jpeg_compression``    JPEG at quality c = 80, 65, 58, 50, 40 (Pillow)
======================  ===================================================================

The published parameters are kept as they are, whatever the image size: they were chosen
for 32x32 CIFAR images in [0, 1], so on small grey digits several are mild (e.g.
``gaussian_noise`` at severity 5 adds noise of standard deviation 0.10, where the paper's
AGN at sigma=1 multiplies each pixel by ``1 + Normal(0, 1)``).

Everything random is drawn from a NumPy generator seeded by the caller, so every method of
an experiment sees the same degraded images.
"""

from __future__ import annotations

import math

import io
from typing import Any

import numpy as np

from localnorm import _spec
from localnorm import noise as _noise
from . import _errors

__all__ = ["PAPER_NOISES", "CORRUPTIONS", "CODE_NOISES", "NOISES", "DEFAULT_LEVELS", "corrupt", "check_level"]

#: The paper's noise models (level: sigma).
PAPER_NOISES = ("agn", "apn", "mbn")

#: The standard corruptions (level: severity 1..5).
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur",
    "contrast", "brightness", "pixelate", "jpeg_compression",
)

#: The paper's original code's "gaussian" noise, which was uniform (level: sigma).
CODE_NOISES = ("uniform",)

#: Every degradation :func:`corrupt` knows (new names go last: the experiment derives each
#: noise's seed from its index here).
NOISES = PAPER_NOISES + CORRUPTIONS + CODE_NOISES

#: Levels evaluated by default (the clean images, level 0, are always evaluated once).
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "agn": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
    "apn": (0.1, 0.2, 0.5, 1.0),
    "mbn": (0.1, 0.2, 0.3, 0.5, 0.7),
    "uniform": (0.5, 1.0, 2.0, 4.0),
    **{name: (1, 2, 3, 4, 5) for name in CORRUPTIONS},
}

_PARAMS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}


def check_level(name: str, level: Any) -> float:
    """Validate ``level`` for degradation ``name``; returns it as a float."""
    _spec.check_choice("noise", name, NOISES)
    if name in CORRUPTIONS:
        try:
            s = float(level)
        except (TypeError, ValueError):
            raise _errors.bad_corruption_severity(name, level) from None
        if not math.isfinite(s) or s != int(s) or not 1 <= s <= 5:
            raise _errors.bad_corruption_severity(name, level)
        return s
    return _noise._level(level, upper=1.0 if name == "mbn" else None)


def _gaussian_kernel1d(sigma: float, radius: int) -> np.ndarray:
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel of make_cifar_c.py: a 17x17 aliased disk, then a 3x3 Gaussian."""
    from scipy import ndimage

    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = _gaussian_kernel1d(alias_blur, 1)
    return ndimage.convolve(disk, np.outer(g, g), mode="mirror")


def _pil_roundtrip(x: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn(PIL.Image) -> PIL.Image`` to each uint8 image of an NCHW batch."""
    from PIL import Image

    u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    grey = u8.shape[1] == 1
    out = np.empty_like(u8)
    for i in range(len(u8)):  # Pillow works one image at a time
        img = Image.fromarray(u8[i, 0] if grey else u8[i].transpose(1, 2, 0))
        res = np.asarray(fn(img))
        out[i] = res[None] if grey else res.transpose(2, 0, 1)
    return out.astype(np.float32) / np.float32(255.0)


def _corruption(x: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    c = _PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        y = x + rng.normal(scale=c, size=x.shape)
    elif name == "shot_noise":
        y = rng.poisson(np.clip(x, 0, None) * c) / c
    elif name == "impulse_noise":
        flipped = rng.random(x.shape) <= c
        salted = rng.random(x.shape) <= 0.5
        y = np.where(flipped, salted.astype(x.dtype), x)
    elif name == "defocus_blur":
        k = _disk(*c)
        y = ndimage.convolve(x, k[None, None], mode="mirror")
    elif name == "gaussian_blur":
        y = ndimage.gaussian_filter(x, sigma=(0, 0, c, c), mode="nearest", truncate=4.0)
    elif name == "contrast":
        means = x.mean(axis=(2, 3), keepdims=True)
        y = (x - means) * c + means
    elif name == "brightness":
        if x.shape[1] == 1:
            y = x + c
        else:
            # HSV keeps hue and saturation; RGB = V * f(H, S), so raising V scales the
            # pixel by v_new / v (a black pixel, S undefined, becomes grey v_new).
            v = x.max(axis=1, keepdims=True)
            v_new = np.clip(v + c, 0, 1)
            y = np.where(v > 0, x * (v_new / np.where(v > 0, v, 1)), v_new)
    elif name == "pixelate":
        from PIL import Image

        h, w = x.shape[2:]
        small = (max(int(w * c), 1), max(int(h * c), 1))
        y = _pil_roundtrip(x, lambda im: im.resize(small, Image.BOX).resize((w, h), Image.BOX))
    else:  # jpeg_compression
        from PIL import Image

        def jpeg(im):
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=int(c))
            buf.seek(0)
            with Image.open(buf) as out:
                return out.copy()

        y = _pil_roundtrip(x, jpeg)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def corrupt(x: np.ndarray, name: str, level: float, *, seed: Any = None) -> np.ndarray:
    """Degrade a batch of images with noise model or corruption ``name`` at ``level``.

    Parameters
    ----------
    x : numpy.ndarray, shape (N, C, H, W)
        Images in [0, 1] (channels on axis 1).
    name : str
        One of :data:`NOISES`.
    level : float
        sigma for the paper's noises and ``uniform`` (``mbn``: in [0, 1]); severity 1..5 for the standard
        corruptions. Level 0 of a paper noise returns the images unchanged.
    seed : int or numpy.random.Generator, optional
        Seeds every random draw.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``x``.
    """
    level = check_level(name, level)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise _errors.bad_rank(x.ndim, "4 (N, C, H, W)", where="corrupt")
    if name == "mbn":
        return np.asarray(_noise.mbn(x, level, seed=seed, channel_axis=1), dtype=np.float32)
    if name in PAPER_NOISES or name in CODE_NOISES:
        return np.asarray(_noise.NOISES[name](x, level, seed=seed), dtype=np.float32)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _corruption(x, name, int(level), rng)
