"""``localnorm.flax.linen.LocalNorm``: the Flax Linen layer.

Same math and options as the NNX layer :class:`localnorm.flax.LocalNorm` (both call
one function, ``localnorm.flax._functional.normalize``, over
:func:`localnorm.local_norm`); only the Linen idioms differ: the number of channels is
inferred from the input, parameters live in the ``"params"`` collection, and the
evaluation switch is a field or a call argument.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from flax.linen import initializers

from localnorm import _errors, _spec

from . import _functional as fn

__all__ = ["LocalNorm"]


class LocalNorm(nn.Module):
    """Local Normalization: BatchNorm with K groups along the batch axis (Flax Linen).

    See :class:`localnorm.flax.LocalNorm` for the meaning of every field; this module
    has the same fields except ``num_features`` (inferred from ``x.shape[axis]``, as
    ``nn.BatchNorm`` does) and ``rngs``. Parameters ``scale`` and ``bias`` of shape
    (K, C) live in the ``"params"`` collection; there is no ``batch_stats`` collection
    (the layer keeps no running statistics), so ``apply`` needs no ``mutable=``.

    Attributes
    ----------
    num_groups : int, default 4
        K, the number of groups along the batch axis.
    epsilon : float, default 1e-5
    dtype : dtype, optional
        Result dtype; None keeps the input's dtype (statistics in at least float32).
    param_dtype : dtype, default float32
    use_bias, use_scale : bool, default True
    bias_init, scale_init : initializer
    axis : int, default -1
        The channel axis; any axis but 0, the batch axis.
    partition : {"contiguous", "strided"}, default "contiguous"
    deterministic : bool, default False
        False: training (``"batch"`` mode). True: evaluation in ``mode`` with ``group``.
        Overridable per call, like ``nn.BatchNorm``'s ``use_running_average``.
    mode : {"batch", "single", "set"}, default "batch"
        The evaluation mode; overridable per call.
    group : int or array of int, default 0
        The group used in ``"single"``/``"set"`` mode; overridable per call.
    axis_name : str, optional
        Group-per-device data parallelism inside ``jax.shard_map`` (see the NNX layer).

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

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None, *, mode: str | None = None,
                 group: Any = None):
        """Normalize ``x``; ``deterministic``, ``mode`` and ``group`` override the
        fields of the same names for this call."""
        k = _spec.check_num_groups(self.num_groups)
        eps = _spec.check_eps(self.epsilon)
        partition = _spec.check_choice("partition", self.partition, _spec.PARTITIONS)
        det = self.deterministic if deterministic is None else deterministic
        mode = fn.check_mode(self.mode if mode is None else mode, "flax.linen LocalNorm")
        group = self.group if group is None else group
        x = jnp.asarray(x)
        c = x.shape[_spec.normalize_axis(self.axis, x.ndim)] if x.ndim >= 2 else 1
        shape = (k, c)
        for name in ("scale", "bias"):  # refuse a mismatch before Flax's shape error
            if self.has_variable("params", name):
                p = self.get_variable("params", name)
                if p.ndim != 2:
                    raise _errors.bad_param_shape(name, p.shape, f"({k}, {c})")
                if p.shape[1] != c:
                    raise _errors.bad_channels(c, p.shape[1])
                if p.shape[0] != k:
                    raise _errors.checkpoint_mismatch(name, p.shape, shape)
        scale = self.param("scale", self.scale_init, shape, self.param_dtype) \
            if self.use_scale else None
        bias = self.param("bias", self.bias_init, shape, self.param_dtype) \
            if self.use_bias else None
        return fn.normalize(
            x, scale, bias, num_groups=k, axis=self.axis,
            mode=mode if det else "batch", group=group if det else 0,
            partition=partition, epsilon=eps, dtype=self.dtype, axis_name=self.axis_name,
            where="flax.linen LocalNorm",
        )

