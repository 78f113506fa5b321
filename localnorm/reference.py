"""The NumPy float64 reference of LocalNorm: the oracle every other implementation is
checked against.

Written for clarity, not speed: explicit loops over statistics sets, float64 throughout,
two-pass variance from correctly rounded sums (:func:`math.fsum`), so that the oracle's
own error is a few roundings of the output at any size. :func:`local_norm` has the
signature of :func:`localnorm.local_norm` and the same input checks; :func:`local_norm_vjp`
gives the exact gradients (the vector-Jacobian product) used by the conformance suite to
check every backend's backward pass.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy
import numpy as np

from . import _errors, _spec

__all__ = ["local_norm", "local_norm_vjp", "statistics_sets"]


def _as_float64(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # e.g. a string: no number to read
        raise _errors.not_an_argument_array(name, value) from None


def _prepare(x, gamma, beta, axis, mode, group, partition, eps, check_finite=True,
             num_groups=None):
    x = np.asarray(x)
    if not _spec.is_real_floating(array_api_compat.numpy, x.dtype):
        raise _errors.not_floating(x.dtype)
    if x.ndim < 2:
        raise _errors.bad_rank(x.ndim, ">= 2")
    axis = _spec.normalize_axis(axis, x.ndim)
    _spec.check_choice("mode", mode, _spec.MODES)
    _spec.check_choice("partition", partition, _spec.PARTITIONS)
    eps = _spec.check_eps(eps)
    check_finite = _spec.check_flag("check_finite", check_finite)
    gamma, beta = _as_float64("gamma", gamma), _as_float64("beta", beta)
    c = x.shape[axis]
    k = _spec.check_param_shapes(tuple(gamma.shape), tuple(beta.shape), c, num_groups)
    # One scale and shift shared by the K groups (Ghost BatchNorm) is row 0 for all.
    gamma = np.broadcast_to(gamma, (k, c))
    beta = np.broadcast_to(beta, (k, c))
    _spec.check_batch(x.shape, axis, mode, k)
    int_group = _spec.check_group(group, k, mode, x.shape[0])
    if int_group is None:
        group = np.asarray(group)
        if not np.issubdtype(group.dtype, np.integer) or group.min() < 0 or group.max() >= k:
            raise _errors.bad_group(group, k)
    else:
        group = int_group
    if check_finite:
        finite = np.isfinite(x)
        if not finite.all():
            raise _errors.not_finite("x", int(finite.size - finite.sum()), finite.size)
    return x, gamma, beta, axis, group, eps


def statistics_sets(
    batch: int,
    num_groups: int,
    *,
    mode: str = "batch",
    group: Any = 0,
    partition: str = "contiguous",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The statistics sets of a batch: a list of ``(samples, param_rows)`` pairs.

    Each pair holds the sample indices (along the batch axis) that share one mean and
    variance per channel, and for each of those samples the row of gamma/beta it uses.
    """
    if mode == "batch":
        gidx = _spec.group_index(batch, num_groups, partition)
        return [
            (np.flatnonzero(gidx == k), np.full(int((gidx == k).sum()), k))
            for k in range(num_groups)
        ]
    rows = np.broadcast_to(np.asarray(group), (batch,))
    if mode == "single":
        return [(np.array([n]), rows[n : n + 1]) for n in range(batch)]
    return [(np.arange(batch), rows)]


def _channel_means(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean per channel of ``a`` over all axes but ``axis``, from correctly rounded sums
    (:func:`math.fsum`), with keepdims. Plain ``ndarray.mean`` sums the non-contiguous
    axes of channels-last data one value at a time, and its rounding error grows with
    the number of values and their offset (about 1e-12 at 10**5 values of mean 50 in
    float64): too much for an oracle held to 1e-12."""
    rows = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    means = np.array([math.fsum(row) / row.size for row in rows])
    shape = [1] * a.ndim
    shape[axis] = a.shape[axis]
    return means.reshape(shape)


def _moments(xs: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased (1/m) variance per channel of a statistics set ``xs`` (two
    passes of correctly rounded sums: the mean, then the mean squared deviation)."""
    mean = _channel_means(xs, axis)
    var = _channel_means((xs - mean) ** 2, axis)
    return mean, var


def _row(p: np.ndarray, rows: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """gamma/beta rows for the samples of a set, shaped to broadcast against them."""
    shape = [1] * ndim
    shape[0] = len(rows)
    shape[axis] = p.shape[1]
    return p[rows].reshape(shape)


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
) -> np.ndarray:
    """Reference LocalNorm: float64 NumPy output of :func:`localnorm.local_norm`.

    Same arguments and checks as :func:`localnorm.local_norm` (see there and
    docs/spec.md for the math), except that ``check_finite`` reads only ``x``: NaN/Inf
    in ``gamma`` or ``beta`` is not refused here and reaches the outputs that use its
    row. The result is always float64. With ``check_finite=False`` NaN/Inf input is not
    refused and poisons the outputs of its statistics set, as it does in every
    implementation.
    """
    x, gamma, beta, axis, group, eps = _prepare(x, gamma, beta, axis, mode, group, partition,
                                                eps, check_finite, num_groups)
    x = x.astype(np.float64)
    y = np.empty_like(x)
    k = gamma.shape[0]
    for samples, rows in statistics_sets(x.shape[0], k, mode=mode, group=group, partition=partition):
        xs = x[samples]
        mean, var = _moments(xs, axis)
        xhat = (xs - mean) / np.sqrt(var + eps)
        y[samples] = xhat * _row(gamma, rows, x.ndim, axis) + _row(beta, rows, x.ndim, axis)
    return y


def local_norm_vjp(
    x,
    gamma,
    beta,
    cotangent,
    *,
    axis: int = -1,
    mode: str = "batch",
    group: Any = 0,
    partition: str = "contiguous",
    eps: float = _spec.DEFAULT_EPS,
    num_groups: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact gradients of ``sum(local_norm(x, gamma, beta) * cotangent)``.

    Returns ``(dx, dgamma, dbeta)`` in float64, with the shapes of x, gamma and beta (a
    shared (1, C) scale/shift gets the sum over the groups that use it).
    Within one statistics set of m values per channel, with ``xhat`` the normalized input,
    ``g = cotangent * gamma_row`` and ``rstd = 1 / sqrt(var + eps)``::

        dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum(cotangent * xhat)   (per row of gamma used)
        dbeta  = sum(cotangent)

    where the means and sums run over the set's values of one channel.
    """
    shared = np.shape(gamma)[0] == 1
    x, gamma, beta, axis, group, eps = _prepare(x, gamma, beta, axis, mode, group, partition, eps,
                                                num_groups=num_groups)
    x = x.astype(np.float64)
    dy = np.asarray(cotangent, dtype=np.float64)
    if dy.shape != x.shape:
        raise _errors.bad_param_shape("cotangent", dy.shape, f"x.shape={x.shape}")
    dx = np.empty_like(x)
    dgamma = np.zeros_like(gamma)
    dbeta = np.zeros_like(beta)
    k = gamma.shape[0]
    reduce_spatial = tuple(a for a in range(1, x.ndim) if a != axis)
    for samples, rows in statistics_sets(x.shape[0], k, mode=mode, group=group, partition=partition):
        xs, dys = x[samples], dy[samples]
        mean, var = _moments(xs, axis)
        rstd = 1.0 / np.sqrt(var + eps)
        xhat = (xs - mean) * rstd
        g = dys * _row(gamma, rows, x.ndim, axis)
        dx[samples] = rstd * (
            g - _channel_means(g, axis) - xhat * _channel_means(g * xhat, axis)
        )
        # Per-sample sums over the spatial axes, then accumulate into the rows they used.
        per_sample_dg = (dys * xhat).sum(axis=reduce_spatial)
        per_sample_db = dys.sum(axis=reduce_spatial)
        np.add.at(dgamma, rows, per_sample_dg.reshape(len(samples), -1))
        np.add.at(dbeta, rows, per_sample_db.reshape(len(samples), -1))
    if shared:
        return dx, dgamma.sum(axis=0, keepdims=True), dbeta.sum(axis=0, keepdims=True)
    return dx, dgamma, dbeta
