"""The one normalization function behind both Flax layers (NNX and Linen), the checks
they share, and the layers' native JAX paths.

It adapts the layers' options (Flax's ``dtype``, ``use_scale``/``use_bias``, a
group-per-device ``axis_name``) to the math of :func:`localnorm.local_norm`
(``docs/spec.md``). Every input error is raised here first, in Flax's words
(``_errors.FLAX``: ``epsilon=``, ``x.astype``), from static shapes only, so nothing here
stalls a jitted program. Nothing here loops over samples or groups.

The math runs as native JAX code written for XLA, not through the array-API core: a
native fast path, like the torch adapter's fused ``batch_norm``, held equal to
:func:`localnorm.reference.local_norm` and its gradients by the conformance suite
(subjects ``flax`` and ``flax-linen``: every dtype, both partitions, ragged batches, each
mode) and to the core by ``tests/flax``:

Every mode's statistics start from each sample's moments over the spatial axes
(:func:`_sample_moments`): a two-pass, the mean then the mean of squared deviations from
it, with the centering written so that XLA fuses it into the reduction rather than
writing the centered activation out and reading it back (what costs most under XLA on
CPU, see ``benchmarks/discussion.md``). A set of several samples (a group along the batch
axis, or the whole batch) combines its samples' moments by the law of total variance: the
mean of the per-sample variances plus the variance of the per-sample means, a tensor of
N*C values. The per-set vectors are broadcast to one row per sample before they meet the
activation in ``(x - mean) * (rstd * gamma) + beta``. The law of total variance is as
accurate as a two-pass over the whole set (E[x^2] - E[x]^2, what ``nnx.BatchNorm``
computes, is not): ``tests/flax/test_native.py`` holds it within a quarter of the
conformance tolerance on float32 input offset by up to 10^4 standard deviations (measured:
below a twentieth), where E[x^2] - E[x]^2 is outside the tolerance on the same input.

- ``"batch"`` mode (training), :func:`batch_norm_groups`: the groups' moments as above,
  with the closed-form BatchNorm derivative per group in a ``jax.custom_jvp``. JAX
  transposes that rule into the closed-form backward (two sums per group, of dy and of
  dy * xhat, then one elementwise pass for dx) instead of differentiating the forward's
  passes one by one; the rule is ordinary JAX code, so ``jax.jvp``, ``jax.grad`` of
  ``jax.grad``, ``jax.hessian``, ``vmap`` and ``shard_map`` all work.
- ``"single"`` and ``"set"`` (evaluation), :func:`eval_norm`: each sample's moments, or
  the whole batch's from them; differentiated by JAX.
- ``"set"`` inside ``jax.shard_map`` (:func:`_set_mode_across`): the set is the global
  batch, so the batch-axis sums of the law of total variance are summed over the mesh
  axis.

Statistics and the affine step are computed in at least float32 (float64 when x, scale
or bias is float64); the result has x's dtype.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from localnorm import _agnostic, _errors, _spec

#: Layer modes of the Flax layers: the core's modes. There is no "running" mode, since
#: the layers keep no running statistics.
MODES = _spec.MODES

#: How the Flax layers word their errors (argument names, casts, remedies).
DIALECT = _errors.FLAX


def check_mode(mode: Any, where: str) -> str:
    """Validate an evaluation mode; "running" gets its own explanation."""
    if mode == _spec.RUNNING:
        raise _errors.running_unsupported(where)
    return _spec.check_choice("mode", mode, MODES)


def check_num_features(num_features: Any) -> int:
    """Validate C, the number of channels."""
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
        raise _errors.bad_num_features(num_features)
    if num_features < 1:
        raise _errors.bad_num_features(num_features)
    return int(num_features)


def check_axis(axis: Any) -> int:
    """Validate the channel axis before the input's rank is known: one int, not 0 (the
    batch axis). A one-element tuple (``nnx.BatchNorm`` accepts those) is unwrapped."""
    if isinstance(axis, (tuple, list)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool):
        raise _errors.bad_channel_axis(axis)
    try:
        value = operator.index(axis)
    except TypeError:
        raise _errors.bad_channel_axis(axis) from None
    if value == 0:
        raise _errors.bad_channel_axis(axis)
    return value


def check_group(group: Any, num_groups: int, mode: str) -> Any:
    """A layer's group: an int, or (``"single"`` mode only) an int32 jax array with one
    group per sample. The array is data, not a static attribute: under ``nnx.jit`` it is
    traced, so new per-sample groups of the same length reuse the compiled program."""
    shape = getattr(group, "shape", None)
    if isinstance(group, (list, tuple)) or (shape is not None and len(shape) >= 1):
        if mode != "single":
            raise _errors.group_array_not_single(mode)
        if isinstance(group, jax.core.Tracer):
            arr = group
        else:
            arr = np.asarray(group)
            if arr.ndim != 1:
                raise _errors.group_array_rank(tuple(arr.shape))
            if arr.size and (not np.issubdtype(arr.dtype, np.integer)
                             or arr.min() < 0 or arr.max() >= num_groups):
                raise _errors.bad_group(group, num_groups)
        if not jnp.issubdtype(arr.dtype, jnp.integer) and arr.size:
            raise _errors.bad_group(group, num_groups)
        return jnp.asarray(arr, jnp.int32)
    return _spec.check_group(group, num_groups, "set", 1)


def check_params(params: dict[str, Any], num_groups: int, num_features: int, *,
                 channels_name: str | None = None) -> None:
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
                                       dialect=_errors.FLAX_LINEN)
        if shape != expected:
            raise _errors.checkpoint_mismatch(name, shape, expected)


def _axis_size(axis_name: str, where: str) -> int:
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError:
        raise _errors.unbound_axis_name(axis_name, where) from None


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def refuse_non_finite(x) -> None:
    """One device-to-host transfer; the count is only computed when something is bad."""
    if jnp.issubdtype(x.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(x))):
        bad = int(jnp.sum(~jnp.isfinite(x)))
        raise _errors.not_finite("x", bad, math.prod(x.shape), dialect=DIALECT)


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
):
    """LocalNorm of ``x`` with (K, C) ``scale``/``bias`` (None = ones/zeros).

    ``dtype`` is Flax's result dtype: None keeps x's dtype (statistics in at least
    float32 regardless, see :func:`localnorm.local_norm`); otherwise x is promoted to it
    before normalizing and the result cast to it.

    ``axis_name`` (inside ``jax.shard_map``, batch sharded over that mesh axis): in
    ``"batch"`` mode each device's shard holds whole groups along the batch axis and
    uses its own rows of scale/bias, with no collective; in ``"set"`` mode the set is the
    global batch, its moments summed over the axis; in ``"single"`` mode a per-sample
    group array of the global batch's length is sliced to the device's shard.

    ``check_finite`` (the layers pass it in evaluation only): refuse NaN/Inf in a concrete
    (eager) ``x``; traced values are unknown and never checked.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise _errors.not_floating(x.dtype, DIALECT)
    if x.ndim < 2:
        raise _errors.bad_rank(x.ndim, ">= 2", where, dialect=DIALECT)
    ax = _spec.normalize_axis(axis, x.ndim)
    c = x.shape[ax]
    pdt = scale.dtype if scale is not None else bias.dtype if bias is not None else jnp.float32
    if scale is None:
        scale = jnp.ones((num_groups, c), pdt)
    if bias is None:
        bias = jnp.zeros((num_groups, c), pdt)
    devices = 1 if axis_name is None else _axis_size(axis_name, where)
    if axis_name is not None and mode == "batch":
        scale, bias = _shard_rows(scale, bias, x.shape[0], num_groups, devices, axis_name,
                                  partition)
        _spec.check_batch(tuple(x.shape), ax, mode, num_groups // devices, DIALECT)
    elif axis_name is not None and mode == "set":  # the set is the global batch
        _spec.check_batch((x.shape[0] * devices,) + tuple(x.shape[1:]), ax, mode, num_groups,
                          DIALECT)
    else:
        _spec.check_batch(tuple(x.shape), ax, mode, num_groups, DIALECT)
    if not isinstance(group, (int, np.integer)):
        group = _local_groups(group, x.shape[0], devices, axis_name)
        _spec.check_group(group, num_groups, mode, x.shape[0])  # one entry per sample
    if check_finite and _is_concrete(x):
        refuse_non_finite(x)
    if dtype is not None:
        x = x.astype(jnp.promote_types(x.dtype, dtype))
    if mode == "batch":
        y = batch_norm_groups(x, scale, bias, scale.shape[0], partition, ax, float(epsilon))
    elif axis_name is not None and mode == "set":
        y = _set_mode_across(x, scale, bias, int(group), ax, epsilon, axis_name, devices)
    else:
        y = eval_norm(x, scale, bias, mode=mode, group=group, axis=ax, epsilon=epsilon)
    return y if dtype is None else y.astype(dtype)


def _shard_rows(scale, bias, local_batch: int, num_groups: int, devices: int,
                axis_name: str, partition: str):
    """The rows of the (K, C) parameters that belong to this device's shard of the batch,
    after checking (at trace time, from static shapes) that the shard holds whole groups
    laid out as on one device."""
    if partition != "contiguous":
        raise _errors.sharded_partition(partition)
    if num_groups % devices:
        raise _errors.sharded_groups(num_groups, devices, axis_name)
    local = num_groups // devices
    if local_batch % local:
        raise _errors.sharded_ragged(local_batch, local, devices, axis_name)
    start = jax.lax.axis_index(axis_name) * local
    return (jax.lax.dynamic_slice_in_dim(scale, start, local, axis=0),
            jax.lax.dynamic_slice_in_dim(bias, start, local, axis=0))


def _local_groups(group, local_batch: int, devices: int, axis_name: str | None):
    """A per-sample group array for this device's samples: as given when it has one entry
    per local sample; the device's slice when it covers the global batch."""
    length = group.shape[0]
    if axis_name is None or length == local_batch:
        return group  # the core checks the length against x
    if length != local_batch * devices:
        raise _errors.sharded_group_array(length, local_batch, devices, axis_name)
    start = jax.lax.axis_index(axis_name) * local_batch
    return jax.lax.dynamic_slice_in_dim(group, start, local_batch, axis=0)


def _set_mode_across(x, scale, bias, group: int, ax: int, epsilon: float, axis_name: str,
                     devices: int):
    """``"set"`` mode over the global batch sharded on ``axis_name``: :func:`eval_norm`'s
    moments (each sample's two-pass over the spatial axes, in at least float32), the
    batch's from its samples' by the law of total variance with each batch-axis sum
    taken over the devices, then the same ``(x - mean) * (rstd * gamma) + beta``. Two
    all-reduce rounds of (C,) vectors."""
    cdt = _compute_dtype(x, scale, bias)
    xc = x.astype(cdt)
    count = x.shape[0] * devices
    mean, var = _sample_moments(xc, _spatial_axes(x.ndim, ax))

    def batch_mean(a):  # over the global batch: the local sum, summed over the devices
        return jax.lax.psum(jnp.sum(a, axis=0, keepdims=True), axis_name) / count

    set_mean = batch_mean(mean)
    set_var = batch_mean(var + jnp.square(mean - set_mean))
    g, b = _rows(scale, group, x.ndim, ax, cdt), _rows(bias, group, x.ndim, ax, cdt)
    y = (xc - set_mean) * (jax.lax.rsqrt(set_var + epsilon) * g) + b
    return y.astype(x.dtype)


# ----------------------------------------------------------------------------- native paths
#
# Shapes: x is (N, ..., C, ...) with C on axis ``ax``; "spatial" are the other non-batch
# axes. Per-sample values are (N, C), per-group values (K, C); ``_expand`` makes an (N, C)
# array broadcastable against x, ``_group_sum`` and ``_to_samples`` go between (N, C)
# and (K, C) along the batch axis with reshapes (a ragged batch: the core's two blocks,
# and a gather of K rows), never a matrix product.


def _compute_dtype(*arrays):
    """At least float32; float64 when any of the arrays is (the spec's dtype policy)."""
    if any(a.dtype == jnp.float64 for a in arrays):
        return jnp.float64
    return jnp.float32


def _spatial_axes(ndim: int, ax: int) -> tuple[int, ...]:
    return tuple(a for a in range(1, ndim) if a != ax)


def _expand(v, ndim: int, ax: int):
    """(N, C) -> (N, 1.., C, 1..), broadcastable against x."""
    shape = [1] * ndim
    shape[0], shape[ax] = v.shape
    return jnp.reshape(v, shape)


def _group_sum(v, k: int, partition: str):
    """(N, C) per-sample values -> (K, C) sums over each group's samples."""
    n, c = v.shape
    if n % k == 0:
        m = n // k
        if partition == "contiguous":
            return jnp.sum(jnp.reshape(v, (k, m, c)), axis=1)
        return jnp.sum(jnp.reshape(v, (m, k, c)), axis=0)
    sums = [jnp.sum(block, axis=member)
            for block, member in _agnostic.group_blocks(jnp, v, k, partition)]
    return jnp.concatenate(sums, axis=0)


def _to_samples(v, n: int, partition: str):
    """(K, C) per-group values -> (N, C), each sample's group's row."""
    k, c = v.shape
    if n % k == 0:
        m = n // k
        if partition == "contiguous":
            return jnp.reshape(jnp.broadcast_to(v[:, None, :], (k, m, c)), (n, c))
        return jnp.reshape(jnp.broadcast_to(v[None, :, :], (m, k, c)), (n, c))
    return jnp.take(v, jnp.asarray(_spec.group_index(n, k, partition)), axis=0)


class _Groups:
    """The K groups along the batch axis of an input shape: their sizes, per-group sums
    (over the spatial axes, then each group's samples), and per-group values broadcast
    back to x's shape, one row per sample."""

    def __init__(self, shape: tuple[int, ...], k: int, partition: str, ax: int, cdt):
        self.n, self.k, self.partition, self.ax, self.ndim = shape[0], k, partition, ax, \
            len(shape)
        self.spatial = _spatial_axes(len(shape), ax)
        sizes = _spec.group_sizes(shape[0], k).astype(np.float64)[:, None]
        self.members = jnp.asarray(sizes, cdt)  # (K, 1): samples per group
        self.values = jnp.asarray(sizes * math.prod(shape[a] for a in self.spatial), cdt)

    def sum(self, a):
        """sum over the spatial axes, then over each group's samples: (K, C)."""
        inner = jnp.sum(a, axis=self.spatial) if self.spatial else a
        return _group_sum(inner, self.k, self.partition)

    def full(self, v):
        """(K, C) -> broadcastable against x."""
        return _expand(_to_samples(v, self.n, self.partition), self.ndim, self.ax)


def _sample_moments(xc, spatial: tuple[int, ...]):
    """Each sample's mean and biased variance over the spatial axes (keepdims), a
    two-pass: the mean, then the mean of squared deviations from it. The centering is
    written ``xc + (-mean)``, the same values bit for bit as ``xc - mean``: the output's
    ``xc - mean`` is then another expression, which XLA fuses into its own consumer
    instead of writing the centered activation out once and reading it back (what it does
    on CPU for one expression with two consumers). Without spatial axes a sample is one
    value per channel: its mean is itself, its variance 0."""
    if not spatial:
        return xc, jnp.zeros_like(xc)
    mean = jnp.mean(xc, axis=spatial, keepdims=True)
    var = jnp.mean(jnp.square(xc + (-mean)), axis=spatial, keepdims=True)
    return mean, var


def _batch_forward(x, scale, bias, k: int, partition: str, ax: int, epsilon: float):
    """``"batch"`` mode: the output, and the per-group mean and inverse standard deviation
    (K, C).

    Per-sample moments come first (:func:`_sample_moments`, the only two passes over the
    activation), then each group's from its samples' by the law of total variance: the
    mean of the per-sample variances plus the variance of the per-sample means, a tensor
    of N*C values. Every per-group vector is broadcast to one row per sample, (N, C),
    before it meets the activation in ``(x - mean) * (gamma * rstd) + beta``."""
    cdt = _compute_dtype(x, scale, bias)
    xc = x.astype(cdt)
    n, c = x.shape[0], x.shape[ax]
    groups = _Groups(x.shape, k, partition, ax, cdt)
    m_s, v_s = (jnp.reshape(v, (n, c)) for v in _sample_moments(xc, groups.spatial))
    mean = _group_sum(m_s, k, partition) / groups.members
    dev = m_s - _to_samples(mean, n, partition)
    rstd = jax.lax.rsqrt(_group_sum(v_s + dev * dev, k, partition) / groups.members
                         + epsilon)
    y = (xc - groups.full(mean)) * groups.full(scale.astype(cdt) * rstd) \
        + groups.full(bias.astype(cdt))
    return y.astype(x.dtype), mean, rstd


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _batch_norm_groups(x, scale, bias, k, partition, ax, epsilon):
    return _batch_forward(x, scale, bias, k, partition, ax, epsilon)[0]


def batch_norm_groups(x, scale, bias, k: int, partition: str, ax: int, epsilon: float):
    """LocalNorm in ``"batch"`` mode with its closed-form derivative.

    Parameters
    ----------
    x : jax.Array
        Input, batch on axis 0, channels on ``ax``; at least K samples (validated by the
        caller).
    scale, bias : jax.Array
        (K, C) gamma and beta.
    k : int
        K, the number of groups along the batch axis.
    partition : {"contiguous", "strided"}
        How samples are assigned to groups (see :func:`localnorm.group_index`).
    ax : int
        The (non-negative) channel axis.
    epsilon : float
        Added to the variance inside the square root.

    Returns
    -------
    jax.Array
        The normalized x, in x's dtype.

    Notes
    -----
    The derivative is the closed-form BatchNorm derivative per group (with xhat the
    normalized x, A = gamma * rstd, and the means over a group's values)::

        dy = A (dx - mean(dx) - xhat mean(dx xhat)) + dgamma xhat + dbeta

    a ``jax.custom_jvp`` rule, linear in the tangents, whose transpose JAX derives for
    reverse mode: dbeta = sum(ct), dgamma = sum(ct xhat), dx = A (ct - dbeta / m - xhat
    dgamma / m). Its primal quantities are ordinary JAX code, so every order of
    differentiation works, forward and reverse.
    """
    return _batch_norm_groups(x, scale, bias, k, partition, ax, epsilon)


@_batch_norm_groups.defjvp
def _batch_norm_groups_jvp(k, partition, ax, epsilon, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    y, mean, rstd = _batch_forward(x, scale, bias, k, partition, ax, epsilon)
    cdt = mean.dtype
    groups = _Groups(x.shape, k, partition, ax, cdt)
    xhat = (x.astype(cdt) - groups.full(mean)) * groups.full(rstd)
    a = scale.astype(cdt) * rstd  # (K, C)
    dxc = dx.astype(cdt)
    # The per-group terms are multiplied by A before they are broadcast, so that their
    # transposes are the sums of ct and ct * xhat that dbias and dscale need anyway.
    mean_dx = groups.sum(dxc) / groups.values
    mean_dx_xhat = groups.sum(dxc * xhat) / groups.values
    dy = (groups.full(a) * dxc
          + groups.full(dbias.astype(cdt) - a * mean_dx)
          + xhat * groups.full(dscale.astype(cdt) - a * mean_dx_xhat))
    return y, dy.astype(y.dtype)


def _rows(p, group, ndim: int, ax: int, cdt):
    """The scale/bias row(s) of ``group`` (an int, or an (N,) array: one per sample),
    broadcastable against x."""
    p = p.astype(cdt)
    if isinstance(group, (int, np.integer)):
        shape = [1] * ndim
        shape[ax] = p.shape[1]
        return jnp.reshape(p[int(group)], shape)
    return _expand(jnp.take(p, group, axis=0), ndim, ax)


def eval_norm(x, scale, bias, *, mode: str, group: Any, axis: int, epsilon: float):
    """LocalNorm in ``"single"`` or ``"set"`` mode: each sample's (``"single"``) or the
    whole batch's (``"set"``) statistics, with the scale/bias of ``group``.

    Parameters
    ----------
    x : jax.Array
        Input, batch on axis 0, channels on ``axis`` (non-negative), validated.
    scale, bias : jax.Array
        (K, C) gamma and beta.
    mode : {"single", "set"}
        The statistics sets: one per sample, or the whole batch.
    group : int or jax.Array
        The group (row of scale/bias) of every sample, or in ``"single"`` mode an int
        array with one group per sample.
    axis : int
        The channel axis.
    epsilon : float
        Added to the variance inside the square root.

    Returns
    -------
    jax.Array
        The normalized x, in x's dtype.

    Notes
    -----
    Each sample's two-pass moments over the spatial axes (:func:`_sample_moments`: the
    mean, then the mean of squared deviations from it), in at least float32; in
    ``"set"`` mode the batch's from its samples' by the law of total variance (the mean
    of the per-sample variances plus the variance of the per-sample means). Then
    ``(x - mean) * (rstd * gamma) + beta``. Differentiated by JAX.
    """
    cdt = _compute_dtype(x, scale, bias)
    xc = x.astype(cdt)
    mean, var = _sample_moments(xc, _spatial_axes(x.ndim, axis))
    if mode == "set":  # the batch's moments from its samples': law of total variance
        batch_mean = jnp.mean(mean, axis=0, keepdims=True)
        var = jnp.mean(var + jnp.square(mean - batch_mean), axis=0, keepdims=True)
        mean = batch_mean
    rstd = jax.lax.rsqrt(var + epsilon)
    y = (xc - mean) * (rstd * _rows(scale, group, x.ndim, axis, cdt)) \
        + _rows(bias, group, x.ndim, axis, cdt)
    return y.astype(x.dtype)
