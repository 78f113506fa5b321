"""LocalNorm, LocalNorm1d/2d/3d: PyTorch modules in BatchNorm's vocabulary.

The math is :func:`localnorm.local_norm` (``docs/spec.md``); these modules own the
(K, C) parameters, the optional per-group running statistics and the evaluation mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from localnorm import _errors, _layer, _model, _spec

from . import _errors as _torch_errors
from . import _functional as fn

__all__ = ["LocalNorm", "LocalNorm1d", "LocalNorm2d", "LocalNorm3d", "GhostBatchNorm1d",
           "GhostBatchNorm2d", "GhostBatchNorm3d", "EVAL_MODES"]

#: Layer modes accepted in evaluation ("running" only where running statistics are tracked).
EVAL_MODES = _spec.MODES + (_spec.RUNNING,)

_DIALECT = _torch_errors.TORCH


def draw_groups(num_groups: int, size: tuple, device: torch.device,
                generator: torch.Generator | None) -> torch.Tensor:
    """Uniform random groups along the batch axis, an int64 tensor of shape ``size`` on
    ``device``. Without a generator the draw happens on ``device`` from PyTorch's global
    seed (capturable by ``torch.compile``); with one, on the generator's device."""
    if generator is None:
        return torch.randint(num_groups, size, device=device)
    g = torch.randint(num_groups, size, generator=generator, device=generator.device)
    return g.to(device)


class GroupDraw:
    """Random groups along the batch axis drawn once per forward pass of a model and
    shared by all its LocalNorm layers, so that an image meets the weight/bias of one
    group in every layer. :func:`localnorm.torch.set_eval_mode` installs :meth:`reset` as
    a forward pre-hook on the model; each layer asks :meth:`get` for its groups."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.drawn: dict = {}

    def reset(self, module: nn.Module, args: Any) -> None:
        """Forward pre-hook: forget the groups of the previous forward pass."""
        self.drawn = {}

    def get(self, num_groups: int, size: tuple, device: torch.device) -> torch.Tensor:
        """The groups of this forward pass for ``size`` samples (drawn on first use)."""
        # A symbolic batch size (torch.export's dynamic dimension) is not hashable: its
        # symbol's name keys it, the same in every layer of the pass.
        key = (num_groups, tuple(str(s) if isinstance(s, torch.SymInt) else s for s in size))
        if key not in self.drawn:
            self.drawn[key] = draw_groups(num_groups, size, device, self.generator)
        return self.drawn[key]


class _LocalNorm(nn.Module):
    """Base of :class:`LocalNorm`, :class:`LocalNorm1d`, :class:`LocalNorm2d` and
    :class:`LocalNorm3d`, which differ only in the input ranks they accept."""

    _ranks: tuple[int, ...] = ()
    _rank_text: str = ""

    @classmethod
    def _accepts(cls, ndim: int) -> bool:
        return ndim in cls._ranks

    def __init__(
        self,
        num_features: int,
        num_groups: int = 4,
        eps: float = _spec.DEFAULT_EPS,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = False,
        partition: str = "contiguous",
        check_finite: bool = True,
        device: Any = None,
        dtype: Any = None,
        shared_affine: bool = False,
        virtual_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        vars(self).update(_layer.layer_options(
            _DIALECT, type(self).__name__, num_features=num_features, num_groups=num_groups,
            virtual_batch_size=virtual_batch_size, shared_affine=shared_affine,
            track_running_stats=track_running_stats, momentum=momentum, eps=eps,
            partition=partition, check_finite=check_finite, affine=affine))
        self.mode = "batch"
        self.group: Any = 0
        self.generator: torch.Generator | None = None
        self.rank_group: int | None = None
        self._draw: GroupDraw | None = None
        factory = {"device": device, "dtype": dtype}
        shape = (self._rows, self.num_features)
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

    @property
    def _rows(self) -> int:
        """Rows of weight/bias and the running statistics: one per group along the batch
        axis, or one shared by all groups (``shared_affine``)."""
        return 1 if self.shared_affine else self.num_groups

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
        groups = (f"virtual_batch_size={self.virtual_batch_size}"
                  if self.virtual_batch_size is not None else f"num_groups={self.num_groups}")
        text = (
            f"{self.num_features}, {groups}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, partition={self.partition!r}"
        )
        if self.shared_affine:
            text += ", shared_affine=True"
        return text if self.check_finite else text + ", check_finite=False"

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every module before compiling: a remedy instead
        # of TorchScript's compile error deep inside the core's Python code
        raise _torch_errors.not_scriptable(type(self).__name__)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        expected = (self._rows, self.num_features)
        for name in ("weight", "bias", "running_mean", "running_var"):
            key = prefix + name
            value = state_dict.get(key)
            if value is not None and getattr(self, name) is not None:
                if self.shared_affine and tuple(value.shape) == (self.num_features,):
                    # A BatchNorm's (C,) vector is the one row shared by the groups.
                    state_dict[key] = value.reshape(expected)
                elif tuple(value.shape) != expected:
                    raise _errors.checkpoint_mismatch(
                        key, tuple(value.shape), expected, shared=self.shared_affine,
                        num_groups=self.num_groups)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- evaluation mode --------------------------------------------------------------

    def set_mode(self, mode: str, group: Any = 0, generator: torch.Generator | None = None):
        """Choose how this layer normalizes in evaluation (``self.training`` False).

        Parameters
        ----------
        mode : str, one of "batch", "single", "set", "running"
            The layer mode of :func:`localnorm.local_norm`, or ``"running"`` (per-group
            running statistics; needs ``track_running_stats=True``). Training always
            uses ``"batch"``.
        group : int, int64 tensor of shape (N,), or None
            Whose weight/bias (and running statistics) are used in ``"single"``,
            ``"set"`` and ``"running"`` mode: an int group along the batch axis, in
            ``"single"`` mode also one group per sample, or None for a random group per
            sample (``"single"``) or per call (``"set"``/``"running"``), drawn at every
            call of this layer. (:func:`localnorm.torch.set_eval_mode` draws once per
            call of the whole model instead, shared by all its layers.) Ignored in
            ``"batch"`` mode.
        generator : torch.Generator, optional
            Seedable source of the random groups when ``group`` is None. Without one the
            groups come from PyTorch's global seed (``torch.manual_seed``), on the input's
            device, which ``torch.compile`` can capture.

        Returns
        -------
        self
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise _torch_errors.bad_layer_generator("set_mode", generator)
        self.mode, self.group = self._eval_setting(mode, group)
        self.generator = generator
        self._draw = None
        return self

    def _eval_setting(self, mode: Any, group: Any) -> tuple[str, Any]:
        """A validated evaluation (mode, group) (:func:`localnorm._layer.eval_setting`,
        None: random groups); a tensor group is read on the host, and a per-sample one
        returned as an int64 tensor."""
        if isinstance(group, torch.Tensor):
            group = group.detach().cpu().numpy()
        mode, group = _layer.eval_setting(mode, group, self.num_groups,
                                          running=self.track_running_stats, allow_none=True)
        return mode, torch.as_tensor(group) if isinstance(group, np.ndarray) else group

    # -- forward ----------------------------------------------------------------------

    def _eval_group(self, x: torch.Tensor, mode: str):
        group = self.group
        if group is None:
            size = (x.shape[0],) if mode == "single" else ()
            k = self.num_groups or 1  # K counted per batch: the groups of the one shared row
            if self._draw is not None:  # shared by the model's layers (maybe on other devices)
                return self._draw.get(k, size, x.device).to(x.device)
            return draw_groups(k, size, x.device, self.generator)
        return group.to(x.device) if isinstance(group, torch.Tensor) else group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` (see the class docstring); the result has x's shape, dtype and
        memory format."""
        if not isinstance(x, torch.Tensor):
            raise _torch_errors.not_a_tensor(type(self).__name__, x)
        mode = ("set" if self.rank_group is not None else "batch") if self.training \
            else self.mode
        batch = x.shape[0] if x.ndim else None  # no batch axis: the rank check refuses it
        k = _layer.call_groups(batch, mode, self.num_groups, self.virtual_batch_size)
        _layer.check_call(
            tuple(x.shape), floating=x.is_floating_point(), dtype=x.dtype,
            rank_ok=self._accepts(x.ndim), rank=self._rank_text, axis=1,
            num_features=self.num_features, mode=mode,
            num_groups=None if isinstance(k, torch.SymInt) else k,  # counted at run time
            group=None if self.training else self.group, where=type(self).__name__,
            dialect=_DIALECT)
        # "running" mode normalizes each sample with stored statistics, as BatchNorm: a
        # NaN/Inf reaches only its own sample's output, so it is not checked.
        if not self.training and mode != _spec.RUNNING and self.check_finite \
                and not fn.graph_mode() and _model.layer_checks_enabled():
            _layer.refuse_non_finite(fn.xp, x, _DIALECT)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x, mode, k)
        return self._forward(x, mode, k)

    def _momentum(self) -> float | torch.Tensor:
        if self.momentum is None:  # cumulative moving average, as BatchNorm
            if fn.graph_mode():
                # A tensor: a tracer records the step count, where float() would bake its
                # value at trace time into the program (torch.jit.trace) or refuse a
                # data-dependent value (torch.export, torch.compile's fused batch_norm).
                dtype = torch.promote_types(self.running_mean.dtype, torch.float32)
                return 1.0 / self.num_batches_tracked.to(dtype)
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _per_group(self, p: torch.Tensor | None, k: int) -> torch.Tensor | None:
        """A (K, C) view of weight/bias/running statistics: a shared row is expanded to
        the K groups along the batch axis (autograd sums its gradient over them)."""
        if p is None or not isinstance(k, int) or p.shape[0] == k:
            # A K counted from torch.export's dynamic batch size: the core broadcasts the
            # shared row itself, where expand would record a guard K != 1.
            return p
        return p.expand(k, p.shape[1])

    def _forward(self, x: torch.Tensor, mode: str, k: int) -> torch.Tensor:
        # Statistics and the affine step in cdt (at least float32: AMP activations with
        # float32 parameters); float16/bfloat16 activations are read as they are, every
        # path accumulating in float32; the result in the input's dtype.
        cdt = fn.compute_dtype(x, self.weight)
        xin = x if x.dtype == cdt or (x.dtype in fn.LOW_PRECISION and cdt == torch.float32) \
            else x.to(cdt)
        w, b = (self._per_group(None if p is None else p.to(cdt), k)
                for p in (self.weight, self.bias))
        update = self.training and self.track_running_stats
        if update:
            if fn.vmapped_over(x, self.running_mean):
                raise _torch_errors.unmapped_running_stats(type(self).__name__)
            self.num_batches_tracked.add_(1)
        momentum = self._momentum() if update else 0.0
        if self.training and self.rank_group is not None:
            y = self._forward_rank_group(xin, w, b, cdt, update, momentum)
        elif mode == "batch":
            y = fn.batch_groups(
                xin, w, b, num_groups=k, partition=self.partition, eps=self.eps, cdt=cdt,
                running_mean=self.running_mean if update else None,
                running_var=self.running_var if update else None, momentum=momentum,
            )
        else:
            stats = (self.running_mean, self.running_var) if mode == _spec.RUNNING else ()
            y = fn.evaluate(xin, w, b, *(self._per_group(r, k) for r in stats), mode=mode,
                            group=self._eval_group(x, mode), eps=self.eps, cdt=cdt)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def _forward_rank_group(self, x, w, b, cdt, update: bool, momentum: float | torch.Tensor):
        """Group-per-rank training: the whole local batch is group ``rank_group``."""
        g = 0 if self.shared_affine else self.rank_group  # one row shared by the groups
        # F.batch_norm updates the rows (a float momentum; a traced one is a tensor)
        native = update and self.running_mean.dtype == cdt and isinstance(momentum, float)
        rows = (self.running_mean[g], self.running_var[g]) if native else (None, None)
        wg, bg = (None if p is None else p[g] for p in (w, b))
        y = torch.nn.functional.batch_norm(x, *rows, wg, bg, True,
                                           momentum if native else 0.0, self.eps)
        if update and not native:  # buffers of another dtype, or a traced momentum
            fn.update_running(self.running_mean[g:g + 1], self.running_var[g:g + 1],
                              *_layer.group_moments(fn.xp, x.detach(), 1, 1, "contiguous"),
                              momentum)
        return y


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
num_groups : int or None, default 4
    K, the number of groups along the batch axis (None with ``virtual_batch_size``:
    then counted per batch, and the attribute is None). A training batch needs at least K
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
    Which samples form group k along the batch axis: consecutive runs (the paper's) or
    ``n % K == k``. Both run without a layout copy on CPU (the strided one as a free view
    into one fused batch_norm).
check_finite : bool, default True
    In evaluation, refuse input with NaN or Inf (one bad value would change the
    statistics, and so the outputs, of every image that shares them), at the cost of one
    read of the input and a host sync. Eager calls only: skipped under ``torch.compile``,
    ``torch.export``, tracing and ``torch.func`` transforms, and never done in training
    (as no BatchNorm does). Also an attribute: ``layer.check_finite = False``.
device : torch.device or str, optional
    Where the parameters and buffers are created (PyTorch's factory argument).
dtype : torch.dtype, optional
    The dtype of the parameters and buffers (PyTorch's factory argument).
shared_affine : bool, default False
    One ``weight``/``bias`` row, of shape (1, C), shared by the K groups along the batch
    axis (Ghost BatchNorm; its gradient is the sum over the groups), instead of one row
    per group. The running statistics are then one (1, C) row too, moved each step toward
    the mean over the groups of their moments. See :class:`GhostBatchNorm2d`.
virtual_batch_size : int, optional
    With ``shared_affine=True`` and ``num_groups=None``: count K per batch as
    ``max(1, N // virtual_batch_size)`` (groups of at least ``virtual_batch_size``
    samples; :func:`localnorm.group_sizes`), so any batch size trains.

Shape
-----
- Input: {shape}, with N >= K in training (N is the batch axis the groups split).
- Output: the same shape, dtype and memory format (channels_last preserved).

Float16/bfloat16 inputs (AMP) are normalized in float32 (statistics, parameters and the
affine step) and the result cast back; no float32 copy of the input is kept for backward.

Attributes
----------
weight : torch.nn.Parameter or None
    Per-group scale gamma, of shape (K, C); None when ``affine=False``.
bias : torch.nn.Parameter or None
    Per-group shift beta, of shape (K, C); None when ``affine=False``.
running_mean : torch.Tensor or None
    Per-group running means, of shape (K, C); None unless ``track_running_stats=True``.
running_var : torch.Tensor or None
    Per-group running (unbiased) variances, of shape (K, C), or None.
mode : str
    The evaluation mode; set it with :meth:`set_mode`.
group : int, torch.Tensor or None
    The evaluation group along the batch axis; set it with :meth:`set_mode`.
check_finite : bool
    Whether evaluation refuses NaN/Inf input (see the parameter above).

Examples
--------
>>> import torch
>>> from localnorm.torch import {name}
>>> layer = {name}({example_c}, num_groups=2)
>>> layer(torch.randn({example_shape})).shape
torch.Size([{example_out}])
"""


class LocalNorm(_LocalNorm):
    _rank_text = ">= 2 (N, C, *spatial)"

    @classmethod
    def _accepts(cls, ndim: int) -> bool:
        return ndim >= 2

    __doc__ = _DOC.format(
        what="input of any rank >= 2 (as SyncBatchNorm)", bn="SyncBatchNorm",
        name="LocalNorm", shape="(N, C, *spatial), any number of spatial axes",
        example_c=3, example_shape="8, 3", example_out="8, 3",
    ) + """
Notes
-----
The rank-agnostic class, as :class:`torch.nn.SyncBatchNorm` is:
:func:`localnorm.torch.convert_batchnorm` turns a SyncBatchNorm (which may see (N, C),
(N, C, L), (N, C, H, W) or (N, C, D, H, W) input) into one. :class:`LocalNorm1d`,
:class:`LocalNorm2d` and :class:`LocalNorm3d` compute the same and only check the rank.
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


# -- Ghost BatchNorm: the presets ------------------------------------------------------


class _Ghost:
    """The Ghost BatchNorm preset of a LocalNorm class: ``shared_affine=True``, groups
    from a virtual batch size (or a fixed number), running statistics tracked and used in
    evaluation. Nothing else differs from the LocalNorm class it is mixed into."""

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int | None = None,
        num_groups: int | None = None,
        eps: float = _spec.DEFAULT_EPS,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        partition: str = "strided",
        check_finite: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_features, num_groups=num_groups, eps=eps, momentum=momentum, affine=affine,
            track_running_stats=track_running_stats, partition=partition,
            check_finite=check_finite, device=device, dtype=dtype, shared_affine=True,
            virtual_batch_size=virtual_batch_size,
        )
        if self.track_running_stats:
            self.set_mode(_spec.RUNNING)


_GHOST_DOC = """Ghost BatchNorm over {what}: BatchNorm whose statistics are computed per virtual
batch (group along the batch axis), with one weight/bias shared by all groups.

Hoffer, Hubara and Soudry (2017), "Train longer, generalize better": in training each
virtual batch of the batch (a group **along the batch axis**) is normalized with its own
mean and variance; in evaluation (``.eval()``) the running statistics are used, as
:class:`torch.nn.{bn}`'s, so any batch size (also a single sample) can be inferred. A
thin preset of :class:`{base}` (``shared_affine=True``, ``track_running_stats=True``,
evaluation mode ``"running"``); the math is :func:`localnorm.local_norm` with gamma/beta
of shape (1, C), see ``docs/spec.md`` and the guide ``docs/guides/ghost-batchnorm.md``.

Parameters
----------
num_features : int
    C, the number of channels (axis 1 of the input).
virtual_batch_size : int, optional
    Samples per virtual batch. A training batch of N samples is split into
    ``K = max(1, N // virtual_batch_size)`` groups (sizes as
    :func:`localnorm.group_sizes`, so each holds between ``virtual_batch_size`` and
    ``2 * virtual_batch_size - 1`` samples): a multiple of it gives groups of exactly
    ``virtual_batch_size`` samples, as tf-keras's ``BatchNormalization(virtual_batch_size=)``,
    and any other batch size trains too. Give this or ``num_groups``.
num_groups : int, optional
    A fixed number K of groups along the batch axis instead (a batch needs N >= K).
eps : float, default 1e-5
    Added to the variance inside the square root (as PyTorch's BatchNorm).
momentum : float or None, default 0.1
    Running-statistics update factor in PyTorch's convention (None: cumulative average).
    Each step moves the running mean and (unbiased) variance toward the mean over the
    groups of their moments (tf-keras's rule for virtual batches).
affine : bool, default True
    Learn ``weight`` and ``bias`` of shape (1, C), shared by the groups.
track_running_stats : bool, default True
    Keep ``running_mean``/``running_var`` of shape (1, C) and evaluate with them
    (``"running"`` mode). False: evaluation recomputes statistics on the test batch
    (``"batch"`` mode, over its virtual batches).
partition : {{"strided", "contiguous"}}, default "strided"
    Which samples form a virtual batch: sample n is in group ``n % K`` (what tf-keras's
    ``virtual_batch_size`` reshape and cifar10-fast's strided view compute, and the
    fastest path: one ``batch_norm`` on a free view of an NCHW batch), or consecutive
    runs (TabNet's chunks).
check_finite : bool, default True
    As :class:`{base}`'s.
device : torch.device or str, optional
    Where the parameters and buffers are created (PyTorch's factory argument).
dtype : torch.dtype, optional
    The dtype of the parameters and buffers (PyTorch's factory argument).

Attributes
----------
weight, bias : torch.nn.Parameter or None
    The shared scale and shift, of shape (1, C). A BatchNorm's (C,) vectors load into
    them from a ``state_dict`` as they are.
running_mean, running_var : torch.Tensor or None
    The one set of running statistics, of shape (1, C), shared by the groups.

Examples
--------
>>> import torch
>>> from localnorm.torch import {name}
>>> layer = {name}({example_c}, virtual_batch_size=4)
>>> layer(torch.randn({example_shape})).shape      # training: 2 virtual batches of 4
torch.Size([{example_out}])
>>> _ = layer.eval()
>>> layer(torch.randn({example_one})).shape        # inference: any batch size
torch.Size([{example_one}])
"""


class GhostBatchNorm1d(_Ghost, LocalNorm1d):
    __doc__ = _GHOST_DOC.format(
        what="(N, C) or (N, C, L) input", bn="BatchNorm1d", base="LocalNorm1d",
        name="GhostBatchNorm1d", example_c=3, example_shape="8, 3", example_out="8, 3",
        example_one="1, 3, 5")


class GhostBatchNorm2d(_Ghost, LocalNorm2d):
    __doc__ = _GHOST_DOC.format(
        what="(N, C, H, W) input", bn="BatchNorm2d", base="LocalNorm2d",
        name="GhostBatchNorm2d", example_c=3, example_shape="8, 3, 4, 4",
        example_out="8, 3, 4, 4", example_one="1, 3, 4, 4")


class GhostBatchNorm3d(_Ghost, LocalNorm3d):
    __doc__ = _GHOST_DOC.format(
        what="(N, C, D, H, W) input", bn="BatchNorm3d", base="LocalNorm3d",
        name="GhostBatchNorm3d", example_c=3, example_shape="8, 3, 2, 4, 4",
        example_out="8, 3, 2, 4, 4", example_one="1, 3, 2, 2, 2")
