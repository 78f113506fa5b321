"""LocalNorm in ``keras.ops``: the math of :func:`localnorm.local_norm` for Keras tensors.

The core's array-API implementation needs an array-API namespace and a batch size known
in Python; neither holds under the TensorFlow backend, whose ``tf.function`` traces give
the batch axis an unknown size (``None``) as soon as a ragged last batch arrives. This
module computes the same function with ``keras.ops`` only, so it runs on the TensorFlow,
JAX and PyTorch backends, for static and dynamic batch sizes alike. The conformance suite
(subject ``keras``) holds it equal to :mod:`localnorm.reference`.

How it runs fast on each backend (``benchmarks/discussion.md`` has the measurements):

- Statistics are per-sample moments over the spatial axes first (a two-pass variance,
  which XLA fuses into one reduction as BatchNormalization's own), then combined over
  each group's samples, a tensor of N*C values (the variance by the law of total
  variance). Every reduction covers adjacent axes of the group view, which TensorFlow's
  CPU kernels need: reducing the non-adjacent axes (0, 2, 3) of a strided
  (N/K, K, H, W, C) view costs more than a whole BatchNormalization.
- Training ("batch" mode, all sizes known, N a multiple of K) has the closed-form
  BatchNorm backward per group (``keras.ops.custom_gradient``) on TensorFlow and JAX:
  the sums of dy and dy * (x - mean), then one elementwise pass for dx, where autodiff
  would transpose every pass of the forward. Its derivatives are differentiable again
  (second order, as for a gradient penalty).
- On PyTorch, eager calls run the torch adapter's kernels (``localnorm.torch``'s
  ``batch_groups``, ``single``, ``set_stats``: in-place buffers, one fused
  ``F.batch_norm`` where the groups are a free view, the closed-form backward), since
  every ``keras.ops`` call is one eager kernel with a fresh output there. Traced calls
  (``torch.compile``, ``torch.export``, ONNX export, ``torch.func``) and unknown sizes
  take the ``keras.ops`` path.

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
    under a PyTorch tracer (``torch.compile``/``torch.export``, TorchScript tracing as
    the ONNX exporter does, ``torch.func`` transforms). Eager tensors (and NumPy input)
    are not traced."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if backend == "torch":
        from localnorm.torch import _functional

        return _functional.graph_mode()
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


def _group_view(xc, axis: int, num_groups: int, partition: str):
    """The batch of N = m*K samples viewed as (K, m, ...) (contiguous groups) or
    (m, K, ...) (strided); returns the view, its sample axis (the samples of one group)
    and its spatial axes (all but the two leading axes and the channel axis)."""
    n, k = xc.shape[0], num_groups
    lead = (k, n // k) if partition == "contiguous" else (n // k, k)
    sample = 1 if partition == "contiguous" else 0
    spatial = tuple(a + 1 for a in range(1, xc.ndim) if a != axis)
    return ops.reshape(xc, lead + tuple(xc.shape[1:])), sample, spatial


def _moments(v, sample: int | None, spatial: tuple[int, ...]):
    """Mean and biased variance over ``spatial`` and then ``sample`` (keepdims; ``sample``
    None: per sample).

    Per-sample moments come first, a two-pass variance over the spatial axes; the
    group's then combine them (law of total variance: the mean of the per-sample
    variances plus the variance of the per-sample means), so each reduction covers
    adjacent axes and only the first two read the activation. The per-sample centering
    is written ``v + (-mean)``, the same values bit for bit as ``v - mean``: an output
    computed as ``x - mean`` is then another expression, which XLA fuses into each
    consumer instead of writing the centered activation out once and reading it back
    twice (what it does on CPU for one expression with two consumers).
    """
    if spatial:
        mean = _mean(v, axis=spatial, keepdims=True)
        var = _mean(ops.square(v + ops.negative(mean)), axis=spatial, keepdims=True)
    else:
        mean, var = v, ops.zeros_like(v)
    if sample is None:
        return mean, var
    group_mean = _mean(mean, axis=(sample,), keepdims=True)
    return group_mean, _mean(var + ops.square(mean - group_mean), axis=(sample,), keepdims=True)


def _sum(v, sample: int, spatial: tuple[int, ...]):
    """Sum over ``spatial``, then ``sample`` (keepdims)."""
    if spatial:
        v = ops.sum(v, axis=spatial, keepdims=True)
    return ops.sum(v, axis=(sample,), keepdims=True)


def _normalize_groups(xr, gamma, beta, sample: int, spatial: tuple[int, ...], eps: float):
    """(x - mean) * gamma * rstd + beta on a group view, every per-group vector
    broadcast to one row per sample (the spatial axes of size 1) before it meets the
    activation. Returns ``(y, d, rstd, rows)``, ``d = x - mean``."""
    rows = tuple(1 if a in spatial else size for a, size in enumerate(xr.shape))
    mean, var = _moments(xr, sample, spatial)
    rstd = ops.rsqrt(var + eps)
    d = xr - ops.broadcast_to(mean, rows)
    y = d * ops.broadcast_to(gamma * rstd, rows) + ops.broadcast_to(beta, rows)
    return y, d, rstd, rows


def _batch_groups_closed_form(xr, gamma, beta, sample: int, spatial: tuple[int, ...],
                              eps: float):
    """:func:`_normalize_groups` with the closed-form BatchNorm backward per group:
    with a = gamma * rstd and d = x - mean,
    dx = a * (dy - mean(dy)) - a * rstd**2 * d * mean(dy * d), dgamma = rstd * sum(dy * d),
    dbeta = sum(dy). The backward is written in ``keras.ops``, so the backend
    differentiates it again for second-order derivatives."""
    count = 1
    for a in (sample,) + spatial:
        count *= xr.shape[a]

    @ops.custom_gradient
    def normalize(xr, gamma, beta):
        y, d, rstd, rows = _normalize_groups(xr, gamma, beta, sample, spatial, eps)

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            s_dy = _sum(dy, sample, spatial)
            s_dyd = _sum(dy * d, sample, spatial)
            a = gamma * rstd
            b1 = ops.broadcast_to(-a * ops.square(rstd) * s_dyd / count, rows)
            b0 = ops.broadcast_to(-a * s_dy / count, rows)
            dx = dy * ops.broadcast_to(a, rows) + (d * b1 + b0)
            return dx, s_dyd * rstd, s_dy

        return y, grad

    return normalize(xr, gamma, beta)


def _torch_eager(x) -> bool:
    """Whether this is an eager PyTorch call, which the torch adapter's kernels serve."""
    if keras.backend.backend() != "torch":
        return False
    from localnorm.torch import _functional

    return not _functional.graph_mode()


def _torch_local_norm(x, gamma, beta, *, num_groups: int, axis: int, mode: str, group: Any,
                      partition: str, eps: float, cdt: str):
    """:func:`local_norm` by ``localnorm.torch``'s kernels: the channel axis moved to 1
    (a view; an NHWC tensor becomes a channels_last NCHW one, which those kernels read
    in place), the result moved back. Same dtype policy: statistics in ``cdt``,
    float16/bfloat16 activations read as they are. Ragged batches (N not a multiple of
    K) take those kernels' reduction path."""
    import torch

    from localnorm.torch import _functional as fn

    tdt = getattr(torch, cdt)
    x = ops.convert_to_tensor(x)
    xt = x if axis == 1 else x.movedim(axis, 1)
    if not (xt.dtype == tdt or (xt.dtype in fn.LOW_PRECISION and tdt == torch.float32)):
        xt = xt.to(tdt)
    w = None if gamma is None else ops.cast(gamma, cdt)
    b = None if beta is None else ops.cast(beta, cdt)
    if isinstance(group, np.integer):
        group = int(group)
    if mode == "batch":
        y = fn.batch_groups(xt, w, b, num_groups=num_groups, partition=partition, eps=eps,
                            cdt=tdt)
    elif mode == "single":
        y = fn.single(xt, w, b, group=group, eps=eps, cdt=tdt)
    else:
        y = fn.set_stats(xt, w, b, group=group, eps=eps)
    # Back to the input's layout; contiguous, as every keras.ops result (a no-op where
    # the kernels kept the channels_last layout of an NHWC input).
    y = y if axis == 1 else y.movedim(1, axis).contiguous()
    return y if y.dtype == x.dtype else y.to(x.dtype)


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

    Eager PyTorch calls run the torch adapter's kernels; everything else
    :func:`ops_local_norm`, with the closed-form backward on TensorFlow and JAX.
    """
    kwargs = dict(num_groups=num_groups, axis=axis, mode=mode, group=group,
                  partition=partition, eps=eps)
    if poison is None and _torch_eager(x):
        return _torch_local_norm(x, gamma, beta, cdt=compute_dtype(x.dtype), **kwargs)
    return ops_local_norm(x, gamma, beta, poison=poison,
                          closed_form=keras.backend.backend() != "torch", **kwargs)


def ops_local_norm(x, gamma, beta, *, num_groups: int, axis: int, mode: str, group: Any,
                   partition: str, eps: float, poison=None, closed_form: bool = False):
    """:func:`local_norm` in ``keras.ops`` on any backend. With ``closed_form``, "batch"
    mode on a batch of known sizes that is a multiple of K has the closed-form backward
    (:func:`_batch_groups_closed_form`); otherwise the backend differentiates the
    forward pass."""
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
            # On the group view; (x - mean) * scale + beta, the subtraction first, keeps
            # near-constant groups with a large offset accurate in float32.
            xr, sample, sp = _group_view(xc, axis, k, partition)
            pshape = [1] * (ndim + 1)
            pshape[1 - sample] = k
            pshape[axis + 1] = c
            g, b = ops.reshape(gamma, pshape), ops.reshape(beta, pshape)
            if closed_form:
                y = _batch_groups_closed_form(xr, g, b, sample, sp, eps)
            else:
                y = _normalize_groups(xr, g, b, sample, sp, eps)[0]
            y = ops.reshape(y, tuple(xc.shape))
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
        mean, var = _moments(xc, None if mode == "single" else 0, spatial)
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
