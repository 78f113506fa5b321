"""The Keras 3 LocalNorm layer."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import constraints, initializers, ops, regularizers

from localnorm import _errors, _spec

from . import _ops

__all__ = ["LocalNormalization", "EVAL_MODES"]

#: Evaluation modes of the layer (training always uses "batch"). The Keras layer keeps no
#: running statistics, so the adapters' "running" mode is not among them.
EVAL_MODES = _spec.MODES


def check_eval_setting(mode: Any, group: Any, num_groups: int) -> tuple[str, Any]:
    """Validate an evaluation ``mode``/``group`` pair for a layer with ``num_groups`` groups
    along the batch axis; returns ``(mode, group)`` with an array group as int64 NumPy."""
    if mode == _spec.RUNNING:
        raise _errors.running_unsupported("The Keras LocalNormalization layer")
    mode = _spec.check_choice("mode", mode, EVAL_MODES)
    if isinstance(group, (list, tuple)):
        group = np.asarray(group)
    elif group is not None and not isinstance(group, (int, np.integer, np.ndarray)):
        if hasattr(group, "shape") and hasattr(group, "dtype"):
            group = ops.convert_to_numpy(group)
    length = len(group) if getattr(group, "ndim", 0) == 1 else 0
    int_group = _spec.check_group(group, num_groups, mode, length)
    if int_group is not None:
        return mode, int_group
    if not np.issubdtype(group.dtype, np.integer) or group.min() < 0 or group.max() >= num_groups:
        raise _errors.bad_group(group, num_groups)
    return mode, group.astype(np.int64)


@keras.saving.register_keras_serializable(package="localnorm")
class LocalNormalization(keras.layers.Layer):
    """LocalNorm: BatchNorm with ``num_groups`` groups along the batch axis.

    The batch (axis 0) is split into K groups **along the batch axis** (not over channels,
    as ``GroupNormalization`` does); each group is normalized with its own statistics and
    scaled with its own row of ``gamma``/``beta``, both of shape ``(K, C)``. Statistics
    are always recomputed from the input, also at test time. The math is that of
    :func:`localnorm.local_norm`, specified in ``docs/spec.md``; this layer computes it
    with ``keras.ops``, so it runs on the TensorFlow, JAX and PyTorch backends.

    In training (``training=True``, as in ``model.fit``) the layer uses ``"batch"`` mode.
    Otherwise it uses its evaluation ``mode``, normally set model-wide with
    :func:`localnorm.keras.set_eval_mode` or :func:`localnorm.keras.eval_mode`; the
    setting is part of the layer's config, so it survives ``.keras`` saving.

    Parameters
    ----------
    num_groups : int, default 4
        K, the number of groups along the batch axis. A training batch needs at least K
        samples (2 per group for dense input); ``num_groups=1`` is BatchNormalization
        with batch statistics.
    axis : int, default -1
        The channel axis (any axis but the batch axis 0). Input of any rank >= 2 works;
        the batch size is never fixed.
    epsilon : float, default 1e-5
        Added to the variance. Keras's ``BatchNormalization`` defaults to 1e-3; 1e-5 is
        the LocalNorm paper's and the other adapters' value (see ``docs/spec.md``).
    center, scale : bool, default True
        Whether to learn the per-group shift ``beta`` / scale ``gamma``.
    beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint
        As in ``keras.layers.BatchNormalization``, applied to the (K, C) weights.
    partition : {"contiguous", "strided"}, default "contiguous"
        How ``"batch"`` mode assigns samples to groups: consecutive runs (the paper's) or
        sample n to group n mod K. Ragged batches work under both.
    mode : {"batch", "single", "set"}, default "batch"
        Evaluation mode (when not training): ``"batch"`` recomputes per-group statistics
        on the test batch (the paper's BATCH); ``"single"`` normalizes each sample with
        its own statistics; ``"set"`` uses one set of statistics for the whole batch.
    group : int or sequence of int, default 0
        Whose gamma/beta ``"single"`` and ``"set"`` mode use: an int in [0, K), or in
        ``"single"`` mode one group per sample.
    **kwargs
        Standard layer arguments (``name``, ``dtype``, ``trainable``...). Under a mixed
        precision policy (``"mixed_float16"``, ``"mixed_bfloat16"``) the weights stay in
        float32 and statistics are computed in float32.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from localnorm.keras import LocalNormalization
    >>> layer = LocalNormalization(num_groups=2)
    >>> y = layer(np.random.default_rng(0).normal(size=(8, 4, 4, 3)))
    >>> tuple(layer.gamma.shape)
    (2, 3)
    """

    def __init__(
        self,
        num_groups: int = 4,
        axis: int = -1,
        epsilon: float = _spec.DEFAULT_EPS,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        partition: str = "contiguous",
        mode: str = "batch",
        group: Any = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_groups = _spec.check_num_groups(num_groups)
        self.axis = axis  # checked against the input's rank in build()
        self.epsilon = _spec.check_eps(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.partition = _spec.check_choice("partition", partition, _spec.PARTITIONS)
        self._eval = check_eval_setting(mode, group, self.num_groups)
        self.gamma = None
        self.beta = None
        self._ndim = None
        self._axis = None

    # -- evaluation setting ------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Evaluation mode, used whenever the layer is called without ``training=True``."""
        return self._eval[0]

    @property
    def group(self) -> Any:
        """Group along the batch axis (int, or int64 array of one group per sample) whose
        gamma/beta ``"single"``/``"set"`` mode use."""
        return self._eval[1]

    def set_eval_mode(self, mode: str, group: Any = 0) -> None:
        """Set this layer's evaluation mode and group (see :func:`localnorm.keras.set_eval_mode`
        for a whole model)."""
        self._eval = check_eval_setting(mode, group, self.num_groups)

    # -- Keras layer API -----------------------------------------------------------------

    def build(self, input_shape):
        ndim = len(input_shape)
        if ndim < 2:
            raise _errors.bad_rank(ndim, ">= 2", where=type(self).__name__)
        self._axis = _spec.normalize_axis(self.axis, ndim)
        self._ndim = ndim
        channels = input_shape[self._axis]
        if channels is None:
            raise _errors.unknown_channels(self.axis, tuple(input_shape))
        shape = (self.num_groups, int(channels))
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape, name="gamma", initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer, constraint=self.gamma_constraint,
                trainable=True, autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape, name="beta", initializer=self.beta_initializer,
                regularizer=self.beta_regularizer, constraint=self.beta_constraint,
                trainable=True, autocast=False,
            )

    @property
    def num_features(self) -> int | None:
        """C, the number of channels (None before the layer is built)."""
        w = self.gamma if self.gamma is not None else self.beta
        return None if w is None else int(w.shape[1])

    def _check_input(self, shape: tuple, mode: str) -> None:
        if len(shape) != self._ndim:
            raise _errors.bad_rank(len(shape), str(self._ndim), where=type(self).__name__)
        channels = shape[self._axis]
        expected = self.num_features
        if channels is not None and expected is not None and channels != expected:
            raise _errors.bad_channels(channels, expected, name="channels")
        if all(isinstance(d, int) for d in shape):
            _spec.check_batch(shape, self._axis, mode, self.num_groups)
        if mode == "single" and isinstance(self.group, np.ndarray) and isinstance(shape[0], int):
            if len(self.group) != shape[0]:
                raise _errors.group_array_mismatch(len(self.group), shape[0])

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise _errors.mask_unsupported(type(self).__name__)
        mode, group = ("batch", 0) if training else self._eval
        self._check_input(tuple(inputs.shape), mode)
        if not isinstance(inputs.shape[0], int):
            inputs = _ops.assert_batch_at_run_time(inputs, self._axis, mode, self.num_groups)
        if isinstance(group, np.ndarray):
            group = ops.convert_to_tensor(group, "int32")
        return _ops.local_norm(
            inputs, self.gamma, self.beta, num_groups=self.num_groups, axis=self._axis, mode=mode, group=group,
            partition=self.partition, eps=self.epsilon,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        group = self.group
        config.update(
            num_groups=self.num_groups,
            axis=self.axis,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=initializers.serialize(self.beta_initializer),
            gamma_initializer=initializers.serialize(self.gamma_initializer),
            beta_regularizer=regularizers.serialize(self.beta_regularizer),
            gamma_regularizer=regularizers.serialize(self.gamma_regularizer),
            beta_constraint=constraints.serialize(self.beta_constraint),
            gamma_constraint=constraints.serialize(self.gamma_constraint),
            partition=self.partition,
            mode=self.mode,
            group=group.tolist() if isinstance(group, np.ndarray) else group,
        )
        return config
