"""The one normalization function behind both Flax layers (NNX and Linen).

It adapts the layers' options (Flax's ``dtype``, ``use_scale``/``use_bias``, a
group-per-device ``axis_name``) to :func:`localnorm.local_norm`, which holds the math
(``docs/spec.md``) and runs on jax arrays through the array API. No statistics are
computed here, and nothing here loops over samples or groups.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import localnorm
from localnorm import _errors, _spec

#: Layer modes of the Flax layers: the core's modes. There is no "running" mode, since
#: the layers keep no running statistics.
MODES = _spec.MODES


def check_mode(mode: Any, where: str) -> str:
    """Validate an evaluation mode; "running" gets its own explanation."""
    if mode == _spec.RUNNING:
        raise _errors.running_unsupported(where)
    return _spec.check_choice("mode", mode, MODES)


def check_num_features(num_features: Any) -> int:
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
        raise _errors.bad_num_features(num_features)
    if num_features < 1:
        raise _errors.bad_num_features(num_features)
    return int(num_features)


def check_group(group: Any, num_groups: int, mode: str) -> Any:
    """A layer's stored group: an int, or (``"single"`` mode) a tuple of ints, one per
    sample. Tuples keep the attribute hashable, so it can stay static under ``nnx.jit``."""
    shape = getattr(group, "shape", None)
    if isinstance(group, (list, tuple)) or (shape is not None and len(shape) == 1):
        arr = np.asarray(group)
        if mode != "single":
            raise _errors.group_array_not_single(mode)
        if arr.size and (not np.issubdtype(arr.dtype, np.integer)
                         or arr.min() < 0 or arr.max() >= num_groups):
            raise _errors.bad_group(group, num_groups)
        return tuple(int(g) for g in arr.reshape(-1))
    return _spec.check_group(group, num_groups, "set", 1)


def _group_arg(group: Any) -> Any:
    if not isinstance(group, (tuple, list)):
        return group
    arr = np.asarray(group)
    return arr.astype(np.int64) if arr.size == 0 else arr


def _shard_rows(p, num_groups: int, axis_name: str, partition: str):
    """The rows of a (K, C) parameter that belong to this device's shard of the batch."""
    if partition != "contiguous":
        raise _errors.sharded_partition(partition)
    devices = jax.lax.axis_size(axis_name)
    if num_groups % devices:
        raise _errors.sharded_groups(num_groups, devices, axis_name)
    local = num_groups // devices
    start = jax.lax.axis_index(axis_name) * local
    return jax.lax.dynamic_slice_in_dim(p, start, local, axis=0)


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
    where: str = "LocalNorm",
):
    """LocalNorm of ``x`` with (K, C) ``scale``/``bias`` (None = ones/zeros).

    ``dtype`` is Flax's result dtype: None keeps x's dtype (statistics in at least
    float32 regardless, see :func:`localnorm.local_norm`); otherwise x is promoted to it
    before normalizing and the result cast to it. ``axis_name`` (inside
    ``jax.shard_map``) makes the local batch this device's whole groups: the device
    uses its own rows of scale/bias and no statistics cross devices.
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise _errors.bad_rank(x.ndim, ">= 2", where)
    ax = _spec.normalize_axis(axis, x.ndim)
    c = x.shape[ax]
    pdt = scale.dtype if scale is not None else bias.dtype if bias is not None else jnp.float32
    if scale is None:
        scale = jnp.ones((num_groups, c), pdt)
    if bias is None:
        bias = jnp.zeros((num_groups, c), pdt)
    if not isinstance(x, jax.core.Tracer) and jnp.issubdtype(x.dtype, jnp.floating):
        # Eager call: refuse NaN/Inf, which would poison a whole group's statistics
        # (the core cannot tell eager jax arrays from traced ones; under jit this is
        # skipped, values being unknown).
        if not bool(jnp.all(jnp.isfinite(x))):
            raise _errors.not_finite("x")
    if dtype is not None:
        x = x.astype(jnp.promote_types(x.dtype, dtype))
    if axis_name is not None and mode == "batch":
        scale = _shard_rows(scale, num_groups, axis_name, partition)
        bias = _shard_rows(bias, num_groups, axis_name, partition)
    y = localnorm.local_norm(
        x, scale, bias, axis=ax, mode=mode, group=_group_arg(group), partition=partition,
        eps=epsilon,
    )
    return y if dtype is None else y.astype(dtype)
