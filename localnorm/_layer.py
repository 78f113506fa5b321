"""What every adapter's layer does on each call, written once: which mode and how many
groups along the batch axis the call uses, the checks of its input, the NaN/Inf check,
and the running-statistics update (Ghost BatchNorm, PyTorch's per-group running
statistics).

The layers of ``localnorm.torch``, ``localnorm.keras`` and ``localnorm.flax`` hold their
parameters and state in their framework's idiom and call these functions, so a rule
changes in one place. Shapes may hold None where a size is known only at run time (a
Keras layer traced with an unknown batch axis): what needs that size is then left to the
run-time check (``docs/spec.md``, "Batches smaller than K"). Arrays go through the namespace
``xp``; nothing here imports a framework.
"""

from __future__ import annotations

import math
from typing import Any

from . import _agnostic, _errors, _spec
from ._agnostic import compute_dtype


def layer_options(dialect: _errors.Dialect, where: str, *, num_groups: Any,
                  virtual_batch_size: Any, shared_affine: Any, track_running_stats: Any,
                  momentum: Any, eps: Any, partition: Any, check_finite: Any,
                  num_features: Any = None, **flags: Any) -> dict[str, Any]:
    """The validated options every adapter's layer ``where`` takes, as the attributes it
    keeps (the epsilon under the dialect's name): C (``num_features``, where the
    constructor takes it), how it counts its groups along the batch axis (a fixed
    ``num_groups``, or a ``virtual_batch_size`` with ``shared_affine``), the running
    statistics (per group only where the dialect has a "running" mode of its own, PyTorch;
    Keras and Flax keep one shared row) and their momentum in the dialect's convention,
    eps, the partition, and every on/off option (``check_finite`` and ``flags``: the
    framework's own, e.g. ``affine``)."""
    options: dict[str, Any] = {}
    if num_features is not None:
        options["num_features"] = _spec.check_num_features(num_features)
    shared = options["shared_affine"] = _spec.check_flag("shared_affine", shared_affine)
    options["num_groups"], options["virtual_batch_size"] = _spec.check_ghost_groups(
        num_groups, virtual_batch_size, shared)
    options["track_running_stats"] = (
        _spec.check_flag("track_running_stats", track_running_stats) if dialect.has_running
        else _spec.check_running(track_running_stats, shared, where))
    options["momentum"] = _spec.check_momentum(momentum, dialect.momentum_default,
                                               torch=dialect.torch_momentum)
    options[dialect.eps] = _spec.check_eps(eps, dialect)
    options["partition"] = _spec.check_choice("partition", partition, _spec.PARTITIONS)
    for name, value in dict(flags, check_finite=check_finite).items():
        options[name] = _spec.check_flag(name, value)
    return options


def call_groups(batch: Any, mode: str, num_groups: int | None,
                virtual_batch_size: int | None) -> Any:
    """K, the number of groups along the batch axis of a call in ``mode`` on a batch of
    ``batch`` samples: ``num_groups``; with a virtual batch size, in ``"batch"`` mode
    ``max(1, batch // virtual_batch_size)`` (:func:`localnorm._spec.ghost_groups`; None
    while the batch size is unknown) and 1 (the one shared row) in the other modes."""
    if virtual_batch_size is None:
        return num_groups
    if mode != "batch":
        return 1
    return None if batch is None else _spec.ghost_groups(batch, virtual_batch_size)


def check_call(shape: tuple, *, floating: bool, dtype: Any, rank_ok: bool, rank: str,
               axis: int | None, num_features: int | None, mode: str, num_groups: Any,
               group: Any = None, where: str, dialect: _errors.Dialect,
               channels_name: str = "num_features") -> None:
    """Refuse an input the layer cannot normalize, in this order: a non-floating dtype,
    a rank the layer does not take (``rank_ok`` False; ``rank`` says what it takes), a
    channel count other than ``num_features`` (None: not known yet), and a batch whose
    statistics are undefined in ``mode`` with K = ``num_groups`` groups along the batch
    axis (:func:`localnorm._spec.check_batch`; ``"running"`` mode needs one sample;
    ``"single"`` mode's per-sample statistics also while the batch size is None). A
    per-sample ``group`` array must have one entry per sample."""
    if not floating:
        raise _errors.not_floating(dtype, dialect)
    if not rank_ok:
        raise _errors.bad_rank(len(shape), rank, where=where, dialect=dialect)
    channels = None if axis is None else shape[axis]
    if channels is not None and num_features is not None and channels != num_features:
        raise _errors.bad_channels(channels, num_features, name=channels_name,
                                   dialect=dialect)
    batch = shape[0]
    if batch is not None and batch == 0:
        raise _errors.empty_batch()
    if mode == _spec.RUNNING or num_groups is None:
        pass  # stored statistics, or K counted at run time: any batch of one sample
    elif all(d is not None for d in shape):
        _spec.check_batch(shape, axis, mode, num_groups, dialect)
    elif batch is not None and mode == "batch" and batch < num_groups:
        raise _errors.too_few_samples(batch, num_groups, dialect)
    elif mode == "single" and all(d is not None for d in shape[1:]):
        # A sample's own statistics hold the same values for any batch size: a shape
        # that gives them one value per channel is refused also while the batch size is
        # unknown (an export would otherwise output beta for every sample).
        values = _spec.values_per_channel(shape, axis, mode, num_groups)
        if values < 2:
            raise _errors.single_value_statistics(mode, values, shape, dialect)
    length = getattr(group, "shape", (None,))[0] if getattr(group, "ndim", 0) else None
    if length is not None and batch is not None and length != batch:
        raise _errors.group_array_mismatch(int(length), batch)


def eval_setting(mode: Any, group: Any, num_groups: int | None, *, running: bool,
                 allow_none: bool = False, ghost_only: str | None = None) -> tuple[str, Any]:
    """A layer's validated evaluation setting: ``mode`` one of the core's modes or
    ``"running"`` (only where the layer tracks running statistics), and ``group`` as
    :func:`localnorm._spec.layer_group` returns it (an int, an int64 NumPy array of one
    group per sample in ``"single"`` mode, or None for a random one where
    ``allow_none``) for a layer with ``num_groups`` groups along the batch axis (None: K
    counted per batch, one shared row). ``ghost_only`` names a layer class whose running
    statistics come only with Ghost BatchNorm (Keras, Flax): its refusal of
    ``"running"`` says how to build one."""
    _spec.check_choice("mode", mode, _spec.MODES + (_spec.RUNNING,))
    if mode == _spec.RUNNING and not running:
        if ghost_only is not None:
            raise _errors.running_unsupported(ghost_only)
        raise _errors.running_not_tracked()
    return mode, _spec.layer_group(group, num_groups or 1, mode, allow_none=allow_none)


def count_non_finite(xp, x) -> int:
    """How many NaN/Inf values ``x`` holds (0 for a non-floating x). A clean x costs one
    read (a sum in at least float32: any NaN or Inf makes it non-finite) and one host
    sync; only a non-finite sum, or one that overflowed, is counted value by value."""
    if not _spec.is_real_floating(xp, x.dtype):
        return 0
    if bool(xp.isfinite(xp.sum(x, dtype=compute_dtype(xp, x.dtype)))):
        return 0
    return int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(x)), xp.int32)))


def refuse_non_finite(xp, x, dialect: _errors.Dialect) -> None:
    """Raise :func:`localnorm._errors.not_finite` when ``x`` holds NaN or Inf."""
    bad = count_non_finite(xp, x)
    if bad:
        raise _errors.not_finite("x", bad, math.prod(x.shape), dialect=dialect)


def running_update(xp, running_mean, running_var, mean, var, count, factor: float, *,
                   unbiased: bool):
    """BatchNorm's running-statistics update, per group along the batch axis:
    ``running + factor * (moment - running)`` for the (K, C) group means and variances
    (``factor`` is PyTorch's ``momentum``, ``1 - momentum`` in Keras and Flax), the
    variance made unbiased with the groups' (K, 1) value ``count`` where ``unbiased``
    (PyTorch's convention; Keras and Flax keep the biased one). One (1, C) running row
    shared by K groups moves by the mean of their K updates (tf-keras's rule for virtual
    batches). A group with fewer than two values (possible only in a compiled program,
    which cannot refuse a small batch) leaves its running statistics as they were.
    Returns the new ``(running_mean, running_var)`` in their dtypes."""
    weight = factor * xp.astype(count > 1, mean.dtype)
    if unbiased:
        var = var * count / xp.maximum(count - 1, xp.ones_like(count))
    new = []
    for running, moment in ((running_mean, mean), (running_var, var)):
        step = weight * (moment - xp.astype(running, moment.dtype))
        if running.shape[0] != step.shape[0]:
            step = xp.mean(step, axis=0, keepdims=True)
        new.append(xp.astype(xp.astype(running, step.dtype) + step, running.dtype))
    return tuple(new)


def convert_options(num_groups: Any, partition: Any, ghost: Any,
                    virtual_batch_size: Any) -> tuple[bool, int | None, str, int | None]:
    """The validated options of every adapter's ``convert_batchnorm``, as ``(ghost,
    num_groups, partition, virtual_batch_size)``. A LocalNorm conversion (``ghost``
    False) takes a fixed number K of groups along the batch axis, 4 by default, and
    contiguous groups by default; a Ghost BatchNorm one (one scale/shift row shared by
    the groups) takes ``num_groups`` or ``virtual_batch_size``, exactly one, and strided
    groups by default (tf-keras's virtual batches)."""
    ghost = _spec.check_flag("ghost", ghost)
    if not ghost:
        if virtual_batch_size is not None:
            raise _errors.virtual_batch_needs_shared(virtual_batch_size)
        num_groups = 4 if num_groups is None else num_groups
    if partition is None:
        partition = "strided" if ghost else "contiguous"
    num_groups, virtual_batch_size = _spec.check_ghost_groups(
        num_groups, virtual_batch_size, shared_affine=ghost)
    partition = _spec.check_choice("partition", partition, _spec.PARTITIONS)
    return ghost, num_groups, partition, virtual_batch_size


def group_moments(xp, x, axis: int, num_groups: int, partition: str):
    """What :func:`running_update` takes from a checked input ``x`` (``axis``, the channel
    axis, non-negative): the means and biased variances, (K, C) in the compute dtype, of
    its K groups along the batch axis, and each group's (K, 1) number of values per
    channel (0 for a group without samples). A caller that differentiates ``x`` stops its
    gradient first: the running statistics are state, not part of the output."""
    cdt = compute_dtype(xp, x.dtype)
    groups = _agnostic.Groups(xp, x, axis, num_groups, partition, cdt)
    mean, var = _agnostic.group_moments(xp, xp.astype(x, cdt), groups)
    return mean, var, _counts(xp, x, groups, cdt)


def group_counts(xp, x, axis: int, num_groups: int, partition: str):
    """The (K, 1) number of values per channel in each of the K groups along the batch
    axis of ``x`` (0 for a group without samples), in the compute dtype: what
    :func:`running_update` takes beside moments a forward has already computed."""
    cdt = compute_dtype(xp, x.dtype)
    return _counts(xp, x, _agnostic.Groups(xp, x, axis, num_groups, partition, cdt), cdt)


def _counts(xp, x, groups, cdt):
    return groups.members * _agnostic.value_count(xp, x, groups.spatial, cdt)
