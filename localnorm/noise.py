"""The paper's image-noise models (section 4), for any array-API array.

All three multiply the clean image ``x`` by random noise drawn independently per image
(and, except MBN's mask, per channel), with the level ``sigma``:

- :func:`agn`, additive Gaussian noise: ``x * (1 + xi)``, ``xi ~ Normal(0, sigma**2)``
  per pixel and channel;
- :func:`apn`, additive Poisson noise: ``x * (1 + xi)``, ``xi ~ Poisson(sigma)`` per pixel
  and channel (as the original code: the noise is not zero-mean, it brightens the image);
- :func:`mbn`, multiplicative Bernoulli noise: ``x * m``, ``m ~ Bernoulli(1 - sigma)`` per
  pixel, one mask shared by all channels (sigma is the fraction of pixels dropped);
- :func:`uniform`, the original code's "gaussian" noise, which was in fact uniform:
  ``x * (1 + sigma * u)``, ``u ~ Uniform(0, 1)`` (or ``Uniform(-0.5, 0.5)`` with
  ``centered=True``).

Noise is drawn with NumPy from an explicit seed or ``numpy.random.Generator`` (so the same
seed gives the same noise for every framework) and moved to ``x``'s namespace and device.
The result has x's array type and dtype. ``channel_axis`` (default -1, channels-last;
use 1 for NCHW) only matters for :func:`mbn`'s shared mask; ``None`` means x has no
channel axis (e.g. a batch of grey images (N, H, W)). Axis 0 is the batch axis.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from . import _errors, _spec

__all__ = ["agn", "apn", "mbn", "uniform", "NOISES"]


def _rng(seed: Any) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _level(sigma: Any, name: str = "sigma", upper: float | None = None) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise _errors.bad_noise_level(name, sigma, ">= 0") from None
    valid = f"in [0, {upper}]" if upper is not None else ">= 0 and finite"
    if not math.isfinite(s) or s < 0 or (upper is not None and s > upper):
        raise _errors.bad_noise_level(name, sigma, valid)
    return s


def _apply(x, factor: np.ndarray):
    xp = array_api_compat.array_namespace(x)
    if not _spec.is_real_floating(xp, x.dtype):
        raise _errors.not_floating(x.dtype)
    f = xp.asarray(factor, device=array_api_compat.device(x))
    return x * xp.astype(f, x.dtype)


def agn(x, sigma: float, *, seed: Any = None):
    """Additive Gaussian noise: ``x * (1 + xi)``, ``xi ~ Normal(0, sigma**2)`` per
    pixel and channel. ``sigma=0`` returns x unchanged."""
    s = _level(sigma)
    return _apply(x, 1.0 + s * _rng(seed).standard_normal(tuple(x.shape)))


def apn(x, sigma: float, *, seed: Any = None):
    """Additive Poisson noise: ``x * (1 + xi)``, ``xi ~ Poisson(sigma)`` per pixel and
    channel (sigma >= 0 is the Poisson rate; the paper uses [0, 1])."""
    s = _level(sigma)
    return _apply(x, 1.0 + _rng(seed).poisson(s, tuple(x.shape)).astype(np.float64))


def mbn(x, sigma: float, *, seed: Any = None, channel_axis: int | None = -1):
    """Multiplicative Bernoulli noise: ``x * m``, ``m ~ Bernoulli(1 - sigma)`` per pixel,
    shared across channels; sigma in [0, 1] is the probability that a pixel is dropped."""
    s = _level(sigma, upper=1.0)
    shape = list(x.shape)
    if channel_axis is not None:
        axis = _spec.normalize_axis(channel_axis, len(shape))
        shape[axis] = 1
    keep = _rng(seed).random(tuple(shape)) >= s
    return _apply(x, np.broadcast_to(keep.astype(np.float64), tuple(x.shape)).copy())


def uniform(x, sigma: float, *, seed: Any = None, centered: bool = False):
    """The original code's "gaussian" noise, which was uniform: ``x * (1 + sigma * u)``
    with ``u ~ Uniform(0, 1)``, or ``Uniform(-0.5, 0.5)`` with ``centered=True``."""
    s = _level(sigma)
    u = _rng(seed).random(tuple(x.shape))
    if centered:
        u = u - 0.5
    return _apply(x, 1.0 + s * u)


#: The noise models by name, as used by the robustness experiment.
NOISES = {"agn": agn, "apn": apn, "mbn": mbn, "uniform": uniform}
