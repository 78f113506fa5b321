"""LocalNorm in ``keras.ops``: the math of :func:`localnorm.local_norm` for Keras tensors.

The core's array-API implementation needs an array-API namespace and a batch size known
in Python; neither holds under the TensorFlow backend, whose ``tf.function`` traces give
the batch axis an unknown size (``None``) as soon as a ragged last batch arrives. This
module computes the same function with ``keras.ops`` only, so it runs on the TensorFlow,
JAX and PyTorch backends, for static and dynamic batch sizes alike. The conformance suite
(subject ``keras``) holds it equal to :mod:`localnorm.reference`.

Inputs here are validated already (see ``layers.LocalNormalization``): ``axis`` is a
non-negative int, ``mode`` is one of ``"batch"``, ``"single"``, ``"set"``, ``group`` an
int or an integer tensor of shape (N,).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from localnorm import _errors, _spec


def compute_dtype(*dtypes: Any) -> str:
    """At least float32: float16/bfloat16 statistics are accumulated in float32 (as the
    core's ``_agnostic.compute_dtype``)."""
    if any(keras.backend.standardize_dtype(d) == "float64" for d in dtypes):
        return "float64"
    return "float32"


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) else None


def _mean(x, axis: tuple[int, ...], keepdims: bool = False):
    """Mean over ``axis`` as sum / count: ``keras.ops.mean`` on the PyTorch backend
    accumulates float64 input in float32 (Keras 3.15), which would cost float64 its
    precision."""
    count = 1.0
    dynamic = None
    for a in axis:
        if isinstance(x.shape[a], int):
            count *= x.shape[a]
        else:
            size = ops.cast(ops.shape(x)[a], x.dtype)
            dynamic = size if dynamic is None else dynamic * size
    total = ops.sum(x, axis=axis, keepdims=keepdims)
    total = total / count if count != 1.0 else total
    return total if dynamic is None else total / dynamic


def is_traced(x) -> bool:
    """Whether ``x`` has no values yet: a TensorFlow graph tensor (``tf.function``, also
    with ``jit_compile``), a JAX tracer (``jax.jit``, ``grad``, ``vmap``) or a tensor
    under ``torch.compile``. Eager tensors (and NumPy input) are not traced."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if backend == "torch":
        import torch

        return torch.compiler.is_compiling()
    return False


def count_non_finite(x) -> int:
    """How many NaN/Inf values an eager tensor holds: one pass and one device-to-host
    transfer of a bool when all are finite; the count is only computed when some are
    not."""
    finite = ops.isfinite(x)
    if bool(ops.convert_to_numpy(ops.all(finite))):
        return 0
    return int(ops.convert_to_numpy(ops.sum(ops.cast(ops.logical_not(finite), "int32"))))


def run_time_batch_check(x, axis: int, mode: str, num_groups: int, dialect: _errors.Dialect):
    """Where the batch size is unknown until run time, refuse at run time what
    :func:`localnorm._spec.check_batch` refuses at trace time: fewer samples than groups
    in "batch" mode, or a statistics set with one value per channel. Sizes are unknown
    in TensorFlow graphs (a ``tf.function`` trace with a ``None`` batch axis, as
    ``model.fit`` makes for a ragged last batch; a SavedModel) and in JAX programs
    exported with a symbolic batch size (``model.export`` on JAX).

    Returns ``(x, poison)``. ``poison`` is a scalar, 0 for a valid batch and NaN
    otherwise, that :func:`local_norm` adds to its scale: an invalid batch gives an
    all-NaN output (and NaN loss and gradients) instead of plausible numbers. On
    TensorFlow ``x`` is also made to depend on ``tf.debugging`` assertions, which raise
    ``InvalidArgumentError`` with the :mod:`localnorm._errors` message in a plain graph;
    XLA (``jit_compile=True``, Keras's default for TensorFlow on a GPU) drops assertions,
    so there the NaN is what remains. JAX programs cannot raise at run time at all. On
    PyTorch shapes are concrete except under ``torch.export`` (ONNX export) and
    ``torch.compile(dynamic=True)``: the poison applies there too.
    """
    backend = keras.backend.backend()
    shape = ops.shape(x)
    n = ops.cast(shape[0], "int32")
    spatial = 1
    for a in range(1, x.ndim):
        if a != axis:
            spatial = spatial * ops.cast(shape[a], "int32")
    if mode == "batch":
        smallest, enough = ops.floor_divide(n, num_groups), n >= num_groups
    else:
        smallest, enough = (n if mode == "set" else 1), n >= 1
    two = smallest * spatial >= 2
    poison = ops.where(ops.logical_and(enough, two), 0.0, float("nan"))
    if backend != "tensorflow":
        return x, poison
    import tensorflow as tf

    printed = "(the run-time value, printed below)"
    if mode == "batch":
        first = tf.debugging.assert_greater_equal(
            n, num_groups, message=str(_errors.too_few_samples(printed, num_groups, dialect)))
    else:
        first = tf.debugging.assert_greater_equal(n, 1, message=str(_errors.empty_batch()))
    second = tf.debugging.assert_greater_equal(
        smallest * spatial, 2, message=str(_errors.single_value_statistics(
            mode, "fewer than 2 " + printed, (None,) + tuple(x.shape[1:]), dialect)))
    with tf.control_dependencies([first, second]):
        return tf.identity(x), poison


def _bshape(ndim: int, axis: int, channels: int, batch: int = 1) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[0] = batch
    shape[axis] = channels
    return tuple(shape)


def _per_sample(v, ndim: int, axis: int, channels: int):
    """(N, C) -> broadcastable (N, 1.., C, 1..) with C at ``axis``; N may be unknown."""
    return ops.reshape(v, _bshape(ndim, axis, channels, -1))


def group_index(batch: Any, num_groups: int, partition: str):
    """Group (along the batch axis) of each sample, as :func:`localnorm.group_index`.

    ``batch`` is a Python int (then the core's NumPy index is used as a constant), a
    scalar tensor (TensorFlow: a batch size unknown until run time) or a JAX symbolic
    dimension, for which the same index is computed with tensor ops: with ``q, r = divmod(N, K)``, the first ``r`` groups hold
    ``q + 1`` samples and the others ``q``.
    """
    if isinstance(batch, int):
        return ops.convert_to_tensor(_spec.group_index(batch, num_groups, partition), "int32")
    n = ops.cast(batch, "int32")
    # arange from the size itself: a JAX symbolic dimension gives a shape-polymorphic
    # arange, a traced int32 value would not.
    i = ops.arange(0, batch, dtype="int32")
    if partition == "strided":
        return ops.mod(i, num_groups)
    q = ops.floor_divide(n, num_groups)
    r = ops.mod(n, num_groups)
    big = r * (q + 1)
    small = r + ops.floor_divide(i - big, ops.maximum(q, 1))
    return ops.where(i < big, ops.floor_divide(i, q + 1), small)


def _batch_moments_reshape(xc, axis: int, num_groups: int, partition: str):
    """Per-group mean and variance, shape (K, C), when N is a known multiple of K."""
    n, k = xc.shape[0], num_groups
    lead = (k, n // k) if partition == "contiguous" else (n // k, k)
    red0 = 1 if partition == "contiguous" else 0
    spatial = tuple(a + 1 for a in range(1, xc.ndim) if a != axis)
    xr = ops.reshape(xc, lead + tuple(xc.shape[1:]))
    mean = _mean(xr, axis=(red0,) + spatial, keepdims=True)
    var = _mean(ops.square(xr - mean), axis=(red0,) + spatial, keepdims=True)
    c = xc.shape[axis]
    return ops.reshape(mean, (k, c)), ops.reshape(var, (k, c))


def _batch_moments_segments(xc, axis: int, num_groups: int, gidx):
    """Per-group mean and variance, shape (K, C), for any batch size (ragged or unknown):
    per-sample moments over the spatial axes, then masked sums over the samples of each
    group. (Elementwise masks rather than ``segment_sum``, which accumulates float64 in
    float32 on the PyTorch backend, or a matmul, which may run in TF32 on GPUs.)"""
    ndim, c = xc.ndim, xc.shape[axis]
    spatial = tuple(a for a in range(1, ndim) if a != axis)

    def per_sample(v):  # mean over the spatial axes -> (N, C)
        v = _mean(v, axis=spatial) if spatial else v
        return ops.reshape(v, (-1, c))

    member = ops.cast(
        ops.expand_dims(gidx, 0) == ops.expand_dims(ops.arange(num_groups, dtype="int32"), 1),
        xc.dtype,
    )[:, :, None]  # (K, N, 1)
    count = ops.sum(member, axis=1)  # (K, 1)
    mean = ops.sum(member * per_sample(xc)[None], axis=1) / count
    centred = xc - _per_sample(ops.take(mean, gidx, axis=0), ndim, axis, c)
    var = ops.sum(member * per_sample(ops.square(centred))[None], axis=1) / count
    return mean, var


def local_norm(x, gamma, beta, *, num_groups: int, axis: int, mode: str, group: Any,
               partition: str, eps: float, poison=None):
    """LocalNorm of Keras tensors (validated input): see :func:`localnorm.local_norm`.

    ``gamma``/``beta`` of shape (K, C), or None for no scale / no shift. Statistics and
    the affine transform are computed in at least float32; the result has x's dtype.
    ``poison`` (from :func:`run_time_batch_check`, for an unknown batch size) is a scalar
    added to the scale: 0, or NaN for a batch whose statistics are undefined.
    """
    ndim, k = x.ndim, num_groups
    c = x.shape[axis]
    cdt = compute_dtype(x.dtype)
    xc = ops.cast(x, cdt)
    gamma = ops.ones((k, c), cdt) if gamma is None else ops.cast(gamma, cdt)
    beta = ops.zeros((k, c), cdt) if beta is None else ops.cast(beta, cdt)
    spatial = tuple(a for a in range(1, ndim) if a != axis)
    poison = None if poison is None else ops.cast(poison, cdt)

    if mode == "batch":
        n = _static(x.shape[0])
        static = all(_static(d) is not None for d in x.shape)
        if static and n % k == 0:
            # (x - mean) * scale + beta on a (K, m, ...) view: the subtraction first keeps
            # near-constant groups with a large offset accurate in float32.
            mean_k, var_k = _batch_moments_reshape(xc, axis, k, partition)
            scale_k = gamma * ops.rsqrt(var_k + eps)
            lead = (k, n // k) if partition == "contiguous" else (n // k, k)
            pshape = [1] * (ndim + 1)
            pshape[0 if partition == "contiguous" else 1] = k
            pshape[axis + 1] = c
            xr = ops.reshape(xc, lead + tuple(xc.shape[1:]))
            y = (xr - ops.reshape(mean_k, pshape)) * ops.reshape(scale_k, pshape)
            y = ops.reshape(y + ops.reshape(beta, pshape), tuple(xc.shape))
        else:
            gidx = group_index(n if n is not None else ops.shape(x)[0], k, partition)
            mean_k, var_k = _batch_moments_segments(xc, axis, k, gidx)
            scale_k = gamma * ops.rsqrt(var_k + eps)
            if poison is not None:
                scale_k = scale_k + poison

            def gather(v):
                return _per_sample(ops.take(v, gidx, axis=0), ndim, axis, c)

            y = (xc - gather(mean_k)) * gather(scale_k) + gather(beta)
    else:
        red = spatial if mode == "single" else (0,) + spatial
        mean = _mean(xc, axis=red, keepdims=True)
        var = _mean(ops.square(xc - mean), axis=red, keepdims=True)
        rstd = ops.rsqrt(var + eps)
        if isinstance(group, (int, np.integer)):
            g = ops.reshape(gamma[int(group)], _bshape(ndim, axis, c))
            b = ops.reshape(beta[int(group)], _bshape(ndim, axis, c))
        else:
            idx = ops.cast(group, "int32")
            g = _per_sample(ops.take(gamma, idx, axis=0), ndim, axis, c)
            b = _per_sample(ops.take(beta, idx, axis=0), ndim, axis, c)
        scale = rstd * g if poison is None else rstd * g + poison
        y = (xc - mean) * scale + b
    return ops.cast(y, x.dtype)
