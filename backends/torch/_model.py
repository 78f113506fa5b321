"""Model-wide functions: evaluation mode switch, test-time protocols, BatchNorm
conversion and the group-per-rank distributed mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from localnorm import _layer, _model, _spec
from localnorm.protocols import Prediction

from . import _errors as _torch_errors
from . import _functional as fn
from ._layers import _DIALECT, GroupDraw, LocalNorm, LocalNorm1d, LocalNorm2d, LocalNorm3d
from ._layers import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNorm3d, _LocalNorm

__all__ = [
    "convert_batchnorm",
    "eval_mode",
    "local_norm_layers",
    "localnorm_layers",
    "predict",
    "set_eval_mode",
    "set_group_per_rank",
]


class _Torch(_model.Adapter):
    """PyTorch modules for the shared model-level machinery (:mod:`localnorm._model`)."""

    layer_type = _LocalNorm
    dialect = _DIALECT

    def modules(self, model):
        return list(model.modules()) if isinstance(model, nn.Module) else []

    def setting(self, layer):
        return layer.mode, layer.group, layer.generator, layer._draw

    def check(self, layer, mode, group):
        return (*layer._eval_setting(mode, group), None, None)

    def assign(self, layer, setting, temporary=False):
        layer.mode, layer.group, layer.generator, layer._draw = setting

    @contextlib.contextmanager
    def evaluating(self, model, layers):
        """``model.eval()`` under :func:`torch.inference_mode`; training flags restored."""
        was_training = [m.training for m in model.modules()]
        model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            for m, t in zip(model.modules(), was_training):
                m.training = t

    def asarray(self, x):
        return torch.as_tensor(x)

    def count_non_finite(self, x):
        return _layer.count_non_finite(fn.xp, x)

    def group_array(self, groups, x):
        return torch.as_tensor(groups, dtype=torch.long, device=x.device)

    def seed(self, generator):
        if isinstance(generator, torch.Generator):  # one NumPy seed drawn from it
            return int(torch.randint(2**31 - 1, (), generator=generator,
                                     device=generator.device))
        return generator

    def call(self, model, x):
        return model(x)


_TORCH = _Torch()


def localnorm_layers(model: nn.Module) -> list[_LocalNorm]:
    """Every LocalNorm layer of ``model`` (itself included), in module order.

    ``local_norm_layers`` is the same function under its earlier name.

    Parameters
    ----------
    model : torch.nn.Module
        The model to search.

    Returns
    -------
    list of LocalNorm layers
        In ``model.modules()`` order.
    """
    return _model.localnorm_layers(_TORCH, model)


#: The earlier name of :func:`localnorm_layers` (the Keras and Flax adapters' name).
local_norm_layers = localnorm_layers


def _draw_hooks(model: nn.Module) -> dict:
    """The random-group draws installed on ``model`` by set_eval_mode, by hook id: found
    in the model's own pre-hooks, so that a deep copy or an unpickled model, which carries
    a copy of the hook and its draw, is switched like the original."""
    return {hid: hook.__self__ for hid, hook in model._forward_pre_hooks.items()
            if getattr(hook, "__func__", None) is GroupDraw.reset}


def _remove_draw_hook(model: nn.Module) -> None:
    for hid in _draw_hooks(model):  # what the hook's RemovableHandle.remove() does
        del model._forward_pre_hooks[hid]
        model._forward_pre_hooks_with_kwargs.pop(hid, None)


def _install_draw_hook(model: nn.Module, draw: GroupDraw) -> None:
    model.register_forward_pre_hook(draw.reset)


def set_eval_mode(
    model: nn.Module,
    mode: str,
    group: Any = 0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Set the evaluation mode and group of every LocalNorm layer of ``model``.

    The setting applies when the model is in evaluation (``model.eval()``); training
    always uses ``"batch"`` mode. See :func:`eval_mode` for a context manager.

    Parameters
    ----------
    model : torch.nn.Module
        A model holding LocalNorm layers (or one such layer).
    mode : str
        One of ``"batch"``, ``"single"``, ``"set"``, ``"running"``: the layer mode (see
        :func:`localnorm.local_norm`; ``"running"`` uses the running statistics, per
        group or one shared row, and needs ``track_running_stats=True``).
    group : int, int64 tensor of shape (N,), or None, default 0
        The group along the batch axis whose weight/bias the ``"single"``, ``"set"`` and
        ``"running"`` modes use; a per-sample tensor in ``"single"`` mode; None for random
        groups, drawn once per call of ``model`` and shared by all its LocalNorm layers
        (an image meets the same group in every layer): one group per image in
        ``"single"`` mode, one for the whole call in ``"set"``/``"running"`` mode. The
        draw is a forward pre-hook on ``model``, removed when the mode is set again.
    generator : torch.Generator, optional
        Seedable source of random groups (``group=None``). Without one the groups come
        from PyTorch's global seed on the input's device, which ``torch.compile`` can
        capture in the graph (a generator object cannot be).

    Returns
    -------
    torch.nn.Module
        ``model``.

    Examples
    --------
    >>> import torch
    >>> from localnorm.torch import LocalNorm2d, set_eval_mode
    >>> model = torch.nn.Sequential(LocalNorm2d(3, num_groups=2), LocalNorm2d(3, num_groups=2))
    >>> _ = set_eval_mode(model.eval(), "single", group=None)
    >>> model(torch.randn(5, 3, 4, 4)).shape   # each image one random group, both layers
    torch.Size([5, 3, 4, 4])
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise _torch_errors.bad_layer_generator("set_eval_mode", generator)
    _model.set_eval_mode(_TORCH, model, mode, group)
    _remove_draw_hook(model)
    layers = localnorm_layers(model)
    for layer in layers:
        layer.generator = generator
    if group is None:
        draw = GroupDraw(generator)
        for layer in layers:
            layer._draw = draw
        _install_draw_hook(model, draw)
    return model


@contextlib.contextmanager
def eval_mode(
    model: nn.Module,
    mode: str,
    group: Any = 0,
    generator: torch.Generator | None = None,
) -> Iterator[nn.Module]:
    """Context manager form of :func:`set_eval_mode`; restores every layer's previous mode,
    group and generator (and the model's previous random-group draw) on exit.

    Examples
    --------
    >>> import torch
    >>> from localnorm.torch import LocalNorm2d, eval_mode
    >>> model = torch.nn.Sequential(LocalNorm2d(3, num_groups=2)).eval()
    >>> with eval_mode(model, "single", group=1):
    ...     y = model(torch.randn(1, 3, 4, 4))   # one image, its own statistics
    >>> model[0].mode
    'batch'
    """
    layers = _model._layers_or_raise(_TORCH, model, "eval_mode")
    saved = [_TORCH.setting(layer) for layer in layers]
    previous = next(iter(_draw_hooks(model).values()), None)
    try:
        set_eval_mode(model, mode, group, generator)
        yield model
    finally:
        for layer, setting in zip(layers, saved):
            _TORCH.assign(layer, setting)
        _remove_draw_hook(model)
        if previous is not None:
            _install_draw_hook(model, previous)


def predict(
    model: nn.Module,
    x: torch.Tensor,
    protocol: str = "batch",
    vote: str = "hard",
    group: Any = None,
    generator: Any = None,
    batch_size: int | None = None,
    set_size: int | None = None,
    from_logits: bool = True,
    check_finite: bool = True,
) -> Prediction:
    """Classify ``x`` under one of the paper's test-time protocols.

    The protocols are defined once in :mod:`localnorm.protocols` (and ``docs/spec.md``)
    and run by the model-level machinery every adapter shares; this runs them on
    ``model`` in evaluation mode under :func:`torch.inference_mode`, restoring the
    model's training flags and layer modes afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier with LocalNorm layers (all with the same ``num_groups`` and
        ``partition``) returning class scores of shape (N, classes).
    x : torch.Tensor
        Test inputs, batch on axis 0.
    protocol : {"batch", "single", "single-voting", "voting"}, default "batch"
        ``"batch"``: chunks of ``batch_size`` images in ``"batch"`` mode.
        ``"single"``: every image its own statistics and one group's weight/bias, in one
        pass. ``"single-voting"``: every image through all K groups (each image tiled K
        times, one group per copy, ``batch_size`` rows at most per pass), then a vote.
        ``"voting"``: sets of ``set_size`` images, each through every group with the
        set's statistics (the sets tiled over the K groups), then a vote.
    vote : {"hard", "soft"}, default "hard"
        How the voting protocols combine the groups (:func:`localnorm.vote`).
    group : int, int64 tensor of shape (N,), or None
        SINGLE: the group along the batch axis of every image; None draws one uniformly
        per image from ``generator``, once, shared by all layers. The other protocols
        use every group and refuse one.
    generator : None, int, numpy.random.Generator or torch.Generator
        Seedable source of SINGLE's random groups. Every adapter draws with one scheme:
        the same int seed gives the same groups in PyTorch, Keras and Flax; a
        ``torch.Generator`` is turned into the seed
        ``torch.randint(2**31 - 1, (), generator=generator)``.
    batch_size : int, optional
        BATCH: the evaluation batch, at least K (default all of x). Others: rows per
        pass (memory only, default ``len(x)``; SINGLE-VOTING's pass holds
        ``ceil(batch_size / K)`` images tiled K times).
    set_size : int, optional
        VOTING: images per set (default ``max(len(x) // K, 1)``, the training group
        size when ``len(x)`` is the training batch size).
    from_logits : bool, default True
        Whether the model returns logits (soft voting applies a softmax).
    check_finite : bool, default True
        Refuse an ``x`` with NaN or Inf, checked once up front (a bad value would change
        the statistics of every image it shares a set with). The layers' own checks are
        switched off during the passes, so the input is read once for this.

    Returns
    -------
    localnorm.Prediction
        ``(scores, labels, agreement)`` as torch tensors; ``agreement`` is None for BATCH
        and SINGLE.
    """
    return _model.predict(
        _TORCH, model, x, protocol=protocol, vote=vote, group=group, generator=generator,
        batch_size=batch_size, set_size=set_size, from_logits=from_logits,
        check_finite=check_finite,
    )


#: What each BatchNorm becomes; SyncBatchNorm takes any rank >= 2, and so does LocalNorm.
_CONVERSIONS = (
    (nn.BatchNorm1d, LocalNorm1d),
    (nn.BatchNorm2d, LocalNorm2d),
    (nn.BatchNorm3d, LocalNorm3d),
    (nn.SyncBatchNorm, LocalNorm),
)

#: The Ghost BatchNorm preset of each rank-checking LocalNorm class.
_GHOST = {LocalNorm1d: GhostBatchNorm1d, LocalNorm2d: GhostBatchNorm2d,
          LocalNorm3d: GhostBatchNorm3d}


def _local_norm_class(bn: nn.Module) -> type[_LocalNorm] | None:
    if isinstance(bn, nn.modules.batchnorm._LazyNormBase) and bn.has_uninitialized_params():
        raise _torch_errors.lazy_batchnorm(type(bn).__name__)
    for bn_cls, ln_cls in _CONVERSIONS:
        if isinstance(bn, bn_cls):
            return ln_cls
    return None


def convert_batchnorm(
    module: nn.Module, num_groups: int | None = None, partition: str | None = None, *,
    ghost: bool = False, virtual_batch_size: int | None = None,
) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d and SyncBatchNorm in ``module`` with LocalNorm, or
    with Ghost BatchNorm (``ghost=True``).

    Each BatchNorm's weight and bias are copied into every one of the ``num_groups``
    groups along the batch axis (and its running statistics into every group's when it
    tracks them), keeping device, dtype, eps, momentum and the training flag: the
    transfer-learning recipe of the paper (section 3). Like
    :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`, it converts nested children in
    place and returns the module (a new LocalNorm layer when ``module`` itself is a
    BatchNorm). A BatchNorm used in several places becomes one LocalNorm used in all of
    them, its parameters still shared. SyncBatchNorm becomes the rank-agnostic
    :class:`LocalNorm` (it may see (N, C) as well as (N, C, H, W) input); statistics are
    then local to each group along the batch axis, with no cross-process collective (see
    :func:`set_group_per_rank`).
    Lazy BatchNorm layers (``nn.LazyBatchNorm2d``, ...) become ordinary BatchNorm layers
    at their first forward pass and are converted from then on; an uninitialized one
    raises an error, since its number of channels is not known yet.

    With ``ghost=True`` each BatchNorm1d/2d/3d becomes a :class:`GhostBatchNorm1d`/
    ``2d``/``3d`` (a SyncBatchNorm a :class:`LocalNorm` with the same options): its
    weight, bias and running statistics become the one (1, C) row shared by the groups,
    and evaluation uses the running statistics when the BatchNorm tracked them, so the
    converted model in evaluation computes what the original computes.

    With ``num_groups=1`` the converted model computes exactly what the original computes
    in training mode (batch statistics).

    Parameters
    ----------
    module : torch.nn.Module
    num_groups : int, optional
        K, the number of groups along the batch axis; default 4 (with ``ghost=True``,
        give this or ``virtual_batch_size``, exactly one).
    partition : str or None, default None
        "contiguous" or "strided"; None means "contiguous", or "strided" with ``ghost=True`` (the Ghost BatchNorm
        presets', tf-keras's virtual batches).
    ghost : bool, default False
        Convert into Ghost BatchNorm (one weight/bias shared by the groups) instead.
    virtual_batch_size : int, optional
        With ``ghost=True``: samples per group, the number of groups counted per batch
        (see :class:`GhostBatchNorm2d`). Give this or ``num_groups``.

    Returns
    -------
    torch.nn.Module
    """
    ghost, k, partition, vbs = _layer.convert_options(num_groups, partition, ghost,
                                                      virtual_batch_size)
    if not isinstance(module, nn.Module):
        raise _torch_errors.not_a_module("convert_batchnorm", module)
    return _convert(module, k, partition, ghost, vbs, {})


def _convert(module: nn.Module, k: int | None, partition: str, ghost: bool,
             vbs: int | None, memo: dict) -> nn.Module:
    """``module`` converted; ``memo`` maps each module already seen (by id) to what it
    became, so that a BatchNorm used in several places becomes one LocalNorm used in all
    of them (``named_children`` would skip its second place in a container)."""
    if id(module) in memo:
        return memo[id(module)]
    cls = _local_norm_class(module)
    if cls is not None:
        memo[id(module)] = _convert_one(module, cls, k, partition, ghost, vbs)
        return memo[id(module)]
    memo[id(module)] = module
    for name, child in list(module._modules.items()):
        new = None if child is None else _convert(child, k, partition, ghost, vbs, memo)
        if new is not child:
            setattr(module, name, new)
    return module


def _convert_one(bn: nn.Module, cls: type[_LocalNorm], k: int | None, partition: str,
                 ghost: bool = False, vbs: int | None = None) -> _LocalNorm:
    ref = bn.weight if bn.weight is not None else bn.running_mean
    factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    options = dict(eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats, partition=partition,
                   **factory)
    if ghost and cls in _GHOST:
        layer = _GHOST[cls](bn.num_features, virtual_batch_size=vbs, num_groups=k, **options)
    elif ghost:
        layer = cls(bn.num_features, num_groups=k, shared_affine=True,
                    virtual_batch_size=vbs, **options)
        if layer.track_running_stats:
            layer.set_mode(_spec.RUNNING)
    else:
        layer = cls(bn.num_features, num_groups=k, **options)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            source, target = getattr(bn, name), getattr(layer, name)
            if source is not None and target is not None:  # a (C,) vector into every row
                target.copy_(source.detach()).requires_grad_(source.requires_grad)
    layer.train(bn.training)
    return layer


def set_group_per_rank(
    model: nn.Module, rank: int | None = None, enabled: bool = True
) -> nn.Module:
    """Group-per-rank training for :class:`~torch.nn.parallel.DistributedDataParallel`.

    Every LocalNorm layer normalizes this process's whole local batch as one group along
    the batch axis, with the weight/bias (and running statistics) of group
    ``rank % num_groups``. No statistics collective is needed; DDP's usual gradient
    all-reduce trains every group's parameters. With ``world_size == num_groups`` and
    equal local batches this is the single-process model on the concatenated batch with
    the contiguous partition. Applies in training only; evaluation is unchanged.

    Parameters
    ----------
    model : torch.nn.Module
    rank : int, optional
        This process's rank, a non-negative int; default ``torch.distributed.get_rank()``.
    enabled : bool, default True
        False restores ordinary training (the K groups within the local batch).

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    layers = _model._layers_or_raise(_TORCH, model, "set_group_per_rank")
    enabled = _spec.check_flag("enabled", enabled)
    if rank is not None and (isinstance(rank, (bool, np.bool_))
                             or not isinstance(rank, (int, np.integer)) or rank < 0):
        raise _torch_errors.bad_process_rank(rank)
    if enabled and rank is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise _torch_errors.not_distributed("set_group_per_rank")
        rank = torch.distributed.get_rank()
    for layer in layers:
        layer.rank_group = int(rank) % (layer.num_groups or 1) if enabled else None
    return model
