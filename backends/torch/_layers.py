"""LocalNorm1d/2d/3d: PyTorch modules in BatchNorm's vocabulary.

The math is :func:`localnorm.local_norm` (``docs/spec.md``); these modules own the
(K, C) parameters, the optional per-group running statistics and the evaluation mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from localnorm import _errors, _spec

from . import _functional as fn

__all__ = ["LocalNorm1d", "LocalNorm2d", "LocalNorm3d", "EVAL_MODES"]

#: Layer modes accepted in evaluation ("running" only where running statistics are tracked).
EVAL_MODES = _spec.MODES + (_spec.RUNNING,)


class _LocalNorm(nn.Module):
    """Base of :class:`LocalNorm1d`, :class:`LocalNorm2d` and :class:`LocalNorm3d`, which
    differ only in the input ranks they accept."""

    _ranks: tuple[int, ...] = ()
    _rank_text: str = ""

    def __init__(
        self,
        num_features: int,
        num_groups: int = 4,
        eps: float = _spec.DEFAULT_EPS,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = False,
        partition: str = "contiguous",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise _errors.bad_channels(num_features, num_features)
        self.num_features = num_features
        self.num_groups = _spec.check_num_groups(num_groups)
        self.eps = _spec.check_eps(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.partition = _spec.check_choice("partition", partition, _spec.PARTITIONS)
        self.mode = "batch"
        self.group: Any = 0
        self.generator: torch.Generator | None = None
        self.rank_group: int | None = None
        factory = {"device": device, "dtype": dtype}
        shape = (self.num_groups, num_features)
        if self.affine:
            self.weight = nn.Parameter(torch.empty(shape, **factory))
            self.bias = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(shape, **factory))
            self.register_buffer("running_var", torch.ones(shape, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # -- parameters and state ---------------------------------------------------------

    def reset_running_stats(self) -> None:
        """Running means to 0, running variances to 1, the step counter to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; every group's weight 1 and bias 0 (as BatchNorm)."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, partition={self.partition!r}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        expected = (self.num_groups, self.num_features)
        for name in ("weight", "bias", "running_mean", "running_var"):
            value = state_dict.get(prefix + name)
            if value is not None and getattr(self, name) is not None:
                if tuple(value.shape) != expected:
                    raise _errors.checkpoint_mismatch(prefix + name, tuple(value.shape), expected)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- evaluation mode --------------------------------------------------------------

    def set_mode(self, mode: str, group: Any = 0, generator: torch.Generator | None = None):
        """Choose how this layer normalizes in evaluation (``self.training`` False).

        Parameters
        ----------
        mode : {"batch", "single", "set", "running"}
            The layer mode of :func:`localnorm.local_norm`, or ``"running"`` (per-group
            running statistics; needs ``track_running_stats=True``). Training always
            uses ``"batch"``.
        group : int, int64 tensor of shape (N,), or None
            Whose weight/bias (and running statistics) are used in ``"single"``,
            ``"set"`` and ``"running"`` mode: an int group along the batch axis, in
            ``"single"`` mode also one group per sample, or None for a random group per
            sample (``"single"``) or per call (``"set"``/``"running"``) drawn from
            ``generator``. Ignored in ``"batch"`` mode.
        generator : torch.Generator, optional
            Seedable source of the random groups when ``group`` is None.

        Returns
        -------
        self
        """
        _spec.check_choice("mode", mode, EVAL_MODES)
        if mode == _spec.RUNNING and not self.track_running_stats:
            raise _errors.running_not_tracked()
        if group is not None:
            check_mode = "single" if mode == "single" else "set"
            shape = getattr(group, "shape", None)
            if shape is not None and len(shape) == 1:
                if check_mode != "single":
                    raise _errors.group_array_not_single(mode)
                group = torch.as_tensor(group, dtype=torch.long)
                if group.numel() and (int(group.min()) < 0 or int(group.max()) >= self.num_groups):
                    raise _errors.bad_group(group, self.num_groups)
            else:
                group = _spec.check_group(group, self.num_groups, check_mode, 1)
        self.mode = mode
        self.group = group
        self.generator = generator
        return self

    # -- forward ----------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim not in self._ranks:
            raise _errors.bad_rank(x.ndim, self._rank_text, type(self).__name__)
        if x.shape[1] != self.num_features:
            raise _errors.bad_channels(x.shape[1], self.num_features)
        if not x.is_floating_point():
            raise _errors.not_floating(x.dtype)

    def _eval_group(self, x: torch.Tensor, mode: str):
        group = self.group
        if group is None:
            size = (x.shape[0],) if mode == "single" else ()
            group = torch.randint(self.num_groups, size, generator=self.generator)
            return group.to(x.device) if mode == "single" else int(group)
        if isinstance(group, torch.Tensor):
            if group.shape[0] != x.shape[0]:
                raise _errors.group_array_mismatch(group.shape[0], x.shape[0])
            return group.to(x.device)
        return group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        k = self.num_groups
        if self.training:
            mode = "set" if self.rank_group is not None else "batch"
        else:
            mode = self.mode
        _spec.check_batch(tuple(x.shape), 1, "set" if mode == _spec.RUNNING else mode, k)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x, mode)
        return self._forward(x, mode)

    def _momentum(self) -> float:
        if self.momentum is None:  # cumulative moving average, as BatchNorm
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        # Statistics and the affine transform in at least float32 (AMP: float16/bfloat16
        # activations, float32 parameters); the result in the input's dtype.
        cdt = torch.promote_types(x.dtype, torch.float32)
        if self.weight is not None:
            cdt = torch.promote_types(cdt, self.weight.dtype)
        xc = x.to(cdt)
        w = None if self.weight is None else self.weight.to(cdt)
        b = None if self.bias is None else self.bias.to(cdt)
        update = self.training and self.track_running_stats
        if update:
            self.num_batches_tracked.add_(1)
        if self.training and self.rank_group is not None:
            g = self.rank_group
            rm = self.running_mean[g] if update else None
            rv = self.running_var[g] if update else None
            y = torch.nn.functional.batch_norm(
                xc, rm, rv, None if w is None else w[g], None if b is None else b[g],
                True, self._momentum() if update else 0.0, self.eps,
            )
        elif mode == "batch":
            ragged = x.shape[0] % self.num_groups != 0
            fused_update = update and not ragged and self.running_mean.dtype == cdt
            y = fn.batch_groups(
                xc, w, b, num_groups=self.num_groups, partition=self.partition, eps=self.eps,
                running_mean=self.running_mean if fused_update else None,
                running_var=self.running_var if fused_update else None,
                momentum=self._momentum() if fused_update else 0.0,
            )
            if update and not fused_update:
                fn.update_running_ragged(
                    xc, self.running_mean, self.running_var, num_groups=self.num_groups,
                    partition=self.partition, momentum=self._momentum(),
                )
        elif mode == "single":
            y = fn.single(xc, w, b, group=self._eval_group(x, mode), eps=self.eps)
        elif mode == "set":
            y = fn.set_stats(xc, w, b, group=self._eval_group(x, mode), eps=self.eps)
        else:
            y = fn.running(
                xc, w, b, self.running_mean, self.running_var,
                group=self._eval_group(x, mode), eps=self.eps,
            )
        return y if y.dtype == x.dtype else y.to(x.dtype)


_DOC = """LocalNorm over {what}: BatchNorm with K groups along the batch axis.

The batch is split into ``num_groups`` groups **along the batch axis** (axis 0, not over
channels as in GroupNorm); each group has its own mean and variance per channel and its
own row of ``weight``/``bias``. The math is that of :func:`localnorm.local_norm` with
``axis=1``; see ``docs/spec.md`` and the paper's section 3. A drop-in replacement for
:class:`torch.nn.{bn}` (``{bn}(64)`` -> ``{name}(64)``), or use
:func:`localnorm.torch.convert_batchnorm`.

In training the layer always uses ``"batch"`` mode. In evaluation (``.eval()``) statistics
are recomputed on the test input (the paper's protocols), in the mode chosen with
:meth:`set_mode` or model-wide with :func:`localnorm.torch.set_eval_mode` /
:func:`localnorm.torch.eval_mode`: ``"batch"`` (default), ``"single"``, ``"set"``, or
``"running"`` with ``track_running_stats=True``.

Parameters
----------
num_features : int
    C, the number of channels (axis 1 of the input).
num_groups : int, default 4
    K, the number of groups along the batch axis. A training batch needs at least K
    samples (a multiple of K is fastest; a ragged batch of N >= K samples works, with
    group sizes as :func:`localnorm.group_sizes`). ``num_groups=1`` is BatchNorm with batch
    statistics.
eps : float, default 1e-5
    Added to the variance inside the square root (as PyTorch's BatchNorm).
momentum : float or None, default 0.1
    Running-statistics update factor in PyTorch's convention:
    ``running = (1 - momentum) * running + momentum * batch_statistic`` per group, with
    the unbiased batch variance (Keras' and Flax's ``momentum`` is ``1 -`` this one).
    None: cumulative moving average. Used only with ``track_running_stats=True``.
affine : bool, default True
    Learn per-group ``weight`` and ``bias`` of shape (K, C); otherwise no affine step.
track_running_stats : bool, default False
    Keep per-group ``running_mean``/``running_var`` of shape (K, C) (and
    ``num_batches_tracked``) for the ``"running"`` evaluation mode. LocalNorm's own
    protocols recompute statistics at test time and need none.
partition : {{"contiguous", "strided"}}, default "contiguous"
    Which samples form group k: consecutive runs (the paper's) or ``n % K == k``. The
    strided partition is the fastest on CPU (a free view into one fused batch_norm).
device, dtype
    Factory arguments of the parameters and buffers.

Shape
-----
Input: {shape}. Output: same shape, dtype and memory format (channels_last preserved).
Float16/bfloat16 inputs (AMP) are normalized in float32 and cast back.

Attributes
----------
weight, bias : torch.nn.Parameter of shape (K, C)
running_mean, running_var : torch.Tensor of shape (K, C) or None
mode, group : the evaluation mode and group (see :meth:`set_mode`)

Examples
--------
>>> import torch
>>> from localnorm.torch import {name}
>>> layer = {name}({example_c}, num_groups=2)
>>> layer(torch.randn({example_shape})).shape
torch.Size([{example_out}])
"""


class LocalNorm1d(_LocalNorm):
    _ranks = (2, 3)
    _rank_text = "2 (N, C) or 3 (N, C, L)"
    __doc__ = _DOC.format(
        what="(N, C) or (N, C, L) input", bn="BatchNorm1d", name="LocalNorm1d",
        shape="(N, C) or (N, C, L)", example_c=3, example_shape="8, 3, 5",
        example_out="8, 3, 5",
    )


class LocalNorm2d(_LocalNorm):
    _ranks = (4,)
    _rank_text = "4 (N, C, H, W)"
    __doc__ = _DOC.format(
        what="(N, C, H, W) input", bn="BatchNorm2d", name="LocalNorm2d",
        shape="(N, C, H, W)", example_c=3, example_shape="8, 3, 4, 4",
        example_out="8, 3, 4, 4",
    )


class LocalNorm3d(_LocalNorm):
    _ranks = (5,)
    _rank_text = "5 (N, C, D, H, W)"
    __doc__ = _DOC.format(
        what="(N, C, D, H, W) input", bn="BatchNorm3d", name="LocalNorm3d",
        shape="(N, C, D, H, W)", example_c=3, example_shape="8, 3, 2, 4, 4",
        example_out="8, 3, 2, 4, 4",
    )
