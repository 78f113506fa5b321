"""The one normalization function behind both Flax layers (NNX and Linen): the checks they
share, the sharding rules, and the autodiff glue around the core's math.

It adapts the layers' options (Flax's ``dtype``, ``use_scale``/``use_bias``, a
group-per-device ``axis_name``) to the math of :func:`localnorm.local_norm`
(``docs/spec.md``). Every input error is raised here first: the per-call rules every
adapter shares (:mod:`localnorm._layer`) and the sharding rules, in Flax's words (the
dialect ``FLAX`` of this adapter's ``_errors``: ``epsilon=``, ``x.astype``), from static
shapes only, so nothing here stalls a jitted program.

The math itself is the core's (``localnorm/_agnostic.py``), run with ``jax.numpy`` as the
array namespace (what ``array_api_compat.array_namespace`` returns for JAX arrays and
tracers; it works under ``jit``, ``vmap`` and ``shard_map``):

- ``"batch"`` mode (training), :func:`batch_norm_groups`: ``_agnostic.batch_forward``
  in a ``jax.custom_jvp`` whose rule is ``_agnostic.batch_jvp``, the closed-form
  BatchNorm derivative per group along the batch axis. JAX transposes it into the
  closed-form backward (two sums per group, of dy and of dy * xhat, then one elementwise
  pass for dx); the rule is ordinary JAX code, so ``jax.jvp``, ``jax.grad`` of
  ``jax.grad``, ``jax.hessian``, ``vmap`` and ``shard_map`` all work.
- ``"single"`` and ``"set"`` (evaluation): ``_agnostic.eval_forward``, differentiated by
  JAX; ``"set"`` inside ``jax.shard_map`` passes a ``reduce_batch`` that sums over the
  mesh axis, so the set is the global batch.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from localnorm import _agnostic, _errors, _layer, _spec

from . import _errors as _flax_errors

#: How the Flax layers word their errors (argument names, casts, remedies).
DIALECT = _flax_errors.FLAX


def eval_setting(mode: Any, group: Any, num_groups: int, *, running: bool,
                 where: str) -> tuple[str, Any]:
    """A Flax layer's validated evaluation setting (:func:`localnorm._layer.eval_setting`)
    for ``num_groups`` groups along the batch axis: the mode, and the group as an int or
    (``"single"`` mode only) an int32 jax array with one group per sample. The array is
    data, not a static attribute: under ``nnx.jit`` it is traced, so new per-sample groups
    of the same length reuse the compiled program; a traced array's values are unknown,
    so only its mode, rank and dtype are checked. ``running``: whether the layer tracks
    running statistics."""
    traced = isinstance(group, jax.core.Tracer)
    mode, checked = _layer.eval_setting(mode, 0 if traced else group, num_groups,
                                        running=running, ghost_only=where)
    if traced:
        if group.ndim == 0:  # an int group is static: it picks a row when tracing
            raise _flax_errors.traced_group(group, mode)
        if mode != "single":
            raise _errors.group_array_not_single(mode)
        if group.ndim != 1:
            raise _errors.group_array_rank(tuple(group.shape))
        if group.size and not jnp.issubdtype(group.dtype, jnp.integer):
            raise _errors.bad_group(group, num_groups)
        checked = group
    return mode, checked if isinstance(checked, int) else jnp.asarray(checked, jnp.int32)


def check_dtypes(dtype: Any, param_dtype: Any) -> None:
    """Refuse a result ``dtype`` (None: the input's) or a ``param_dtype`` that is not a
    real floating dtype: an int32 ``dtype`` would truncate the output, an int32
    ``param_dtype`` gives parameters no gradient can train."""
    for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        if value is None and name == "dtype":
            continue
        try:
            floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise _flax_errors.bad_dtype(name, value)


def check_axis_name(axis_name: Any) -> Any:
    """A mesh axis name: None, a string, or a non-empty tuple of strings."""
    names = axis_name if isinstance(axis_name, tuple) and axis_name else (axis_name,)
    if axis_name is not None and not all(isinstance(n, str) for n in names):
        raise _flax_errors.bad_axis_name(axis_name)
    return axis_name


def check_params(params: dict[str, Any], num_groups: int, num_features: int, *,
                 channels_name: str | None = None, shared: bool | None = None,
                 num_groups_name: Any = None) -> None:
    """Refuse (K, C) parameters of another shape, e.g. a checkpoint with another group
    count restored into the layer (``nnx.update``, Linen ``apply``). Static shapes only.

    ``channels_name`` (Linen, where C comes from the input): a column count that differs
    from the input's channels is reported as a channel mismatch of the input instead.
    """
    expected = (num_groups, num_features)
    for name, p in params.items():
        if p is None:
            continue
        shape = tuple(p.shape)
        if len(shape) != 2:
            raise _errors.bad_param_shape(name, shape, str(expected))
        if channels_name is not None and shape[1] != num_features:
            raise _errors.bad_channels(num_features, shape[1], channels_name.format(name=name),
                                       dialect=_flax_errors.FLAX_LINEN)
        if shape != expected:
            raise _errors.checkpoint_mismatch(name, shape, expected, shared=shared,
                                              num_groups=num_groups_name)


def _axis_size(axis_name: str, where: str) -> int:
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError:
        raise _flax_errors.unbound_axis_name(axis_name, where) from None


def normalize(
    x,
    scale,
    bias,
    *,
    num_groups: int,
    axis: int,
    mode: str,
    group: Any,
    partition: str,
    epsilon: float,
    dtype: Any = None,
    axis_name: str | None = None,
    check_finite: bool = False,
    where: str = "LocalNorm",
    num_features: int | None = None,
    mean=None,
    var=None,
):
    """LocalNorm of ``x`` with (K, C) ``scale``/``bias`` (None = ones/zeros), or in
    ``"running"`` mode ``(x - mean) / sqrt(var + epsilon) * scale + bias`` with one stored
    (1, C) row of statistics and of scale/bias (any batch of at least one sample).

    ``dtype`` is Flax's result dtype: None keeps x's dtype (statistics in at least
    float32 regardless, see :func:`localnorm.local_norm`); otherwise x is promoted to it
    before normalizing and the result cast to it.

    ``axis_name`` (inside ``jax.shard_map``, batch sharded over that mesh axis): in
    ``"batch"`` mode each device's shard holds whole groups along the batch axis and
    uses its own rows of scale/bias, with no collective; in ``"set"`` mode the set is the
    global batch, its moments summed over the axis; in ``"single"`` mode a per-sample
    group array of the global batch's length is sliced to the device's shard.

    ``num_features``: the channel count the layer was built for (None: taken from x, as
    the Linen layer does). ``check_finite`` (the layers pass it in evaluation only):
    refuse NaN/Inf in a concrete (eager) ``x``; traced values are unknown and never
    checked.
    """
    x = jnp.asarray(x)
    floating = bool(jnp.issubdtype(x.dtype, jnp.floating))
    ax = _spec.normalize_axis(axis, x.ndim) if floating and x.ndim >= 2 else None
    sharded = axis_name is not None and mode in ("batch", "set")  # batch checked below
    # a symbolic size (jax.export with a symbolic batch) is unknown to the checks
    shape = tuple(d if isinstance(d, int) else None for d in x.shape)
    _layer.check_call(shape, floating=floating, dtype=x.dtype, rank_ok=x.ndim >= 2,
                      rank=">= 2", axis=ax, num_features=num_features, mode=mode,
                      num_groups=None if sharded else num_groups,
                      group=None if axis_name else group, where=where, dialect=DIALECT)
    if not isinstance(x.shape[0], int) and getattr(group, "ndim", 0) \
            and isinstance(group.shape[0], int):  # a symbolic batch: no fixed length fits
        raise _flax_errors.symbolic_group_array(group.shape[0], x.shape[0])
    if check_finite and not isinstance(x, jax.core.Tracer):
        # a concrete x may still meet a trace (an array captured by a jitted function):
        # its check runs eagerly, not as traced operations whose truth is unknown
        with jax.ensure_compile_time_eval():
            _layer.refuse_non_finite(jnp, x, DIALECT)
    if dtype is not None:
        x = x.astype(jnp.promote_types(x.dtype, dtype))
    if mode == _spec.RUNNING:
        y = _agnostic.running_forward(jnp, x, *(None if p is None else jnp.asarray(p)
                                                for p in (scale, bias, mean, var)),
                                      axis=ax, eps=epsilon)
    else:
        y = _local_norm(x, scale, bias, num_groups, ax, mode, group, partition, epsilon,
                        axis_name, where)
    return y if dtype is None else y.astype(dtype)


def layer_forward(layer: Any, x, scale, bias, mean, var, *, update: bool, mode: str,
                  group: Any, num_groups: int, check_finite: bool, where: str,
                  num_features: int | None = None):
    """One call of a Flax layer, NNX or Linen (``layer`` holds their common options:
    ``axis``, ``partition``, ``epsilon``, ``dtype``, ``axis_name``, ``momentum``):
    :func:`normalize` in ``mode`` with K = ``num_groups`` groups along the batch axis,
    and, where ``update`` (a training call of a layer with running statistics), the
    running statistics after it (:func:`running_stats`). Returns ``(y, (mean, var))``."""
    y = normalize(x, scale, bias, num_groups=num_groups, axis=layer.axis, mode=mode,
                  group=group, partition=layer.partition, epsilon=layer.epsilon,
                  dtype=layer.dtype, axis_name=layer.axis_name, check_finite=check_finite,
                  where=where, num_features=num_features, mean=mean, var=var)
    if update:
        mean, var = running_stats(x, mean, var, axis=layer.axis, num_groups=num_groups,
                                  partition=layer.partition, momentum=layer.momentum,
                                  axis_name=layer.axis_name)
    return y, (mean, var)


def _local_norm(x, scale, bias, num_groups: int, ax: int, mode: str, group: Any,
                partition: str, epsilon: float, axis_name: str | None, where: str):
    """:func:`normalize` in the core's modes on a checked ``x``, with the batch checks
    and the parameter rows of a batch sharded over the mesh axis ``axis_name``."""
    c = x.shape[ax]
    pdt = scale.dtype if scale is not None else bias.dtype if bias is not None else jnp.float32
    if scale is None:
        scale = jnp.ones((num_groups, c), pdt)
    if bias is None:
        bias = jnp.zeros((num_groups, c), pdt)
    devices = 1 if axis_name is None else _axis_size(axis_name, where)
    k = num_groups
    if axis_name is not None and mode == "batch":
        # A (1, C) row shared by the groups is given to each device's groups as copies
        # (their gradients summed back by the broadcast's transpose).
        scale = jnp.broadcast_to(scale, (num_groups, c))
        bias = jnp.broadcast_to(bias, (num_groups, c))
        k = num_groups // devices
        scale, bias = _shard_rows(scale, bias, x.shape[0], num_groups, devices, axis_name,
                                  partition)
        _spec.check_batch(tuple(x.shape), ax, mode, k, DIALECT)
    elif axis_name is not None and mode == "set":  # the set is the global batch
        _spec.check_batch((x.shape[0] * devices,) + tuple(x.shape[1:]), ax, mode, num_groups,
                          DIALECT)
    if axis_name is not None and not isinstance(group, int):
        group = _local_groups(group, x.shape[0], devices, axis_name)
    if mode == "batch":
        return batch_norm_groups(x, scale, bias, k, partition, ax, float(epsilon))
    across = axis_name is not None and mode == "set"
    return _agnostic.eval_forward(_namespace(x), x, scale, bias, axis=ax, mode=mode,
                                  group=group, eps=epsilon, fusing=True, reduce_batch=_mesh_mean(
                                      axis_name, x.shape[0] * devices) if across else None)


def call_groups(x, mode: str, num_groups: int | None, virtual_batch_size: int | None,
                axis_name: str | None, where: str) -> Any:
    """K for a call on ``x`` (:func:`localnorm._layer.call_groups`). Inside
    ``jax.shard_map`` (``axis_name``) K counted from a virtual batch size is counted on
    the global batch, as the single-device layer counts it on the whole batch; each
    device then holds K / devices of the groups (refused, in the virtual batch's terms,
    where the devices cannot hold whole groups)."""
    batch = (x.shape or (None,))[0]
    if virtual_batch_size is not None and mode == "batch" and batch is not None:
        if not isinstance(batch, int):
            if axis_name is not None:
                raise _flax_errors.symbolic_virtual_batch(where, batch, virtual_batch_size)
            # jax.export's symbolic batch: K = max(1, N // v) is a symbolic size too, which
            # the core's per-group sums follow (the namespace's segment_sum); JAX's own max,
            # as _spec.ghost_groups's comparison-free form leaves JAX undecided later
            return jax.core.max_dim(batch // int(virtual_batch_size), 1)
        if axis_name is not None:
            devices = _axis_size(axis_name, where)
            k = _spec.ghost_groups(batch * devices, virtual_batch_size)
            if k % devices or batch % (k // devices):
                raise _flax_errors.sharded_virtual_batch(batch, virtual_batch_size, k,
                                                         devices, axis_name, where)
            batch *= devices
    return _layer.call_groups(batch, mode, num_groups, virtual_batch_size)


def running_stats(x, mean, var, *, axis: int, num_groups: int, partition: str,
                  momentum: float, axis_name: str | None = None):
    """The running ``mean``/``var`` after a training call on a checked ``x``: Flax's
    ``ra = momentum * ra + (1 - momentum) * value``, the value the mean over the K groups
    along the batch axis of their moments (biased variance; tf-keras's rule for virtual
    batches), by :func:`localnorm._layer.running_update`. No gradient flows into them.

    Inside ``jax.shard_map`` (``axis_name``) each device's shard holds K / devices whole
    groups: each device moves the statistics by its own groups, and the mean over the
    devices (one all-reduce of two (1, C) rows) is the single-device update over all K
    groups, the same on every device."""
    if axis_name is not None:
        num_groups //= _axis_size(axis_name, "LocalNorm")
    moments = _layer.group_moments(_namespace(x), jax.lax.stop_gradient(x),
                                   _spec.normalize_axis(axis, x.ndim), num_groups, partition)
    new = _layer.running_update(jnp, mean, var, *moments, 1.0 - momentum, unbiased=False)
    if axis_name is not None:
        new = tuple(jax.lax.pmean(v, axis_name) for v in new)
    return new


def _shard_rows(scale, bias, local_batch: int, num_groups: int, devices: int,
                axis_name: str, partition: str):
    """The rows of the (K, C) parameters that belong to this device's shard of the batch,
    after checking (at trace time, from static shapes) that the shard holds whole groups
    laid out as on one device."""
    if partition != "contiguous":
        raise _flax_errors.sharded_partition(partition)
    if num_groups % devices:
        raise _flax_errors.sharded_groups(num_groups, devices, axis_name)
    local = num_groups // devices
    if local_batch % local:
        raise _flax_errors.sharded_ragged(local_batch, local, devices, axis_name)
    start = jax.lax.axis_index(axis_name) * local
    return (jax.lax.dynamic_slice_in_dim(scale, start, local, axis=0),
            jax.lax.dynamic_slice_in_dim(bias, start, local, axis=0))


def _local_groups(group, local_batch: int, devices: int, axis_name: str):
    """A per-sample group array for this device's samples: as given when it has one entry
    per local sample; the device's slice when it covers the global batch."""
    length = group.shape[0]
    if length == local_batch:
        return group
    if length != local_batch * devices:
        raise _flax_errors.sharded_group_array(length, local_batch, devices, axis_name)
    start = jax.lax.axis_index(axis_name) * local_batch
    return jax.lax.dynamic_slice_in_dim(group, start, local_batch, axis=0)


def _mesh_mean(axis_name: str, global_batch: int):
    """``"set"`` mode's ``reduce_batch`` over the global batch sharded on ``axis_name``:
    the local sum over the batch axis, summed over the devices (one all-reduce of a
    (1, C) vector per moment)."""
    def mean(xp, v):
        return jax.lax.psum(xp.sum(v, axis=0, keepdims=True), axis_name) / global_batch

    return mean


class _SymbolicBatch:
    """``jax.numpy`` with the sizes the core asks for when a size is symbolic
    (``jax.export`` with a symbolic batch, or symbolic spatial sizes): ``batch_size``,
    ``dim_size`` (a symbolic size as a 0-d array, for the value counts of the means),
    ``segment_sum`` (the per-group sums for a symbolic K, Ghost BatchNorm's K from a
    virtual batch size), ``device_of``."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    @staticmethod
    def batch_size(x):
        return x.shape[0]

    @staticmethod
    def dim_size(x, axis):
        return jnp.asarray(x.shape[axis])

    @staticmethod
    def segment_sum(v, ids, k):
        return jax.ops.segment_sum(v, ids, num_segments=k)

    @staticmethod
    def device_of(x):
        return None


_SYMBOLIC = _SymbolicBatch()


def _namespace(x):
    """The namespace the core computes ``x``'s statistics with."""
    return jnp if all(isinstance(d, int) for d in x.shape) else _SYMBOLIC


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def batch_norm_groups(x, scale, bias, k: int, partition: str, ax: int, epsilon: float):
    """LocalNorm in ``"batch"`` mode on validated input (at least K samples; ``ax``
    non-negative; (K, C) ``scale``/``bias``), in x's dtype, with the closed-form
    derivative of ``_agnostic.batch_jvp`` as its ``jax.custom_jvp`` rule."""
    return _agnostic.batch_forward(_namespace(x), x, scale, bias, axis=ax, num_groups=k,
                                   partition=partition, eps=epsilon, fusing=True)[0]


@batch_norm_groups.defjvp
def _batch_norm_groups_jvp(k, partition, ax, epsilon, primals, tangents):
    return _agnostic.batch_jvp_rule(_namespace(primals[0]), primals, tangents, axis=ax,
                                    num_groups=k, partition=partition, eps=epsilon,
                                    fusing=True)
