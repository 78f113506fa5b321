"""``localnorm.flax.linen.LocalNorm``: the Flax Linen layer.

Same math and options as the NNX layer :class:`localnorm.flax.LocalNorm` (both call
one function, ``localnorm.flax._functional.normalize``, over
:func:`localnorm.local_norm`); only the Linen idioms differ: the number of channels is
inferred from the input, parameters live in the ``"params"`` collection, and the
evaluation switch is a field or a call argument, and Ghost BatchNorm's running
statistics live in the ``"batch_stats"`` collection, as ``nn.BatchNorm``'s.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers

from localnorm import _layer, _spec

from . import _functional as fn

__all__ = ["LocalNorm", "GhostBatchNorm"]


class LocalNorm(nn.Module):
    """Local Normalization: BatchNorm with K groups along the batch axis (Flax Linen).

    See :class:`localnorm.flax.LocalNorm` for the meaning of every field; this module
    has the same fields except ``num_features`` (inferred from ``x.shape[axis]``, as
    ``nn.BatchNorm`` does) and ``rngs``. Parameters ``scale`` and ``bias`` of shape
    (K, C) live in the ``"params"`` collection. By default there is no ``batch_stats``
    collection (the layer keeps no running statistics), so ``apply`` needs no
    ``mutable=``; with ``track_running_stats=True`` (:class:`GhostBatchNorm`) a training
    call updates ``batch_stats`` ``mean``/``var`` of shape (1, C), as ``nn.BatchNorm``
    does: ``apply(variables, x, mutable=["batch_stats"])``.

    Attributes
    ----------
    num_groups : int or None, default 4
        K, the number of groups along the batch axis (None with ``virtual_batch_size``).
    epsilon : float, default 1e-5
        Added to the variance inside the square root.
    dtype : dtype, optional
        Result dtype; None keeps the input's dtype (statistics in at least float32).
    param_dtype : dtype, default float32
        dtype of ``scale`` and ``bias``.
    use_bias : bool, default True
        Whether to learn ``bias``, of shape (K, C).
    use_scale : bool, default True
        Whether to learn ``scale``, of shape (K, C).
    bias_init : initializer, default zeros_init()
        Initializer of ``bias``, called with shape (K, C).
    scale_init : initializer, default ones_init()
        Initializer of ``scale``, called with shape (K, C).
    axis : int, default -1
        The channel axis: one int, any axis but 0, the batch axis (a one-element tuple
        or list, as ``nn.BatchNorm`` takes, is read as its int).
    partition : {"contiguous", "strided"}, default "contiguous"
        How the batch is split into groups along the batch axis.
    deterministic : bool, default False
        False: training (``"batch"`` mode). True: evaluation in ``mode`` with ``group``.
        Overridable per call, like ``nn.BatchNorm``'s ``use_running_average``.
    mode : {"batch", "single", "set", "running"}, default "batch"
        The evaluation mode; overridable per call. ``"running"`` uses the running
        statistics (only with ``track_running_stats=True``).
    group : int or array of int, default 0
        The group used in ``"single"``/``"set"`` mode; overridable per call. A
        per-sample group array passed to ``apply`` is traced under ``jax.jit``.
    axis_name : str, optional
        Group-per-device data parallelism inside ``jax.shard_map`` (see the NNX layer).
    check_finite : bool, default True
        In evaluation, refuse NaN/Inf input on eager calls (see the NNX layer).
    shared_affine : bool, default False
        One ``scale``/``bias`` row, of shape (1, C), shared by the groups along the
        batch axis (Ghost BatchNorm's affine step), instead of one row per group.
    virtual_batch_size : int, optional
        With ``shared_affine=True`` and ``num_groups=None``: K counted per batch as
        ``max(1, N // virtual_batch_size)``.
    track_running_stats : bool, default False
        With ``shared_affine=True``: keep ``mean``/``var`` of shape (1, C) in the
        ``"batch_stats"`` collection and allow the ``"running"`` evaluation mode. Each
        training call (with ``mutable=["batch_stats"]``; not ``init``) moves them toward
        the mean over the groups of their moments (biased variance, as ``nn.BatchNorm``).
    momentum : float, default 0.99
        Flax's convention: ``ra = momentum * ra + (1 - momentum) * value``.

    Shape
    -----
    - Input: any rank >= 2, the batch on axis 0 (split into the K groups; N >= K in
      training) and the channels on ``axis``, e.g. (N, H, W, C).
    - Output: the same shape as the input, in ``dtype`` (default: the input's).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from localnorm.flax.linen import LocalNorm
    >>> layer = LocalNorm(num_groups=2)
    >>> x = jax.random.normal(jax.random.key(0), (8, 6))
    >>> variables = layer.init(jax.random.key(1), x)
    >>> variables["params"]["scale"].shape
    (2, 6)
    >>> y = layer.apply(variables, x, deterministic=True, mode="set", group=1)
    """

    num_groups: int = 4
    epsilon: float = _spec.DEFAULT_EPS
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Any = initializers.zeros_init()
    scale_init: Any = initializers.ones_init()
    axis: int = -1
    partition: str = "contiguous"
    deterministic: bool = False
    mode: str = "batch"
    group: Any = 0
    axis_name: str | None = None
    check_finite: bool = True
    shared_affine: bool = False
    virtual_batch_size: int | None = None
    track_running_stats: bool = False
    momentum: float = 0.99

    def __post_init__(self):
        # Refuse bad options when the layer is built, as the NNX layer does (the
        # channel count is only known from the input).
        _layer.layer_options(
            fn.DIALECT, _WHERE, **{name: getattr(self, name) for name in (
                "num_groups", "virtual_batch_size", "shared_affine", "track_running_stats",
                "momentum", "partition", "check_finite", "use_bias", "use_scale",
                "deterministic")}, eps=self.epsilon)
        # A one-element tuple or list (as nn.BatchNorm takes) is kept as its int, so that
        # every later use of self.axis reads one int, as the NNX layer stores it.
        object.__setattr__(self, "axis", _spec.check_channel_axis(self.axis))
        fn.check_dtypes(self.dtype, self.param_dtype)
        fn.check_axis_name(self.axis_name)
        fn.eval_setting(self._mode(), self.group, self.num_groups or 1,
                        running=self.track_running_stats, where=_WHERE)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None, *, mode: str | None = None,
                 group: Any = None):
        """Normalize ``x``; ``deterministic``, ``mode`` and ``group`` override the
        fields of the same names for this call.

        Parameters
        ----------
        x : jax.Array
            Input of rank >= 2 (batch on axis 0), real floating dtype.
        deterministic : bool, optional
            False trains (``"batch"`` mode); True evaluates in ``mode`` with ``group``.
        mode : {"batch", "single", "set", "running"}, optional
            The evaluation mode for this call.
        group : int or integer array, optional
            The evaluation group for this call (an array: one per sample, ``"single"``).

        Returns
        -------
        jax.Array
            Same shape as x; dtype ``self.dtype``, or x's dtype when that is None.
        """
        det = self.deterministic if deterministic is None \
            else _spec.check_flag("deterministic", deterministic)
        x = jnp.asarray(x)
        num_groups, vbs = _spec.check_ghost_groups(self.num_groups, self.virtual_batch_size,
                                                   self.shared_affine)
        mode = self._mode() if mode is None else mode
        k = fn.call_groups(x, mode if det else "batch", num_groups, vbs, self.axis_name,
                           _WHERE) or 1
        group = (self.group if group is None else group) if det else 0
        mode, group = fn.eval_setting(mode, group, k, running=self.track_running_stats,
                                      where=_WHERE)
        c = x.shape[_spec.normalize_axis(self.axis, x.ndim)] if x.ndim >= 2 else 1
        rows = 1 if self.shared_affine else k
        shape = (rows, c)
        # Refuse variables of another shape (a checkpoint with another group count, or
        # input with another channel count) before Flax's own shape error.
        fn.check_params(
            {name: self.get_variable(col, name) for col, name in (
                ("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
                ("batch_stats", "var")) if self.has_variable(col, name)},
            rows, c, channels_name="params['{name}'].shape[1]", shared=self.shared_affine,
            num_groups_name=k,
        )
        scale = self.param("scale", self.scale_init, shape, self.param_dtype) \
            if self.use_scale else None
        bias = self.param("bias", self.bias_init, shape, self.param_dtype) \
            if self.use_bias else None
        mean = var = None
        if self.track_running_stats:
            mean = self.variable("batch_stats", "mean", jnp.zeros, (1, c), self.param_dtype)
            var = self.variable("batch_stats", "var", jnp.ones, (1, c), self.param_dtype)
        # nn.BatchNorm's rule: init creates the statistics and leaves them as they are
        update = mean is not None and not det and not self.is_initializing()
        y, stats = fn.layer_forward(
            self, x, scale, bias, None if mean is None else mean.value,
            None if var is None else var.value, update=update, mode=mode if det else "batch",
            group=group, num_groups=k, where=_WHERE,
            check_finite=self.check_finite and bool(det) and mode != _spec.RUNNING)
        if update:
            mean.value, var.value = stats
        return y

    def _mode(self) -> str:
        """The evaluation mode: the field, or for :class:`GhostBatchNorm` left at None,
        ``"running"`` with running statistics and ``"batch"`` without."""
        if self.mode is not None:
            return self.mode
        return _spec.RUNNING if self.track_running_stats else "batch"


class GhostBatchNorm(LocalNorm):
    """Ghost BatchNorm (Flax Linen): BatchNorm whose statistics are computed per virtual
    batch (group along the batch axis), with one ``scale``/``bias`` shared by the groups.

    The Linen twin of :class:`localnorm.flax.GhostBatchNorm` (see it for the meaning of
    each field): a preset of :class:`LocalNorm` with ``shared_affine=True``,
    ``track_running_stats=True``, ``partition="strided"`` and evaluation mode
    ``"running"`` (``"batch"`` with ``track_running_stats=False``). Give
    ``virtual_batch_size`` (K counted per batch) or ``num_groups``. The running ``mean``
    and ``var`` of shape (1, C) live in ``"batch_stats"``, as ``nn.BatchNorm``'s: train
    with ``apply(variables, x, mutable=["batch_stats"])``, infer with
    ``apply(variables, x, deterministic=True)`` on any batch size.

    Examples
    --------
    >>> import jax
    >>> from localnorm.flax.linen import GhostBatchNorm
    >>> layer = GhostBatchNorm(virtual_batch_size=4)
    >>> x = jax.random.normal(jax.random.key(0), (8, 6))
    >>> variables = layer.init(jax.random.key(1), x)
    >>> variables["batch_stats"]["mean"].shape
    (1, 6)
    >>> y, updates = layer.apply(variables, x, mutable=["batch_stats"])  # 2 virtual batches
    >>> variables = {**variables, **updates}
    >>> layer.apply(variables, x[:1], deterministic=True).shape         # any batch size
    (1, 6)
    """

    num_groups: int | None = None
    partition: str = "strided"
    mode: str | None = None
    shared_affine: bool = True
    track_running_stats: bool = True


_WHERE = "flax.linen LocalNorm"
