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
The result has x's array type and dtype; a nested Python list is read as a NumPy array
(a float64 one for Python floats). sigma is one real number (an int, a float, a NumPy
scalar or a 0-d array); a bool, a string or an array of several levels is refused. ``channel_axis`` (default -1, channels-last;
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
    rng = _spec.as_generator(seed)
    if rng is None:
        raise _errors.bad_seed(seed)
    return rng


def _level(sigma: Any, name: str = "sigma", upper: float | None = None) -> float:
    """sigma as a float: a real number (an int, a float, a NumPy scalar or a 0-d array),
    finite, >= 0 (and <= ``upper``). A bool, a string or an array of several values is
    refused with its own reason, never read as a number."""
    valid = f"in [0, {upper}]" if upper is not None else ">= 0 and finite"
    if isinstance(sigma, (bool, np.bool_, str, bytes)) or getattr(
            getattr(sigma, "dtype", None), "kind", "f") not in "iuf":
        raise _errors.bad_noise_level(name, sigma, valid, problem="it is not a real number")
    shape = getattr(sigma, "shape", ())
    if len(shape) != 0:
        raise _errors.bad_noise_level(
            name, sigma, valid, problem=f"it is an array of shape {tuple(shape)}, and one "
            "call applies one noise level (loop over the levels, one call each)")
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise _errors.bad_noise_level(name, sigma, valid,
                                      problem="it is not a real number") from None
    if not math.isfinite(s) or s < 0 or (upper is not None and s > upper):
        raise _errors.bad_noise_level(name, sigma, valid)
    return s


def _as_array(x):
    """x as it is when it is an array-API array; a nested Python list or tuple becomes a
    NumPy float64 array (so ``agn([[0.5, 1.0]], 0.1)`` returns a NumPy array)."""
    if array_api_compat.is_array_api_obj(x):
        return x
    try:
        out = np.asarray(x)
    except (TypeError, ValueError):
        raise _errors.not_an_array("x", x) from None
    if out.dtype.kind in "iub":  # Python ints/bools: refused below as non-floating
        return out
    if out.dtype.kind != "f":
        raise _errors.not_an_array("x", x)
    return out


def _check_x(x) -> None:
    """Refuse non-floating x before any noise is drawn."""
    xp = array_api_compat.array_namespace(x)
    if not _spec.is_real_floating(xp, x.dtype):
        raise _errors.noise_not_floating(x.dtype)


def _apply(x, factor: np.ndarray):
    xp = array_api_compat.array_namespace(x)
    f = xp.asarray(factor, device=array_api_compat.device(x))
    return x * xp.astype(f, x.dtype)


def agn(x, sigma: float, *, seed: Any = None):
    """Additive Gaussian noise (the paper's AGN): ``x * (1 + xi)``, with
    ``xi ~ Normal(0, sigma**2)`` drawn per pixel and channel.

    Parameters
    ----------
    x : array
        Clean images, batch on axis 0, real floating dtype, any array-API array.
    sigma : float
        Standard deviation of xi, >= 0 and finite; 0 returns x unchanged.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of the noise: the same seed gives the same noise in every framework. A
        Generator is used as it is (and advanced); None draws fresh entropy.

    Returns
    -------
    array
        The noisy images: x's array type, shape, device and dtype.

    Raises
    ------
    TypeError
        If x is not real floating point.
    LocalNormError
        If sigma is out of range, or seed is not one of the above.
    """
    x = _as_array(x)
    _check_x(x)
    s = _level(sigma)
    return _apply(x, 1.0 + s * _rng(seed).standard_normal(tuple(x.shape)))


def apn(x, sigma: float, *, seed: Any = None):
    """Additive Poisson noise (the paper's APN): ``x * (1 + xi)``, with
    ``xi ~ Poisson(sigma)`` drawn per pixel and channel.

    As in the original code the noise is not zero-mean: it brightens the image.

    Parameters
    ----------
    x : array
        Clean images, batch on axis 0, real floating dtype, any array-API array.
    sigma : float
        The Poisson rate, >= 0 and finite (the paper uses [0, 1]); 0 returns x unchanged.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of the noise: the same seed gives the same noise in every framework. A
        Generator is used as it is (and advanced); None draws fresh entropy.

    Returns
    -------
    array
        The noisy images: x's array type, shape, device and dtype.

    Raises
    ------
    TypeError
        If x is not real floating point.
    LocalNormError
        If sigma is out of range, or seed is not one of the above.
    """
    x = _as_array(x)
    _check_x(x)
    s = _level(sigma)
    return _apply(x, 1.0 + _rng(seed).poisson(s, tuple(x.shape)).astype(np.float64))


def mbn(x, sigma: float, *, seed: Any = None, channel_axis: int | None = -1):
    """Multiplicative Bernoulli noise (the paper's MBN): ``x * m``, with
    ``m ~ Bernoulli(1 - sigma)`` drawn per pixel, one mask shared by all channels.

    Parameters
    ----------
    x : array
        Clean images, batch on axis 0, real floating dtype, any array-API array.
    sigma : float
        Probability that a pixel is dropped (set to 0), in [0, 1].
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of the noise: the same seed gives the same noise in every framework. A
        Generator is used as it is (and advanced); None draws fresh entropy.
    channel_axis : int or None, default -1
        The axis the mask is shared along: -1 for channels-last, 1 for NCHW (not 0, the
        batch axis). None: x has no channel axis (e.g. grey images (N, H, W)) and every
        element gets its own draw.

    Returns
    -------
    array
        The noisy images: x's array type, shape, device and dtype.

    Raises
    ------
    TypeError
        If x is not real floating point.
    LocalNormError
        If sigma is out of range, seed is not one of the above, or channel_axis is out
        of range or 0.
    """
    x = _as_array(x)
    _check_x(x)
    s = _level(sigma, upper=1.0)
    shape = list(x.shape)
    if channel_axis is not None:
        axis = _spec.normalize_axis(channel_axis, len(shape))
        shape[axis] = 1
    keep = _rng(seed).random(tuple(shape)) >= s
    return _apply(x, np.broadcast_to(keep.astype(np.float64), tuple(x.shape)).copy())


def uniform(x, sigma: float, *, seed: Any = None, centered: bool = False):
    """The original LocalNorm code's "gaussian" noise, which was uniform:
    ``x * (1 + sigma * u)``, with ``u ~ Uniform(0, 1)`` drawn per pixel and channel (or
    ``Uniform(-0.5, 0.5)`` with ``centered=True``).

    Parameters
    ----------
    x : array
        Clean images, batch on axis 0, real floating dtype, any array-API array.
    sigma : float
        Scale of u, >= 0 and finite; 0 returns x unchanged.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of the noise: the same seed gives the same noise in every framework. A
        Generator is used as it is (and advanced); None draws fresh entropy.
    centered : bool, default False
        Draw u from Uniform(-0.5, 0.5) (zero-mean) instead of the original Uniform(0, 1).
        Must be ``True`` or ``False`` (the string ``"False"`` is refused, not read as
        true).

    Returns
    -------
    array
        The noisy images: x's array type, shape, device and dtype.

    Raises
    ------
    TypeError
        If x is not real floating point.
    LocalNormError
        If sigma is out of range, seed is not one of the above, or centered is not a
        bool.
    """
    x = _as_array(x)
    _check_x(x)
    s = _level(sigma)
    centered = _spec.check_flag("centered", centered)
    u = _rng(seed).random(tuple(x.shape))
    if centered:
        u = u - 0.5
    return _apply(x, 1.0 + s * u)


#: The noise models by name, as used by the robustness experiment.
NOISES = {"agn": agn, "apn": apn, "mbn": mbn, "uniform": uniform}
