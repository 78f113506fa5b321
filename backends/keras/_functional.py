"""LocalNorm of Keras tensors: the core's math (:mod:`localnorm._agnostic`) run on the
backend's array namespace, with the closed-form derivative of ``"batch"`` mode.

The namespace is array-api-compat's on the JAX and PyTorch backends (Keras tensors are
jax arrays and torch tensors there) and ``KERAS_OPS``, a small ``keras.ops`` shim,
on TensorFlow, which has no array-API namespace. A size known only at run time (a
``tf.function`` trace with a ``None`` batch axis, as ``model.fit`` makes for a ragged
last batch; a SavedModel; a JAX export with a symbolic batch size) takes the core's
dynamic :class:`~localnorm._agnostic.Groups` path. A batch smaller than K there is the
core's defined case: groups without samples reach no output and their gamma_k/beta_k get
a zero gradient (see ``docs/spec.md``).

Inputs here are validated already (see ``_layers.LocalNormalization``).
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Any

import keras
from keras import ops

from localnorm import _agnostic, _errors, _spec

from . import _errors as _keras_errors


def _isdtype(dtype, kind: str) -> bool:
    """The array API's ``isdtype`` for the one kind the core asks about."""
    if kind != "real floating":
        raise NotImplementedError(f"isdtype(..., {kind!r}) in the Keras namespace")
    return keras.backend.is_float_dtype(dtype)


def _sum(x, axis=None, keepdims=False, dtype=None):
    """The array API's ``sum``, whose ``dtype`` (the accumulation's) ``keras.ops.sum`` lacks."""
    return ops.sum(x if dtype is None else ops.cast(x, dtype), axis=axis, keepdims=keepdims)


#: The array-API functions the core calls, in ``keras.ops`` (TensorFlow's namespace).
KERAS_OPS = types.SimpleNamespace(
    float32="float32", float64="float64", int32="int32",
    reshape=ops.reshape, sqrt=ops.sqrt, broadcast_to=ops.broadcast_to, sum=_sum,
    mean=ops.mean, take=ops.take, zeros_like=ops.zeros_like, ones_like=ops.ones_like,
    maximum=ops.maximum, where=ops.where, astype=ops.cast, arange=ops.arange,
    isfinite=ops.isfinite, logical_not=ops.logical_not, isdtype=_isdtype,
    concat=lambda arrays, axis=0: ops.concatenate(arrays, axis=axis),
    asarray=lambda a, dtype=None, device=None: ops.convert_to_tensor(
        a, None if dtype is None else keras.backend.standardize_dtype(dtype)),
    ones=lambda shape, dtype=None, device=None: ops.ones(shape, dtype),
    zeros=lambda shape, dtype=None, device=None: ops.zeros(shape, dtype),
    segment_sum=lambda v, ids, k: ops.segment_sum(v, ids, num_segments=k),
    batch_size=lambda x: ops.shape(x)[0],
    dim_size=lambda x, axis: ops.shape(x)[axis],
    device_of=lambda x: None,
)


class NativeOps:
    """array-api-compat's namespace for the backend's tensors, with the sizes the core
    asks for where a shape is symbolic (a JAX export, ``torch.export``)."""

    def __init__(self, xp, backend: str):
        self._xp, self._backend = xp, backend

    def __getattr__(self, name):
        return getattr(self._xp, name)

    @staticmethod
    def batch_size(x):
        return x.shape[0]

    def dim_size(self, x, axis):
        return self._xp.asarray(x.shape[axis])

    def device_of(self, x):
        # JAX: the default device (tracers have none); constants then follow x.
        return x.device if self._backend == "torch" else None

    def segment_sum(self, v, ids, k):
        # JAX only: the per-group sums for a K counted from jax.export's symbolic batch
        import jax

        return jax.ops.segment_sum(v, ids, num_segments=k)


def symbolic_groups(x, virtual_batch_size: int):
    """K = max(1, N // virtual_batch_size) for ``jax.export``'s symbolic batch size N: a
    symbolic size too, which the core's per-group sums follow (``segment_sum``). JAX's
    own symbolic max, not the comparison-free form of :func:`localnorm._spec.ghost_groups`
    (torch's), on which JAX cannot decide the core's later comparisons."""
    import jax

    return jax.core.max_dim(x.shape[0] // int(virtual_batch_size), 1)


@functools.lru_cache(maxsize=None)
def _namespace(backend: str):
    if backend == "tensorflow":
        return KERAS_OPS
    import array_api_compat

    return NativeOps(array_api_compat.array_namespace(ops.zeros(())), backend)


def namespace():
    """The array namespace of the current Keras backend's tensors."""
    return _namespace(keras.backend.backend())


def _torch_graph_mode() -> bool:
    import torch

    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch.jit.is_scripting() or torch._C._are_functorch_transforms_active())


def eager():
    """The context a concrete input's value checks run in: on JAX, eagerly even inside a
    trace (an array captured by a jitted function is concrete, and its check, traced,
    would have no truth value); elsewhere nothing."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.ensure_compile_time_eval()
    return contextlib.nullcontext()


def is_traced(x) -> bool:
    """Whether ``x`` has no values yet: a TensorFlow graph tensor (``tf.function``, also
    with ``jit_compile``), a JAX tracer (``jax.jit``, ``grad``, ``vmap``) or a tensor
    under a PyTorch tracer (``torch.compile``/``torch.export``, TorchScript tracing as
    the ONNX exporter does, ``torch.func`` transforms)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    return backend == "torch" and _torch_graph_mode()


def run_time_batch_check(x, axis: int, mode: str, num_groups: int, dialect: _errors.Dialect,
                         group_length: int | None = None, counted_groups: Any = None):
    """Where the batch size is unknown until run time, make a TensorFlow graph refuse
    what :func:`localnorm._spec.check_batch` refuses at trace time (fewer samples than
    groups in "batch" mode, a statistics set with one value per channel) and what
    :func:`localnorm._layer.check_call` refuses for a per-sample group array of
    ``group_length`` entries (a batch of another size), through
    ``tf.debugging`` assertions that raise ``InvalidArgumentError`` with the
    :mod:`localnorm._errors` message. XLA (``jit_compile=True``) drops assertions, and
    JAX, ONNX and exported programs cannot raise: there the result is the core's defined
    finite one; a per-sample group array, whose length no program for any batch size can
    check there, is refused while tracing (``group_array_unknown_batch``).
    ``counted_groups``: a K counted at run time (``max(1, N // virtual_batch_size)``,
    ``num_groups`` then 1), whose smallest group the one-value check measures. Returns
    ``x`` (on TensorFlow, made to depend on the assertions)."""
    if keras.backend.backend() != "tensorflow":
        if group_length is not None:
            raise _keras_errors.group_array_unknown_batch(group_length, x.shape[0])
        return x
    import tensorflow as tf

    shape = tf.shape(x)
    n = shape[0]
    values = _spec.values_per_channel([shape[a] for a in range(x.ndim)], axis, mode,
                                      num_groups if counted_groups is None else counted_groups)
    printed = "(the run-time value, printed below)"
    if mode == "batch":
        first = tf.debugging.assert_greater_equal(
            n, num_groups, message=str(_errors.too_few_samples(printed, num_groups, dialect)))
    else:
        first = tf.debugging.assert_greater_equal(n, 1, message=str(_errors.empty_batch()))
    second = tf.debugging.assert_greater_equal(
        values, 2, message=str(_errors.single_value_statistics(
            mode, "fewer than 2 " + printed, (None,) + tuple(x.shape[1:]), dialect)))
    checks = [first, second]
    if group_length is not None:
        checks.append(tf.debugging.assert_equal(n, group_length, message=str(
            _errors.group_array_mismatch(group_length, printed))))
    with tf.control_dependencies(checks):
        x = tf.identity(x)
    if group_length is not None and _in_xla():
        # XLA drops the assertions: the known length makes another batch size a compile
        # error there, not a broadcast of one sample to len(group) outputs. (Outside XLA
        # this would fail before the assertion and hide its message.)
        x = tf.ensure_shape(x, (group_length,) + tuple(x.shape[1:]))
    return x


def _in_xla() -> bool:
    """Whether the TensorFlow graph being traced is compiled by XLA (``jit_compile``)."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _vjp(xp, x, gamma, beta, mean, rstd, dy, kw, inplace: bool = False):
    dx, dgamma, dbeta = _agnostic.batch_vjp(
        xp, x, gamma, mean, rstd, dy, axis=kw["axis"], num_groups=kw["num_groups"],
        partition=kw["partition"], inplace=inplace)
    return dx, xp.astype(dgamma, gamma.dtype), xp.astype(dbeta, beta.dtype)


def _batch_custom_gradient(xp, x, gamma, beta, kw):
    """``"batch"`` mode with the core's closed-form derivative (``keras.ops.custom_gradient``,
    TensorFlow): the backward is written in the namespace's operations on values of the
    forward, so the backend differentiates it again for second order."""

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        y, mean, _, rstd = _agnostic.batch_forward(xp, x, gamma, beta, **kw)

        def grad(*args, upstream=None):
            return _vjp(xp, x, gamma, beta, mean, rstd, args[0] if upstream is None else upstream, kw)

        return y, grad

    return normalize(x, gamma, beta)


@functools.cache
def _jax_batch_function():
    import jax

    @functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
    def batch(x, gamma, beta, axis: int, num_groups: int, partition: str, eps: float):
        """``"batch"`` mode with the core's closed-form forward-mode derivative
        (``_agnostic.batch_jvp``) as its ``jax.custom_jvp`` rule, as in the Flax adapter.
        JAX transposes the rule into the closed-form backward; the rule is ordinary JAX
        code, so ``jax.jvp`` (``jacfwd``), second derivatives, ``vmap`` and
        ``jax.export`` work through it, where a custom VJP (Keras's ``custom_gradient``)
        refuses forward mode. The plain moments, not the flax adapter's ``fusing`` ones,
        which measured slower here (the benchmarks' discussion, keras section)."""
        return _agnostic.batch_forward(namespace(), x, gamma, beta, axis=axis,
                                       num_groups=num_groups, partition=partition,
                                       eps=eps)[0]

    @batch.defjvp
    def _batch_jvp(axis, num_groups, partition, eps, primals, tangents):
        return _agnostic.batch_jvp_rule(namespace(), primals, tangents, axis=axis,
                                        num_groups=num_groups, partition=partition, eps=eps)

    return batch


@functools.cache
def _torch_batch_function():
    import torch

    class Batch(torch.autograd.Function):
        """``"batch"`` mode with the core's closed-form derivative. Keras's own
        ``custom_gradient`` on PyTorch runs the forward without autograd, so its
        backward could not be differentiated again; here a backward that is being
        differentiated (``create_graph=True``) recomputes the statistics from x. Nothing
        records the forward, nor a backward that is not differentiated: the core runs
        them in place (``inplace``: fewer activation-sized temporaries). Returns y and
        the (K, C) group means and biased variances, which the moving statistics reuse
        (not differentiable)."""

        @staticmethod
        def forward(ctx, x, gamma, beta, xp, kw):
            y, mean, var, rstd = _agnostic.batch_forward(xp, x, gamma, beta, inplace=True,
                                                         **kw)
            ctx.save_for_backward(x, gamma, beta, mean, rstd)
            ctx.xp, ctx.kw = xp, kw
            ctx.mark_non_differentiable(mean, var)
            return y, mean, var

        @staticmethod
        def backward(ctx, dy, _dmean, _dvar):
            x, gamma, beta, mean, rstd = ctx.saved_tensors
            again = torch.is_grad_enabled()
            if again:
                _, mean, _, rstd = _agnostic.batch_forward(ctx.xp, x, gamma, beta, **ctx.kw)
            return _vjp(ctx.xp, x, gamma, beta, mean, rstd, dy, ctx.kw,
                        inplace=not again) + (None, None)

    return Batch


def local_norm(x, gamma, beta, *, num_groups: int, axis: int, mode: str, group: Any,
               partition: str, eps: float, moments: bool = False):
    """LocalNorm of Keras tensors (validated input): see :func:`localnorm.local_norm`.

    ``gamma``/``beta`` of shape (K, C), or None for no scale / no shift. Statistics and
    the affine transform are computed in at least float32; the result has x's dtype.
    "batch" mode has the core's closed-form derivative (except under a PyTorch tracer,
    which differentiates the forward itself). ``moments``: return ``(y, (mean, var))``,
    the (K, C) group moments of "batch" mode where eager PyTorch computed them anyway
    (for the moving statistics), else ``(y, None)``; a compiler (XLA, ``tf.function``)
    shares a second computation of them by itself."""
    xp = namespace()
    x = ops.convert_to_tensor(x)
    shape = (1, x.shape[axis])  # no scale / no shift: one row of ones / zeros for every group
    cdt = _agnostic.compute_dtype(xp, x.dtype)
    device = xp.device_of(x)
    # Tensors, not variables (TensorFlow's custom_gradient refuses a variable input).
    gamma = xp.ones(shape, dtype=cdt, device=device) if gamma is None else ops.cast(gamma, gamma.dtype)
    beta = xp.zeros(shape, dtype=cdt, device=device) if beta is None else ops.cast(beta, beta.dtype)
    stats = None
    kw = dict(axis=axis, num_groups=num_groups, partition=partition, eps=eps)
    if mode != "batch":
        y = _agnostic.eval_forward(xp, x, gamma, beta, axis=axis, mode=mode, group=group,
                                   eps=eps, inplace=_in_place(x, gamma, beta))
    elif keras.backend.backend() == "jax":
        y = _jax_batch_function()(x, gamma, beta, axis, num_groups, partition, eps)
    elif keras.backend.backend() == "tensorflow":
        y = _batch_custom_gradient(xp, x, gamma, beta, kw)
    elif _torch_graph_mode():
        y = _agnostic.batch_forward(xp, x, gamma, beta, **kw)[0]
    else:
        y, *stats = _torch_batch_function().apply(x, gamma, beta, xp, kw)
    return (y, stats) if moments else y


def running(x, gamma, beta, mean, var, *, axis: int, eps: float):
    """``"running"`` mode with one stored (1, C) row of statistics and of gamma/beta
    (None: no scale / no shift): the core's :func:`~localnorm._agnostic.running_forward`."""
    x, gamma, beta, mean, var = (None if p is None else ops.convert_to_tensor(p)
                                 for p in (x, gamma, beta, mean, var))
    return _agnostic.running_forward(namespace(), x, gamma, beta, mean, var, axis=axis, eps=eps,
                                     inplace=_in_place(x, gamma, beta))


def _in_place(*tensors) -> bool:
    """Whether the core may evaluate in place (``inplace``: fewer activation-sized
    arrays): eager PyTorch with no derivative recorded (``model.predict`` and
    :func:`localnorm.keras.predict` run under ``torch.no_grad``). Never on TensorFlow or
    JAX, whose arrays are immutable."""
    if keras.backend.backend() != "torch" or _torch_graph_mode():
        return False
    import torch

    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                for t in tensors))
