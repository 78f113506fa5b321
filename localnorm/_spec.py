"""The normative constants and rules of LocalNorm (see docs/spec.md).

Everything here is plain Python/NumPy on shapes and small integer index arrays; no array
of activations passes through this module. The core functional, the NumPy reference and
every adapter take their modes, partitions, defaults and input checks from here.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import _errors

#: Default epsilon added to the variance (the original LocalNorm code's, and PyTorch's).
DEFAULT_EPS = 1e-5

#: Layer modes. "batch": K groups along the batch axis, each with its own statistics and
#: gamma_k/beta_k. "single": each sample its own statistics, one group's gamma/beta.
#: "set": one set of statistics over all samples, one group's gamma/beta.
MODES = ("batch", "single", "set")

#: Adapter-only evaluation mode using per-group running statistics (not part of the core
#: functional, which never holds state).
RUNNING = "running"

#: How samples are assigned to groups along the batch axis.
PARTITIONS = ("contiguous", "strided")

#: Test-time protocols of the paper (section 3), in terms of the layer modes.
PROTOCOLS = ("batch", "single", "single-voting", "voting")

#: Vote methods.
VOTE_METHODS = ("hard", "soft")


def is_real_floating(xp, dtype: Any) -> bool:
    """Whether ``dtype`` (of an array of namespace ``xp``) is a real floating dtype that
    LocalNorm takes: float16, bfloat16, float32, float64.

    NumPy has no bfloat16 of its own; ``ml_dtypes.bfloat16`` (what JAX's bfloat16 arrays
    become in NumPy) is an extension dtype that array-api-compat's ``isdtype`` refuses
    with a TypeError. It is accepted here by name, and computes like float16: statistics
    in float32, output cast back. Other extension dtypes (float8, int4, ...) are not
    floating dtypes LocalNorm supports.
    """
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except TypeError:
        return getattr(dtype, "name", None) == "bfloat16"


def as_generator(seed: Any) -> np.random.Generator | None:
    """A NumPy Generator from a seed, or None when ``seed`` is not one.

    A Generator is returned as it is (the caller's stream advances); None (fresh
    entropy), an int >= 0 or a SeedSequence seeds a new one. Anything else (a string, a
    bool, a negative int, another framework's generator) gives None, and the caller
    raises its own error (``bad_generator`` for groups, ``bad_seed`` for noise).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    is_int = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if seed is None or isinstance(seed, np.random.SeedSequence) or (is_int and seed >= 0):
        return np.random.default_rng(seed)
    return None


def check_choice(name: str, value: Any, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _errors.bad_choice(name, value, choices)
    return value


def check_flag(name: str, value: Any) -> bool:
    """A boolean option: True or False (a NumPy bool too). Anything else is refused,
    never read for its truth value: the string ``"False"`` is truthy, and ``None`` or
    ``0`` may be a mistake for a different option."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _errors.bad_flag(name, value)


def check_num_features(num_features: Any) -> int:
    """C, the number of channels: a positive int."""
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
            or num_features < 1:
        raise _errors.bad_num_features(num_features)
    return int(num_features)


def check_momentum(momentum: Any, default: str, *, torch: bool = False) -> float | None:
    """The running statistics' momentum: a real number in [0, 1]. ``torch=True``:
    PyTorch's convention (the weight of the new batch; None for a cumulative average);
    otherwise Keras's and Flax's (the weight kept from the running value)."""
    if torch and momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.integer,
                                                               np.floating)) \
            or not 0.0 <= float(momentum) <= 1.0:
        raise _errors.bad_momentum(momentum, default, torch=torch)
    return float(momentum)


def check_running(track_running_stats: Any, shared_affine: bool, where: str) -> bool:
    """Keras and Flax keep running statistics only as one row shared by the groups along
    the batch axis (Ghost BatchNorm)."""
    track = check_flag("track_running_stats", track_running_stats)
    if track and not shared_affine:
        raise _errors.running_needs_shared(where)
    return track


def check_num_groups(num_groups: Any) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise _errors.bad_num_groups(num_groups)
    if num_groups < 1:
        raise _errors.bad_num_groups(num_groups)
    return int(num_groups)


def check_param_shapes(gamma_shape: tuple, beta_shape: tuple, channels: int,
                       num_groups: Any = None) -> int:
    """Validate the shapes of gamma and beta for C channels and return K, the number of
    groups along the batch axis: ``(K, C)`` (a scale and shift per group), or ``(1, C)``
    (one shared by every group: Ghost BatchNorm) with K from ``num_groups``. Without
    ``num_groups``, K is gamma's row count."""
    k = gamma_shape[0] if num_groups is None and len(gamma_shape) == 2 else None
    if num_groups is not None:
        k = check_num_groups(num_groups)
    for name, shape in (("gamma", gamma_shape), ("beta", beta_shape)):
        if len(shape) != 2 or shape[1] != channels or shape[0] < 1 or (
                num_groups is not None and shape[0] not in (1, k)):
            expected = (f"(K, {channels}) with K >= 1" if num_groups is None else
                        f"({k}, {channels}), or (1, {channels}) for one scale and shift "
                        f"shared by the {k} groups")
            raise _errors.bad_param_shape(name, shape, expected)
    if tuple(gamma_shape) != tuple(beta_shape):
        raise _errors.bad_param_shape("beta", beta_shape, f"{tuple(gamma_shape)} like gamma")
    return k


def check_ghost_groups(num_groups: Any, virtual_batch_size: Any,
                       shared_affine: bool) -> tuple[int | None, int | None]:
    """Validate how a layer counts its groups along the batch axis: a fixed
    ``num_groups``, or (only with one scale/shift shared by the groups) a
    ``virtual_batch_size`` from which K is counted per batch by :func:`ghost_groups`.
    Returns ``(num_groups, virtual_batch_size)``, exactly one of them None."""
    if virtual_batch_size is None:
        if num_groups is None:
            raise _errors.ghost_groups_missing()
        return check_num_groups(num_groups), None
    if isinstance(virtual_batch_size, bool) or not isinstance(
            virtual_batch_size, (int, np.integer)) or virtual_batch_size < 1:
        raise _errors.bad_virtual_batch_size(virtual_batch_size)
    if num_groups is not None:
        raise _errors.ghost_groups_both(num_groups, virtual_batch_size)
    if not shared_affine:
        raise _errors.virtual_batch_needs_shared(virtual_batch_size)
    return None, int(virtual_batch_size)


def ghost_groups(batch: int, virtual_batch_size: int) -> int:
    """K, the number of groups along the batch axis of a batch of ``batch`` samples for a
    virtual batch size v: ``max(1, batch // v)``.

    Every group then holds at least v samples (sizes as :func:`group_sizes`: between v
    and 2v - 1), so a group's statistics are never noisier than those of one virtual
    batch: a batch that is a multiple of v gives groups of exactly v samples (tf-keras's
    ``virtual_batch_size``); the remainder of a ragged batch is spread over the groups,
    and a batch smaller than v is one group.

    Examples
    --------
    >>> [ghost_groups(n, 32) for n in (8, 32, 63, 64, 100, 128)]
    [1, 1, 1, 2, 3, 4]
    """
    q = batch // int(virtual_batch_size)
    if isinstance(q, (int, np.integer)):
        return max(1, int(q))
    # A traced size (torch.export's dynamic batch) stays symbolic: max(1, q) for q >= 0
    # without a comparison, which the tracer would record as a guard on the batch size.
    return q + 1 // (q + 1)


#: The smallest eps accepted: float32's smallest normal number. Statistics are computed
#: in at least float32, so a smaller eps would round to 0 (or to a subnormal that
#: flush-to-zero hardware and XLA treat as 0) and a constant channel would give 0/0 = NaN.
MIN_EPS = float(np.finfo(np.float32).tiny)


def check_eps(eps: Any, dialect: _errors.Dialect = _errors.CORE) -> float:
    """eps as a float: positive, finite, and at least :data:`MIN_EPS` (so it never
    becomes 0 in the float32 statistics). A 0-d array counts as its value; a bool, a
    string or an array with more than one element is refused."""
    if isinstance(eps, (bool, np.bool_, str, bytes)) or getattr(eps, "ndim", 0) != 0:
        raise _errors.bad_eps(eps, dialect)
    if getattr(getattr(eps, "dtype", None), "kind", "f") == "b":
        raise _errors.bad_eps(eps, dialect)
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise _errors.bad_eps(eps, dialect) from None
    if not (value > 0 and math.isfinite(value)):
        raise _errors.bad_eps(eps, dialect)
    if value < MIN_EPS:
        raise _errors.eps_underflows(eps, MIN_EPS, dialect)
    return value


def check_channel_axis(axis: Any) -> int:
    """A layer's channel axis before the input's rank is known: one int other than 0 (the
    batch axis); a one-element tuple or list (``nnx.BatchNorm`` accepts those) is
    unwrapped. Its range is checked against the input by :func:`normalize_axis`."""
    if isinstance(axis, (tuple, list)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool):
        raise _errors.bad_axis(axis)
    try:
        value = operator.index(axis)
    except TypeError:
        raise _errors.bad_axis(axis) from None
    if value == 0:
        raise _errors.bad_axis(axis)
    return value


def normalize_axis(axis: Any, ndim: int) -> int:
    """Return the channel axis as a non-negative int; axis 0 (the batch axis) is refused."""
    if isinstance(axis, bool):
        raise _errors.bad_axis(axis, ndim)
    try:
        a = operator.index(axis)
    except TypeError:
        raise _errors.bad_axis(axis, ndim) from None
    if not -ndim <= a < ndim:
        raise _errors.bad_axis(axis, ndim)
    a = a % ndim
    if a == 0:
        raise _errors.bad_axis(axis, ndim)
    return a


def check_batch_count(batch: Any, name: str = "batch") -> int:
    """A number of samples N along the batch axis: an int >= 0."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 0:
        raise _errors.bad_batch_count(batch, name)
    return int(batch)


def group_sizes(batch: int, num_groups: int) -> np.ndarray:
    """Sizes of the K groups along the batch axis for a batch of ``batch`` samples.

    With ``q, r = divmod(batch, num_groups)``, the first ``r`` groups hold ``q + 1``
    samples and the others ``q`` (as :func:`numpy.array_split`), under both partitions.
    A batch that is a multiple of K gives K equal groups; a ragged last batch keeps all K
    groups non-empty as long as ``batch >= num_groups``.

    Parameters
    ----------
    batch : int
        N, the number of samples (the size of axis 0).
    num_groups : int
        K, the number of groups along the batch axis.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(num_groups,)`` summing to ``batch``.

    Raises
    ------
    LocalNormError
        For a batch that is not an int >= 0 or a num_groups that is not an int >= 1.

    Examples
    --------
    >>> import localnorm
    >>> localnorm.group_sizes(10, 4).tolist()
    [3, 3, 2, 2]
    """
    batch, num_groups = check_batch_count(batch), check_num_groups(num_groups)
    q, r = divmod(batch, num_groups)
    sizes = np.full(num_groups, q, dtype=np.int64)
    sizes[:r] += 1
    return sizes


def group_index(batch: int, num_groups: int, partition: str = "contiguous") -> np.ndarray:
    """The group (along the batch axis) of each sample of a batch.

    ``"contiguous"`` (the paper's): group k holds one contiguous run of samples, runs in
    order, sizes from :func:`group_sizes`; for ``batch = K * m`` sample n is in group
    ``n // m``. ``"strided"``: sample n is in group ``n % K`` (the same sizes).

    Parameters
    ----------
    batch : int
        N, the number of samples (the size of axis 0).
    num_groups : int
        K, the number of groups along the batch axis.
    partition : {"contiguous", "strided"}, default "contiguous"
        How samples are assigned to groups.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(batch,)`` with values in ``[0, num_groups)``.

    Raises
    ------
    LocalNormError
        For an unknown partition, a batch that is not an int >= 0 or a num_groups that
        is not an int >= 1.

    Examples
    --------
    >>> import localnorm
    >>> localnorm.group_index(10, 4).tolist()
    [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    >>> localnorm.group_index(10, 4, "strided").tolist()
    [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    """
    check_choice("partition", partition, PARTITIONS)
    batch, num_groups = check_batch_count(batch), check_num_groups(num_groups)
    if partition == "strided":
        return np.arange(batch, dtype=np.int64) % num_groups
    return np.repeat(np.arange(num_groups, dtype=np.int64), group_sizes(batch, num_groups))


def check_group(group: Any, num_groups: int, mode: str, batch: int | None = None, *,
                allow_none: bool = False) -> int | None:
    """Validate ``group`` for a mode. Returns the int group, or None for an array group.

    Array groups (one entry per sample) are allowed in "single" mode only; their range
    is checked by the caller where the values are concrete (see :func:`layer_group`), their
    length against ``batch`` where it is known. ``allow_none``: the caller also accepts
    None (a random group), which the message then offers.
    """
    def bad():
        return _errors.bad_group(group, num_groups, allow_none)

    if isinstance(group, (bool, np.bool_)):
        raise bad()
    if isinstance(group, (int, np.integer)):
        if not 0 <= group < num_groups:
            raise bad()
        return int(group)
    shape = getattr(group, "shape", None)
    if shape is None:
        raise bad()
    if len(shape) == 0:
        # A 0-d integer array is an int group; a 0-d float or bool array is refused like
        # the Python 1.5 or True it holds (never truncated to an int).
        if not _is_integer_dtype(getattr(group, "dtype", None)):
            raise bad()
        return check_group(int(group), num_groups, mode, batch, allow_none=allow_none)
    if mode != "single":
        raise _errors.group_array_not_single(mode)
    if len(shape) != 1:
        raise _errors.group_array_rank(tuple(shape), batch)
    if batch is not None and shape[0] != batch:
        raise _errors.group_array_mismatch(int(shape[0]), batch)
    return None


def layer_group(group: Any, num_groups: int, mode: str, *,
                allow_none: bool = False) -> int | np.ndarray | None:
    """A layer's evaluation group along the batch axis, as every adapter's ``set_mode`` /
    ``set_eval_mode`` takes it: None (a random group, where ``allow_none``), an int (or a
    0-d integer array), or in ``"single"`` mode one group per sample, a list, tuple or 1-D
    integer array that NumPy can read (an adapter passes device arrays as host copies).
    Returns None, an int, or the per-sample groups as an int64 NumPy array, every entry
    in [0, num_groups)."""
    if group is None and allow_none:
        return None
    if isinstance(group, (list, tuple)):
        group = np.asarray(group)
    if check_group(group, num_groups, mode, allow_none=allow_none) is not None:
        return int(group)
    groups = np.asarray(group)
    if groups.size and (not _is_integer_dtype(groups.dtype) or groups.min() < 0
                        or groups.max() >= num_groups):
        raise _errors.bad_group(group, num_groups, allow_none)
    return groups.astype(np.int64)


def _is_integer_dtype(dtype: Any) -> bool:
    """Whether an array dtype (NumPy, torch, JAX, TensorFlow, ...) is an integer dtype, by
    NumPy's reading of it or, for other libraries, by its name; bool is not."""
    if dtype is None:
        return False
    try:
        return bool(np.issubdtype(np.dtype(dtype), np.integer))
    except TypeError:
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
        return name.startswith(("int", "uint"))


def values_per_channel(shape: tuple, axis: int, mode: str, num_groups: int) -> int:
    """Smallest number of values per channel in one statistics set of this input."""
    spatial = 1
    for a, s in enumerate(shape):
        if a not in (0, axis):
            spatial *= s
    batch = shape[0]
    if mode == "single":
        return spatial
    if mode == "set":
        return batch * spatial
    # The smallest of group_sizes(batch, num_groups), in plain int arithmetic so that
    # tracers (torch.compile, jit) see no array op here.
    return (batch // num_groups) * spatial


def check_batch(shape: tuple, axis: int, mode: str, num_groups: int,
                dialect: _errors.Dialect = _errors.CORE) -> None:
    """Refuse batches whose statistics are undefined: empty, fewer samples than groups in
    "batch" mode, or a statistics set with a single value per channel. ``dialect`` words
    the remedies for the calling framework."""
    batch = shape[0]
    if batch == 0:
        raise _errors.empty_batch()
    if mode == "batch" and batch < num_groups:
        raise _errors.too_few_samples(batch, num_groups, dialect)
    values = values_per_channel(shape, axis, mode, num_groups)
    if values < 2:
        raise _errors.single_value_statistics(mode, values, shape, dialect)
