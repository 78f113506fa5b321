"""The public LocalNorm functional: validation, then the array-API implementation."""

from __future__ import annotations

import math
import sys
from typing import Any

import array_api_compat
import numpy as np

from . import _agnostic, _errors, _spec

__all__ = ["local_norm"]


def _namespace(x, gamma, beta):
    for name, value in (("x", x), ("gamma", gamma), ("beta", beta)):
        if not array_api_compat.is_array_api_obj(value):  # array_namespace skips None
            raise _errors.not_an_argument_array(name, value)
    try:
        return array_api_compat.array_namespace(x, gamma, beta)
    except TypeError:
        names = ", ".join(f"{n}: {type(v).__module__}.{type(v).__name__}" for n, v in
                          (("x", x), ("gamma", gamma), ("beta", beta)))
        raise _errors.mixed_namespaces(names) from None


def _is_concrete(x) -> bool:
    """Whether x's values can be read now. array-api-compat calls every JAX array lazy
    (it cannot tell eager arrays from tracers without importing JAX); an eager JAX
    array is concrete, a tracer (under jit/grad/vmap) is not."""
    if array_api_compat.is_jax_array(x):
        return not isinstance(x, sys.modules["jax"].core.Tracer)
    return not array_api_compat.is_lazy_array(x)


def local_norm(
    x,
    gamma,
    beta,
    *,
    axis: int = -1,
    mode: str = "batch",
    group: Any = 0,
    partition: str = "contiguous",
    eps: float = _spec.DEFAULT_EPS,
    check_finite: bool = True,
    num_groups: int | None = None,
):
    r"""Local Normalization: BatchNorm with K groups along the batch axis.

    The batch (axis 0) is split into K groups **along the batch axis** (not over channels,
    as GroupNorm does). Each statistics set :math:`S` (a group in ``"batch"`` mode, one
    sample in ``"single"`` mode, the whole batch in ``"set"`` mode) has its own mean and
    variance per channel :math:`c`, and every sample :math:`n` uses the scale and shift of
    one group :math:`k(n)`:

    .. math::

        y_{n,c,\ldots} = \frac{x_{n,c,\ldots} - \mu_{S,c}}{\sqrt{\sigma^2_{S,c} + \epsilon}}
        \, \gamma_{k(n),c} + \beta_{k(n),c},
        \qquad
        \mu_{S,c} = \frac{1}{m} \sum_{i \in S_c} x_i,
        \quad
        \sigma^2_{S,c} = \frac{1}{m} \sum_{i \in S_c} (x_i - \mu_{S,c})^2

    where :math:`S_c` are the :math:`m` values of channel :math:`c` of the samples in
    :math:`S` over all non-channel axes. The variance is the biased (1/m) estimator and
    :math:`\epsilon` is added to the variance inside the square root. This is the
    normalization of Yin et al., *LocalNorm: Robust Image Classification through
    Dynamically Regularized Normalization* (2019), section 3; the full specification,
    including the test-time protocols built on these modes, is in ``docs/spec.md``.

    Parameters
    ----------
    x : array
        Input of rank >= 2 from any array-API library (NumPy, array-api-strict, PyTorch,
        JAX, CuPy, ...), batch on axis 0, real floating dtype: float16, bfloat16 (on
        NumPy, ``ml_dtypes.bfloat16``, as JAX's bfloat16 arrays convert), float32 or
        float64.
    gamma : array
        Per-group scale, of shape ``(K, C)``: K groups along the batch axis, C channels;
        or ``(1, C)``, one scale shared by every group (Ghost BatchNorm: group statistics,
        one affine transform), with K given by ``num_groups``. Same array library as ``x``.
    beta : array
        Per-group shift, of the shape of ``gamma``.
    axis : int, default -1
        The channel axis: any axis but 0 (negative values count from the end). The
        default matches channels-last layouts (Keras, Flax); PyTorch layouts use 1.
    mode : {"batch", "single", "set"}, default "batch"
        ``"batch"``: the batch is partitioned into K groups along the batch axis; each
        group uses its own statistics and its own gamma_k/beta_k (training, and the
        paper's BATCH protocol). ``"single"``: every sample uses its own statistics, with
        the gamma/beta of ``group``. ``"set"``: all samples share one set of statistics,
        with the gamma/beta of ``group`` (the building block of VOTING).
    group : int or integer array, default 0
        Which row of gamma/beta to use in ``"single"`` and ``"set"`` mode (unused in
        ``"batch"`` mode, but still checked: an int in [0, K)). In ``"single"`` mode it
        may also be an integer array of shape ``(N,)`` giving each sample its own group,
        so that the SINGLE and SINGLE-VOTING protocols run as one pass.
    partition : {"contiguous", "strided"}, default "contiguous"
        How ``"batch"`` mode assigns samples to groups. ``"contiguous"`` (the paper's):
        group k holds consecutive samples; ``"strided"``: sample n is in group n mod K.
        With ``q, r = divmod(N, K)`` the first r groups hold q + 1 samples and the rest q,
        under both partitions, so a ragged last batch works as long as N >= K.
    eps : float, default 1e-5
        Added to the variance before the square root (the original LocalNorm code's value
        and PyTorch's BatchNorm default; Keras uses 1e-3 and Flax 1e-5). Must be finite
        and at least float32's smallest normal number (about 1.18e-38): statistics are
        computed in at least float32, where a smaller eps would become 0.
    check_finite : bool, default True
        Refuse x, gamma or beta containing NaN or Inf (one bad value of x would poison the
        statistics of its whole group, one of gamma/beta a whole channel of a group).
        Skipped for lazy/traced arrays, whose values are not known.
    num_groups : int, optional
        K, the number of groups along the batch axis in ``"batch"`` mode. Default: the
        number of rows of ``gamma``. Needed (and checked against gamma's rows, which must
        be K or 1) when ``gamma`` and ``beta`` are one shared ``(1, C)`` row.

    Returns
    -------
    array
        Same array type, shape, device and dtype as ``x``. Statistics and the affine
        transform are computed in at least float32 (float16/bfloat16 input is upcast and
        the result cast back), and in float64 when x, gamma or beta is float64.

    Raises
    ------
    TypeError
        If x is not real floating point, or x, gamma and beta come from different array
        libraries.
    ValueError
        (:class:`localnorm.LocalNormError`) for a rank below 2, a bad channel axis,
        gamma/beta not of shape (K, C), an unknown mode or partition, a group out of
        range (a float, bool or 0-d float array group is refused, never truncated), a group
        array that is not 1-D of length N, an eps that is not positive and finite or is
        below float32's smallest normal number (about 1.18e-38; it would become 0 in the
        statistics), an empty batch, fewer samples than groups in
        ``"batch"`` mode, a statistics set with a single value per channel, or non-finite
        x, gamma or beta.

    Examples
    --------
    >>> import numpy as np
    >>> import localnorm
    >>> x = np.random.default_rng(0).normal(size=(8, 3, 4, 4))  # N, C, H, W
    >>> gamma, beta = np.ones((2, 3)), np.zeros((2, 3))         # K=2 groups, C=3
    >>> y = localnorm.local_norm(x, gamma, beta, axis=1)
    >>> y.shape
    (8, 3, 4, 4)
    >>> bool(np.allclose(y[:4].mean(axis=(0, 2, 3)), 0.0))  # group 0: samples 0..3
    True
    """
    xp = _namespace(x, gamma, beta)
    if not _spec.is_real_floating(xp, x.dtype):
        raise _errors.not_floating(x.dtype)
    if x.ndim < 2:
        raise _errors.bad_rank(x.ndim, ">= 2")
    axis = _spec.normalize_axis(axis, x.ndim)
    _spec.check_choice("mode", mode, _spec.MODES)
    _spec.check_choice("partition", partition, _spec.PARTITIONS)
    eps = _spec.check_eps(eps)
    check_finite = _spec.check_flag("check_finite", check_finite)
    c = x.shape[axis]
    k = _spec.check_param_shapes(tuple(gamma.shape), tuple(beta.shape), c, num_groups)
    _spec.check_batch(tuple(x.shape), axis, mode, k)
    int_group = _spec.check_group(group, k, mode, x.shape[0])
    if int_group is None:
        group = _as_group_array(xp, group, x, k)
    else:
        group = int_group
    if check_finite:
        for name, a in (("x", x), ("gamma", gamma), ("beta", beta)):
            if _is_concrete(a):
                finite = xp.isfinite(a)
                if not bool(xp.all(finite)):
                    bad = int(xp.count_nonzero(xp.logical_not(finite)))
                    raise _errors.not_finite(name, bad, math.prod(a.shape))
    return _agnostic.local_norm(
        xp, x, gamma, beta, axis=axis, mode=mode, group=group, partition=partition, eps=eps,
        num_groups=k,
    )


def _as_group_array(xp, group, x, k):
    if isinstance(group, np.ndarray):
        if not np.issubdtype(group.dtype, np.integer) or group.min() < 0 or group.max() >= k:
            raise _errors.bad_group(group, k)
        return xp.asarray(group.astype(np.int64), device=array_api_compat.device(x))
    gxp = array_api_compat.array_namespace(group)
    if not gxp.isdtype(group.dtype, "integral"):
        raise _errors.bad_group(group, k)
    if _is_concrete(group) and not (bool(gxp.min(group) >= 0) and bool(gxp.max(group) < k)):
        raise _errors.bad_group(group, k)
    return group
