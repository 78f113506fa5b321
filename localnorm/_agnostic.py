"""Array-API implementation of LocalNorm (no validation; see ``_core.local_norm``).

Pure array-API calls on the namespace ``xp`` of the input, so the same code runs on
NumPy, array-api-strict, PyTorch, JAX and CuPy arrays (through array-api-compat), and is
differentiable where the framework is. No Python loop over samples or groups: per-group
statistics come from one reshape (batch a multiple of K) or one one-hot matmul (ragged
batch), then are gathered back to the samples with ``take``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _spec


def compute_dtype(xp, *dtypes):
    """At least float32: float16/bfloat16 statistics are accumulated in float32."""
    out = xp.float32
    for dt in dtypes:
        if dt == xp.float64:
            out = xp.float64
    return out


def _bshape(ndim: int, axis: int, channels: int, batch: int = 1) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[0] = batch
    shape[axis] = channels
    return tuple(shape)


def _per_sample(xp, v, ndim: int, axis: int):
    """(N, C) -> broadcastable (N, 1.., C, 1..) with C at ``axis``."""
    return xp.reshape(v, _bshape(ndim, axis, v.shape[1], v.shape[0]))


def group_moments(xp, x, axis: int, num_groups: int, partition: str):
    """Per-group mean and biased variance, each of shape (K, C), in x's dtype."""
    n = x.shape[0]
    k = num_groups
    ndim = x.ndim
    c = x.shape[axis]
    spatial = tuple(a for a in range(1, ndim) if a != axis)
    if n % k == 0:
        m = n // k
        # contiguous: (K, m, ...) reduce axis 1; strided: (m, K, ...) reduce axis 0.
        lead = (k, m) if partition == "contiguous" else (m, k)
        red0 = 1 if partition == "contiguous" else 0
        xr = xp.reshape(x, lead + tuple(x.shape[1:]))
        red = (red0,) + tuple(a + 1 for a in spatial)
        mean = xp.mean(xr, axis=red, keepdims=True)
        var = xp.mean((xr - mean) ** 2, axis=red, keepdims=True)
        return xp.reshape(mean, (k, c)), xp.reshape(var, (k, c))
    # Ragged batch: one-hot (K, N) membership, sums by matmul.
    gidx = _spec.group_index(n, k, partition)
    dev = _device(xp, x)
    onehot_np = (gidx[None, :] == np.arange(k)[:, None]).astype(np.float64)
    onehot = xp.asarray(onehot_np, dtype=x.dtype, device=dev)
    count = xp.asarray(
        _spec.group_sizes(n, k).astype(np.float64), dtype=x.dtype, device=dev
    )[:, None] * float(_spatial_size(x.shape, axis))
    s1 = xp.reshape(xp.sum(x, axis=spatial), (n, c)) if spatial else xp.reshape(x, (n, c))
    mean = (onehot @ s1) / count
    idx = xp.asarray(gidx, device=dev)
    mean_s = _per_sample(xp, xp.take(mean, idx, axis=0), ndim, axis)
    sq = (x - mean_s) ** 2
    s2 = xp.reshape(xp.sum(sq, axis=spatial), (n, c)) if spatial else xp.reshape(sq, (n, c))
    var = (onehot @ s2) / count
    return mean, var


def _spatial_size(shape, axis) -> int:
    size = 1
    for a, s in enumerate(shape):
        if a not in (0, axis):
            size *= s
    return size


def _device(xp, x):
    from array_api_compat import device

    return device(x)


def local_norm(xp, x, gamma, beta, *, axis: int, mode: str, group: Any, partition: str, eps: float):
    """LocalNorm on validated input (see :func:`localnorm.local_norm`)."""
    ndim = x.ndim
    n = x.shape[0]
    c = x.shape[axis]
    k = gamma.shape[0]
    cdt = compute_dtype(xp, x.dtype, gamma.dtype, beta.dtype)
    xc = xp.astype(x, cdt) if x.dtype != cdt else x
    gamma = xp.astype(gamma, cdt) if gamma.dtype != cdt else gamma
    beta = xp.astype(beta, cdt) if beta.dtype != cdt else beta
    spatial = tuple(a for a in range(1, ndim) if a != axis)

    if mode == "batch":
        # (x - mean) * scale + beta rather than x * scale + shift: the subtraction first
        # keeps near-constant groups with a large offset accurate in float32.
        mean_k, var_k = group_moments(xp, xc, axis, k, partition)
        scale_k = gamma / xp.sqrt(var_k + eps)  # (K, C)
        if n % k == 0:
            m = n // k
            lead = (k, m) if partition == "contiguous" else (m, k)
            pshape = [1] * (ndim + 1)
            pshape[0 if partition == "contiguous" else 1] = k
            pshape[axis + 1] = c
            pshape = tuple(pshape)
            xr = xp.reshape(xc, lead + tuple(xc.shape[1:]))
            y = (xr - xp.reshape(mean_k, pshape)) * xp.reshape(scale_k, pshape)
            y = xp.reshape(y + xp.reshape(beta, pshape), tuple(xc.shape))
        else:
            idx = xp.asarray(_spec.group_index(n, k, partition), device=_device(xp, x))
            def gather(v):
                return _per_sample(xp, xp.take(v, idx, axis=0), ndim, axis)
            y = (xc - gather(mean_k)) * gather(scale_k) + gather(beta)
    else:
        red = spatial if mode == "single" else (0,) + spatial
        mean = xp.mean(xc, axis=red, keepdims=True)
        var = xp.mean((xc - mean) ** 2, axis=red, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        if isinstance(group, int):
            g = xp.reshape(gamma[group, :], _bshape(ndim, axis, c))
            b = xp.reshape(beta[group, :], _bshape(ndim, axis, c))
        else:
            idx = group
            g = _per_sample(xp, xp.take(gamma, idx, axis=0), ndim, axis)
            b = _per_sample(xp, xp.take(beta, idx, axis=0), ndim, axis)
        y = (xc - mean) * (rstd * g) + b
    return xp.astype(y, x.dtype) if y.dtype != x.dtype else y
