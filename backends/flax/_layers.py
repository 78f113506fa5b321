"""``localnorm.flax.LocalNorm``: the Flax NNX layer, in ``nnx.BatchNorm``'s vocabulary."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers

from localnorm import _layer, _model, _spec

from . import _functional as fn

__all__ = ["LocalNorm", "GhostBatchNorm"]


class LocalNorm(nnx.Module):
    """Local Normalization: BatchNorm with K groups along the batch axis (Flax NNX).

    The batch (axis 0) is split into ``num_groups`` groups **along the batch axis** (not
    over channels, as GroupNorm does); each group is normalized with its own statistics
    and its own row of ``scale``/``bias``. The math, the variance estimator and the dtype
    policy are those of :func:`localnorm.local_norm` (see ``docs/spec.md``); this module
    owns the parameters and the training/evaluation idiom only.

    By default the layer is stateless: it keeps no ``BatchStat`` variables, so there is
    no ``batch_stats`` collection to thread through ``nnx.split``/``nnx.jit``, and
    statistics are always recomputed, in evaluation too (the paper's protocols). With
    ``shared_affine=True`` and ``track_running_stats=True`` (:class:`GhostBatchNorm`) it
    keeps one (1, C) ``mean``/``var`` pair of ``nnx.BatchStat`` for ``"running"`` mode.

    It runs native JAX code held equal to :func:`localnorm.local_norm` by the conformance
    suite. In training (``"batch"`` mode) the derivative is the closed-form BatchNorm
    derivative of each group along the batch axis, a ``jax.custom_jvp`` rule: reverse
    mode reads the activation twice, and ``jax.jvp``, ``jax.hessian`` and gradients of
    gradients work as for plain JAX code.

    Parameters
    ----------
    num_features : int
        C, the size of the channel axis.
    num_groups : int or None, default 4
        K, the number of groups along the batch axis (None with ``virtual_batch_size``:
        counted per batch). Training batches need at least K samples (best a multiple
        of K, at least 2 per group).
    epsilon : float, default 1e-5
        Added to the variance inside the square root.
    dtype : dtype, optional
        The result dtype. None (the default) keeps the input's dtype; statistics are
        computed in at least float32 either way, so bfloat16 input is safe.
    param_dtype : dtype, default float32
        dtype of ``scale`` and ``bias``.
    use_bias : bool, default True
        Whether to learn ``bias`` (beta), of shape (K, C).
    use_scale : bool, default True
        Whether to learn ``scale`` (gamma), of shape (K, C).
    bias_init : initializer, default zeros_init()
        Initializer of ``bias``, called with shape (K, C).
    scale_init : initializer, default ones_init()
        Initializer of ``scale``, called with shape (K, C).
    axis : int, default -1
        The channel axis (channels-last, as Flax): one int, any axis but 0, the batch
        axis (a one-element tuple or list, as ``nnx.BatchNorm`` takes, is read as its
        int).
    partition : {"contiguous", "strided"}, default "contiguous"
        How the batch is split into groups (see :func:`localnorm.group_index`).
    deterministic : bool, default False
        False: training, always ``"batch"`` mode. True: evaluation, in ``mode`` with
        ``group``. Set for the whole model by ``model.train()`` / ``model.eval()``
        (the attribute ``nnx.Dropout`` uses), by ``nnx.view(model, deterministic=...)``,
        or per call.
    mode : {"batch", "single", "set", "running"}, default "batch"
        The evaluation mode (see :func:`localnorm.local_norm`): ``"batch"`` recomputes
        statistics per group on the test batch (the paper's BATCH), ``"single"`` per
        sample and ``"set"`` over the whole batch; ``"running"`` uses the running
        statistics (only with ``track_running_stats=True``).
        Usually set model-wide by :func:`localnorm.flax.set_eval_mode`.
    group : int or sequence of int, default 0
        The group (row of scale/bias) used in ``"single"`` and ``"set"`` mode; in
        ``"single"`` mode also one group per sample, kept as an int32 array that is
        traced under ``nnx.jit`` (new groups of the same length reuse the compilation).
    axis_name : str, optional
        For group-per-device data parallelism inside ``jax.shard_map`` with the batch
        sharded over this mesh axis: each device's shard holds ``num_groups / devices``
        whole groups (contiguous partition, local batch a multiple of the local group
        count), uses its own rows of scale/bias, and no statistics cross devices.
        Unlike ``nnx.BatchNorm(axis_name=...)``, the statistics that normalize are not
        averaged over the axis in training; running statistics (``track_running_stats``)
        move by the mean over all K groups, one ``pmean`` per step, and K from
        ``virtual_batch_size`` is counted on the global batch. In ``"set"`` evaluation the set is the global batch (its moments are
        summed over the axis). Calling the layer outside ``shard_map`` is an error;
        :func:`localnorm.flax.predict` runs it on one device.
    check_finite : bool, default True
        In evaluation, refuse input with NaN/Inf on eager calls (one value would poison
        its whole statistics set). Never checked in training, nor under ``jax.jit``/
        ``nnx.jit``/``vmap``, where values are unknown (see ``docs/spec.md``,
        "Non-finite input").
    shared_affine : bool, default False
        One ``scale``/``bias`` row, of shape (1, C), shared by the K groups along the
        batch axis (Ghost BatchNorm; its gradient is the sum over the groups), instead
        of one row per group.
    virtual_batch_size : int, optional
        With ``shared_affine=True`` and ``num_groups=None``: K is counted per batch as
        ``max(1, N // virtual_batch_size)`` (groups of at least ``virtual_batch_size``
        samples; static under ``jit``: each batch size is its own compilation anyway).
    track_running_stats : bool, default False
        With ``shared_affine=True``: keep ``mean``/``var`` (``nnx.BatchStat``, shape
        (1, C)) and allow the ``"running"`` evaluation mode. Each training step moves
        them toward the mean over the groups of their moments (biased variance, as
        ``nnx.BatchNorm``).
    momentum : float, default 0.99
        Flax's convention: ``ra = momentum * ra + (1 - momentum) * value``.
    rngs : nnx.Rngs
        Keys for the parameter initializers (keyword only).

    Shape
    -----
    - Input: any rank >= 2, the batch on axis 0 (split into the K groups; N >= K in
      training) and the C channels on ``axis``, e.g. (N, H, W, C).
    - Output: the same shape as the input, in ``dtype`` (default: the input's).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from localnorm.flax import LocalNorm
    >>> layer = LocalNorm(6, num_groups=2, rngs=nnx.Rngs(0))
    >>> layer.scale.shape
    (2, 6)
    >>> x = jax.random.normal(jax.random.key(0), (8, 6))
    >>> y = layer(x)                      # training: 2 groups of 4 samples
    >>> layer.eval()                      # evaluation: statistics still recomputed
    >>> _ = layer.set_mode("set", group=1)  # whole-batch statistics, group 1's scale/bias
    >>> layer(x).shape
    (8, 6)
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int = 4,
        epsilon: float = _spec.DEFAULT_EPS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = initializers.zeros_init(),
        scale_init: Any = initializers.ones_init(),
        axis: int = -1,
        partition: str = "contiguous",
        deterministic: bool = False,
        mode: str = "batch",
        group: Any = 0,
        axis_name: str | None = None,
        check_finite: bool = True,
        shared_affine: bool = False,
        virtual_batch_size: int | None = None,
        track_running_stats: bool = False,
        momentum: float = 0.99,
        rngs: nnx.Rngs,
    ):
        for name, value in _layer.layer_options(
                fn.DIALECT, type(self).__name__, num_features=num_features,
                num_groups=num_groups, virtual_batch_size=virtual_batch_size,
                shared_affine=shared_affine, track_running_stats=track_running_stats,
                momentum=momentum, eps=epsilon, partition=partition,
                check_finite=check_finite, use_bias=use_bias, use_scale=use_scale,
                deterministic=deterministic).items():
            setattr(self, name, value)
        self.axis = _spec.check_channel_axis(axis)  # its range: against the input's rank
        fn.check_dtypes(dtype, param_dtype)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.axis_name = fn.check_axis_name(axis_name)
        shape = (1 if self.shared_affine else self.num_groups, self.num_features)
        self.mean: nnx.BatchStat | None
        self.var: nnx.BatchStat | None
        if self.track_running_stats:
            self.mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
            self.var = nnx.BatchStat(jnp.ones(shape, param_dtype))
        else:
            self.mean = nnx.data(None)
            self.var = nnx.data(None)
        self.scale: nnx.Param | None
        self.bias: nnx.Param | None
        self.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale \
            else nnx.data(None)
        self.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias \
            else nnx.data(None)
        self.mode = "batch"
        # The group is static when an int (a new int is a new program under nnx.jit) and
        # data when per-sample groups: an array traced under nnx.jit.
        self._int_group = 0
        self._sample_groups = nnx.data(None)
        self.set_mode(mode, group)

    @property
    def group(self) -> Any:
        """The evaluation group: an int, or in ``"single"`` mode an int32 array with one
        group (along the batch axis) per sample (kept once per layer, (L, N), by layers
        stacked for ``nnx.scan``). Set it with :meth:`set_mode`."""
        return self._int_group if self._sample_groups is None else self._sample_groups

    def set_mode(self, mode: str, group: Any = 0) -> LocalNorm:
        """Choose how this layer normalizes in evaluation (``deterministic=True``).

        Parameters
        ----------
        mode : str, one of "batch", "single", "set", "running"
            The layer mode of :func:`localnorm.local_norm`, or ``"running"`` (the
            running statistics; needs ``track_running_stats=True``). Training always
            uses ``"batch"``.
        group : int, or in ``"single"`` mode a sequence/array of ints (one per sample)
            Whose scale/bias are used in ``"single"`` and ``"set"`` mode (a group along
            the batch axis). Ignored in ``"batch"`` mode.

        Returns
        -------
        LocalNorm
            self.
        """
        self._assign(*fn.eval_setting(mode, group, self.num_groups or 1,
                                       running=self.track_running_stats,
                                       where=type(self).__name__))
        return self

    def _assign(self, mode: str, group: Any) -> None:
        """Set a validated mode and group (see :func:`localnorm.flax._functional.eval_setting`)."""
        self.mode = mode
        if isinstance(group, int):
            self._int_group, self._sample_groups = group, None
        else:
            # Layers stacked for nnx.scan/nnx.vmap (built under nnx.vmap: (L, K, C)
            # leaves) keep the groups once per layer, so that the transform slices them
            # with the rest of the state (not into one sample's group per layer).
            stack = next((v.shape[:-2] for v in (self.scale, self.bias, self.mean)
                          if v is not None), ())
            self._int_group = 0
            self._sample_groups = jnp.broadcast_to(group, stack + group.shape[-1:]) \
                if stack else group

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(model, deterministic=...)``.

        Parameters
        ----------
        deterministic : bool, optional
            True: evaluation (in the layer's mode); False: training.
        """
        if deterministic is not None:
            self.deterministic = _spec.check_flag("deterministic", deterministic)

    def __call__(self, x, deterministic: bool | None = None):
        """Normalize ``x`` (batch on axis 0, channels on ``self.axis``).

        Parameters
        ----------
        x : jax.Array
            Input of rank >= 2, real floating dtype.
        deterministic : bool, optional
            Overrides ``self.deterministic`` for this call: False trains (``"batch"``
            mode), True evaluates in ``self.mode`` with ``self.group``.

        Returns
        -------
        jax.Array
            Same shape as x; dtype ``self.dtype``, or x's dtype when that is None.
        """
        # the attribute too: model.eval() sets it, but so can a user's assignment
        det = _spec.check_flag("deterministic", self.deterministic if deterministic is None
                               else deterministic)
        x = jnp.asarray(x)
        scale, bias, mean, var = (None if v is None else v[...]
                                  for v in (self.scale, self.bias, self.mean, self.var))
        # A checkpoint restored with nnx.update can bring (K', C') parameters.
        rows = 1 if self.shared_affine else self.num_groups
        fn.check_params({"scale": scale, "bias": bias, "mean": mean, "var": var}, rows,
                        self.num_features, shared=self.shared_affine,
                        num_groups_name=self.num_groups)
        # (the attribute is public: checked here too, as deterministic)
        mode = _spec.check_choice("mode", self.mode, _spec.MODES + (_spec.RUNNING,)) \
            if det else "batch"
        k = fn.call_groups(x, mode, self.num_groups, self.virtual_batch_size, self.axis_name,
                           type(self).__name__)
        # "running" mode uses stored statistics, as nnx.BatchNorm: a NaN/Inf reaches only
        # its own sample's output, so it is not checked
        check_finite = self.check_finite and bool(det) and mode != _spec.RUNNING \
            and _model.layer_checks_enabled()
        update = not det and self.track_running_stats
        group = self.group if det else 0
        if getattr(group, "ndim", 0) == 2:
            # a stack's groups, one identical row per layer (see _assign), reaching a layer
            # unsliced: a transform that broadcasts this state (nnx.StateAxes ... None)
            group = group[0]
        y, stats = fn.layer_forward(self, x, scale, bias, mean, var, update=update, mode=mode,
                                    group=group, num_groups=k,
                                    check_finite=check_finite, where=type(self).__name__,
                                    num_features=self.num_features)
        if update:
            self.mean[...], self.var[...] = stats
        return y


class GhostBatchNorm(LocalNorm):
    """Ghost BatchNorm (Flax NNX): BatchNorm whose statistics are computed per virtual
    batch (group along the batch axis), with one ``scale``/``bias`` shared by the groups.

    Hoffer, Hubara and Soudry (2017). In training each virtual batch (a group **along
    the batch axis**) is normalized with its own mean and variance; in evaluation
    (``model.eval()``) the running ``mean``/``var`` are used, as ``nnx.BatchNorm``'s
    with ``use_running_average=True``, so any batch size (also one sample) can be
    inferred. A thin preset of :class:`LocalNorm` (``shared_affine=True``,
    ``track_running_stats=True``, evaluation mode ``"running"``, ``nnx.BatchNorm``'s
    defaults ``momentum=0.99``, ``epsilon=1e-5``); the math is
    :func:`localnorm.local_norm` with gamma/beta of shape (1, C), see ``docs/spec.md``
    and the guide ``docs/guides/ghost-batchnorm.md``.

    Parameters
    ----------
    num_features : int
        C, the size of the channel axis.
    virtual_batch_size : int, optional
        Samples per virtual batch. A training batch of N samples is split into
        ``K = max(1, N // virtual_batch_size)`` groups (each of between
        ``virtual_batch_size`` and ``2 * virtual_batch_size - 1`` samples): a multiple
        of it gives groups of exactly ``virtual_batch_size`` samples, as tf-keras, and
        any other batch size trains too. Give this or ``num_groups``.
    num_groups : int, optional
        A fixed number K of groups along the batch axis instead.
    momentum : float, default 0.99
        ``ra = momentum * ra + (1 - momentum) * mean over the groups of their moments``.
    epsilon : float, default 1e-5
        Added to the variance (``nnx.BatchNorm``'s default).
    track_running_stats : bool, default True
        Keep ``mean``/``var`` (1, C) and evaluate with them. False: evaluation
        recomputes statistics on the test batch (``"batch"`` mode).
    partition : {"strided", "contiguous"}, default "strided"
        Which samples form a virtual batch: sample n is in group ``n % K`` (what
        tf-keras's ``virtual_batch_size`` computes) or consecutive runs.
    mode : str, optional
        Evaluation mode; default ``"running"`` (``"batch"`` without running statistics).
    **kwargs
        The other arguments of :class:`LocalNorm` (``axis``, ``dtype``,
        ``param_dtype``, ``use_bias``, ``use_scale``, initializers, ``check_finite``,
        ``deterministic``) and ``rngs``.

    Examples
    --------
    >>> import jax
    >>> from flax import nnx
    >>> from localnorm.flax import GhostBatchNorm
    >>> layer = GhostBatchNorm(6, virtual_batch_size=4, rngs=nnx.Rngs(0))
    >>> layer.scale.shape, layer.mean.shape
    ((1, 6), (1, 6))
    >>> y = layer(jax.random.normal(jax.random.key(0), (8, 6)))  # 2 virtual batches
    >>> layer.eval()
    >>> layer(jax.random.normal(jax.random.key(1), (1, 6))).shape  # any batch size
    (1, 6)
    """

    def __init__(
        self,
        num_features: int,
        *,
        virtual_batch_size: int | None = None,
        num_groups: int | None = None,
        momentum: float = 0.99,
        epsilon: float = _spec.DEFAULT_EPS,
        track_running_stats: bool = True,
        partition: str = "strided",
        mode: str | None = None,
        **kwargs,
    ):
        if mode is None:
            mode = _spec.RUNNING if track_running_stats else "batch"
        super().__init__(
            num_features, num_groups=num_groups, epsilon=epsilon, shared_affine=True,
            virtual_batch_size=virtual_batch_size, track_running_stats=track_running_stats,
            momentum=momentum, mode=mode, partition=partition, **kwargs,
        )
