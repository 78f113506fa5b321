"""tf-keras's ``BatchNormalization(virtual_batch_size=v)``, rewritten in NumPy float64 from
its algorithm, for the Ghost BatchNorm migration tests (``tests/*/test_*ghost*.py``).

Written independently of localnorm (no import of it), from what tf-keras does:

- training: the batch (N, ...) is reshaped to ``(v, N // v, ...)`` (an error when v does
  not divide N) and the moments are taken over the **first** axis (and the non-channel
  axes), so virtual batch j holds samples ``j, j + N/v, j + 2N/v, ...``: sample n is in
  virtual batch ``n % (N // v)`` (localnorm's ``partition="strided"`` with
  ``K = N // v``). Each is normalized with its biased variance; one gamma/beta.
- the moving statistics move toward the mean over the virtual batches of their means
  and of their biased variances: ``moving = momentum * moving + (1 - momentum) * value``.
- inference: ``(x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta``.

The backward pass is the closed-form BatchNorm derivative of each virtual batch, the
gamma/beta gradients summed over all of them.
"""

from __future__ import annotations

import numpy as np


def _expanded(x: np.ndarray, v: int, axis: int):
    n = x.shape[0]
    if n % v:
        raise ValueError(f"tf-keras needs a batch that is a multiple of virtual_batch_size "
                         f"(reshape to ({v}, -1, ...)); got N={n}")
    xe = x.reshape((v, n // v) + x.shape[1:])
    ax = axis % x.ndim + 1  # the channel axis after the reshape
    reduce = tuple(a for a in range(xe.ndim) if a not in (1, ax))
    shape = [1] * xe.ndim
    shape[ax] = x.shape[axis]
    return xe, reduce, shape


def train_step(x, gamma, beta, moving_mean, moving_variance, *, virtual_batch_size: int,
               momentum: float, epsilon: float, axis: int = -1, cotangent=None):
    """One training call. Returns ``(y, moving_mean, moving_variance, grads)``; grads is
    ``(dx, dgamma, dbeta)`` of ``sum(y * cotangent)`` (None without a cotangent).
    gamma, beta and the moving statistics are (C,) vectors."""
    x = np.asarray(x, np.float64)
    xe, reduce, shape = _expanded(x, virtual_batch_size, axis)
    g = np.reshape(gamma, shape)
    b = np.reshape(beta, shape)
    mean = xe.mean(axis=reduce, keepdims=True)
    var = ((xe - mean) ** 2).mean(axis=reduce, keepdims=True)
    rstd = 1.0 / np.sqrt(var + epsilon)
    xhat = (xe - mean) * rstd
    y = (xhat * g + b).reshape(x.shape)
    new_mean = mean.mean(axis=1).reshape(-1)
    new_var = var.mean(axis=1).reshape(-1)
    moving_mean = momentum * np.asarray(moving_mean) + (1 - momentum) * new_mean
    moving_variance = momentum * np.asarray(moving_variance) + (1 - momentum) * new_var
    grads = None
    if cotangent is not None:
        dy = np.asarray(cotangent, np.float64).reshape(xe.shape)
        m = xe.size / (xe.shape[1] * x.shape[axis])  # values per channel of a virtual batch
        dxhat = dy * g
        dx = rstd / m * (m * dxhat - dxhat.sum(axis=reduce, keepdims=True)
                         - xhat * (dxhat * xhat).sum(axis=reduce, keepdims=True))
        every = tuple(a for a in range(xe.ndim) if shape[a] == 1)
        grads = (dx.reshape(x.shape), (dy * xhat).sum(axis=every).reshape(-1),
                 dy.sum(axis=every).reshape(-1))
    return y, moving_mean, moving_variance, grads


def infer(x, gamma, beta, moving_mean, moving_variance, *, epsilon: float, axis: int = -1):
    """Inference (``training=False``): the moving statistics, any batch size."""
    x = np.asarray(x, np.float64)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = x.shape[axis]
    r = lambda v: np.reshape(v, shape)  # noqa: E731
    return (x - r(moving_mean)) / np.sqrt(r(moving_variance) + epsilon) * r(gamma) + r(beta)
