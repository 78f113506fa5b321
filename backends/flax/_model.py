"""Model-level evaluation for Flax NNX models: the mode switch, ``predict`` with the
paper's test-time protocols, and ``convert_batchnorm``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from localnorm import _layer, _model, _spec
from localnorm.protocols import Prediction

from . import _errors as _flax_errors
from . import _functional as fn
from ._layers import GhostBatchNorm, LocalNorm

__all__ = ["set_eval_mode", "eval_mode", "predict", "convert_batchnorm", "localnorm_layers"]

#: The attributes ``nnx.Module.train()``/``eval()`` flip; ``predict`` restores them.
_TRAIN_FLAGS = ("deterministic", "use_running_average")


class _Flax(_model.Adapter):
    """NNX models for the shared model-level machinery (:mod:`localnorm._model`)."""

    layer_type = LocalNorm
    dialect = fn.DIALECT

    def modules(self, model):
        if not isinstance(model, nnx.Module):
            return []
        return [m for _, m in nnx.iter_modules(model)]

    def setting(self, layer):
        return layer.mode, layer.group

    def check(self, layer, mode, group):
        return fn.eval_setting(mode, group, layer.num_groups or 1,
                               running=layer.track_running_stats,
                               where="localnorm.flax.LocalNorm")

    def assign(self, layer, setting, temporary=False):
        layer._assign(*setting)

    @contextlib.contextmanager
    def evaluating(self, model, layers):
        """``model.eval()``, and the layers without ``axis_name`` (``predict`` runs on
        one device); every module's flags restored after."""
        saved = [(module, name, getattr(module, name))
                 for _, module in nnx.iter_modules(model)
                 for name in _TRAIN_FLAGS if hasattr(module, name)]
        saved += [(layer, "axis_name", layer.axis_name) for layer in layers]
        model.eval()
        for layer in layers:
            layer.axis_name = None
        try:
            yield
        finally:
            for module, name, value in saved:
                setattr(module, name, value)

    def asarray(self, x):
        return jnp.asarray(x)

    def count_non_finite(self, x):
        return _layer.count_non_finite(jnp, x)

    def group_array(self, groups, x):
        return jnp.asarray(groups, jnp.int32)

    def seed(self, generator):
        if isinstance(generator, jax.Array):  # a PRNG key: one NumPy seed drawn from it
            typed = jnp.issubdtype(generator.dtype, jax.dtypes.prng_key)
            legacy = generator.dtype == jnp.uint32 and generator.shape == (2,)
            if not (legacy or typed and generator.shape == ()):
                raise _flax_errors.bad_key_generator(generator)
            return int(jax.random.randint(generator, (), 0, 2**31 - 1))
        return generator

    def call(self, model, x):
        return _jitted_call(model, x) if self.jit else model(x)

    jit = True


_FLAX = _Flax()


def localnorm_layers(model: nnx.Module) -> list[LocalNorm]:
    """Every :class:`~localnorm.flax.LocalNorm` of an NNX model (the model itself too)."""
    return _model.localnorm_layers(_FLAX, model)


def set_eval_mode(model: nnx.Module, mode: str, group: Any = 0) -> nnx.Module:
    """Set the evaluation mode and group of every LocalNorm layer of an NNX model.

    The mode applies while the layers are deterministic (after ``model.eval()``);
    training always uses ``"batch"`` mode. See :meth:`localnorm.flax.LocalNorm.set_mode`.

    Parameters
    ----------
    model : nnx.Module
        A model holding :class:`~localnorm.flax.LocalNorm` layers (or one such layer).
    mode : str
        One of ``"batch"``, ``"single"``, ``"set"``, or ``"running"`` (layers with running
        statistics, :class:`GhostBatchNorm`). ``"batch"``: K groups along the batch axis, statistics recomputed on the test
        batch (the paper's BATCH). ``"single"``: per-sample statistics. ``"set"``: one
        set of statistics over the whole batch.
    group : int, or in ``"single"`` mode an integer array with one entry per sample
        Whose scale/bias are used in ``"single"`` and ``"set"`` mode.

    Returns
    -------
    nnx.Module
        The model (changed in place).
    """
    return _model.set_eval_mode(_FLAX, model, mode, group)


@contextlib.contextmanager
def eval_mode(model: nnx.Module, mode: str, group: Any = 0) -> Iterator[nnx.Module]:
    """:func:`set_eval_mode` for the duration of a ``with`` block, then the previous
    modes and groups of the layers are restored (also on error)."""
    with _model.eval_mode(_FLAX, model, mode, group) as m:
        yield m


def predict(
    model: nnx.Module,
    x,
    protocol: str = "batch",
    vote: str = "hard",
    group: Any = None,
    generator: Any = None,
    batch_size: int | None = None,
    set_size: int | None = None,
    from_logits: bool = True,
    jit: bool = True,
    check_finite: bool = True,
) -> Prediction:
    """Classify ``x`` with an NNX model under one of the paper's test-time protocols.

    The protocols (``docs/spec.md``) are run by :func:`localnorm.protocols.run_protocol`,
    through the model-level machinery every adapter shares: the model is in evaluation
    for the call (``model.eval()``, every module's train/eval flags and every layer's mode
    restored afterwards) and the LocalNorm layers' mode and group are set for each pass.
    It runs on one device: layers built with ``axis_name`` (for ``jax.shard_map``) run as
    the single-device layer on each whole pass, which is what the sharded model computes.

    Parameters
    ----------
    model : nnx.Module
        Maps a batch to class scores of shape (N, classes); holds LocalNorm layers that
        agree on ``num_groups`` and ``partition``.
    x : array
        Test inputs, batch on axis 0 (converted with ``jnp.asarray``).
    protocol : {"batch", "single", "single-voting", "voting"}, default "batch"
        The test-time protocol (how the images meet the groups along the batch axis).
    vote : {"hard", "soft"}, default "hard"
        How the voting protocols combine the K groups along the batch axis.
    group : int, integer array of shape (N,), or None
        SINGLE: the group whose scale/bias each image uses; None draws one per image
        from ``generator``. The other protocols use every group and refuse one.
    generator : None, int, numpy.random.Generator or jax PRNG key
        Seedable source of the random groups of SINGLE with ``group=None`` (None: fresh
        entropy). Every adapter draws with one scheme: the same int seed gives the same
        groups in PyTorch, Keras and Flax; a key is turned into the seed
        ``jax.random.randint(key, (), 0, 2**31 - 1)``.
    batch_size : int, optional
        BATCH: the evaluation batch (at least K); other protocols: rows per pass
        (memory only). See :func:`localnorm.protocols.run_protocol`.
    set_size : int, optional
        VOTING: images per set, normally the training group size. See
        :func:`localnorm.protocols.run_protocol`.
    from_logits : bool, default True
        Whether the model returns logits (soft voting applies a softmax).
    jit : bool, default True
        Run the model under ``nnx.jit``: one compilation per input shape, layer mode and
        int group, reused across chunks and calls (per-sample groups are traced data, so
        random SINGLE groups do not recompile). False runs it eagerly.
    check_finite : bool, default True
        Refuse ``x`` with NaN/Inf, checked once on the whole input before any pass (the
        layers' own checks are skipped inside ``predict``, jitted or not).

    Returns
    -------
    localnorm.Prediction
        ``(scores, labels, agreement)`` as jax arrays; ``agreement`` is None for BATCH
        and SINGLE.
    """
    adapter = _Flax()
    adapter.jit = _spec.check_flag("jit", jit)
    return _model.predict(
        adapter, model, x, protocol=protocol, vote=vote, group=group, generator=generator,
        batch_size=batch_size, set_size=set_size, from_logits=from_logits,
        check_finite=check_finite,
    )


def _eager_call(model, x):
    return model(x)


#: The model's call under nnx.jit; module-level so compilations are reused across calls.
#: The cache key is the model's static structure (layer modes, int groups, flags) and the
#: input shape; per-sample groups are traced, so the cache does not grow with the number
#: of chunks or of random group draws.
_jitted_call = nnx.jit(_eager_call)


def _set_child(node: Any, key: Any, value: Any) -> None:
    if isinstance(key, str) and hasattr(node, key):
        setattr(node, key, value)
    else:
        node[key] = value


def _from_batchnorm(bn: nnx.BatchNorm, num_groups: int | None, partition: str,
                    ghost: bool = False, virtual_batch_size: int | None = None) -> LocalNorm:
    options = dict(
        num_groups=num_groups, epsilon=bn.epsilon, dtype=bn.dtype,
        param_dtype=bn.param_dtype, use_bias=bn.use_bias, use_scale=bn.use_scale,
        axis=bn.axis, partition=partition, deterministic=bool(bn.use_running_average),
        rngs=nnx.Rngs(0),
    )
    if ghost:
        layer = GhostBatchNorm(bn.num_features, virtual_batch_size=virtual_batch_size,
                               momentum=bn.momentum, **options)
        names = (("scale", nnx.Param), ("bias", nnx.Param), ("mean", nnx.BatchStat),
                 ("var", nnx.BatchStat))
    else:
        layer = LocalNorm(bn.num_features, **options)
        names = (("scale", nnx.Param), ("bias", nnx.Param))
    rows = 1 if ghost else num_groups
    for name, kind in names:
        p = getattr(bn, name)
        if p is not None:
            # (C,) -> (rows, C); a BatchNorm stacked for nnx.scan (built under nnx.vmap)
            # has (L, C) leaves, which become (L, rows, C)
            tiled = jnp.repeat(jnp.asarray(p[...])[..., None, :], rows, axis=-2)
            setattr(layer, name, kind(tiled))
    return layer


def _edges(model: Any) -> list[tuple[Any, Any, Any]]:
    """Every (parent, key, child) edge of the module graph, shared children once per
    reference (``nnx.iter_modules`` yields a shared module only once)."""
    edges, seen, stack = [], set(), [model]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, child in nnx.iter_children(node):
            if isinstance(child, nnx.Variable):
                continue
            edges.append((node, key, child))
            stack.append(child)
    return edges


def convert_batchnorm(model: nnx.Module, num_groups: int | None = None,
                      partition: str | None = None, *, ghost: bool = False,
                      virtual_batch_size: int | None = None) -> nnx.Module:
    """Replace every ``nnx.BatchNorm`` of an NNX model by a :class:`LocalNorm` (or, with
    ``ghost=True``, by a :class:`GhostBatchNorm`).

    Each new layer has ``num_groups`` groups along the batch axis and the BatchNorm's
    scale and bias copied into every group (row), its epsilon, axis, dtypes and train/
    eval state; the running statistics are dropped (LocalNorm recomputes statistics).
    A BatchNorm referenced from several places (shared) becomes one LocalNorm, shared
    the same way. A BatchNorm's ``axis_name`` (statistics averaged across devices) is
    not carried over: LocalNorm's ``axis_name`` means the opposite (groups kept per
    device).

    Parameters
    ----------
    model : nnx.Module
        The model, changed in place; an ``nnx.BatchNorm`` itself is converted too.
    num_groups : int, optional
        K, the number of groups along the batch axis of every new layer; default 4
        (with ``ghost=True``, give this or ``virtual_batch_size``).
    partition : str or None, default None
        "contiguous" or "strided"; None means "contiguous", or "strided" with ``ghost=True`` (the Ghost BatchNorm
        presets', tf-keras's virtual batches).
        How the new layers split the batch into groups.
    ghost : bool, default False
        Convert into :class:`GhostBatchNorm` instead: the BatchNorm's scale, bias and
        running mean/var become the one (1, C) row shared by the groups along the batch
        axis, with its momentum, so that evaluation computes what the BatchNorm's
        ``use_running_average=True`` computes.
    virtual_batch_size : int, optional
        With ``ghost=True``: samples per group, their number counted per batch.

    Returns
    -------
    nnx.Module
        The model (or the new layer when ``model`` is a BatchNorm).
    """
    ghost, k, partition, vbs = _layer.convert_options(num_groups, partition, ghost,
                                                      virtual_batch_size)
    options = dict(ghost=ghost, virtual_batch_size=vbs)
    if not isinstance(model, nnx.Module):
        raise _flax_errors.not_nnx_module(model)
    if isinstance(model, nnx.BatchNorm):
        return _from_batchnorm(model, k, partition, **options)
    edges = [e for e in _edges(model) if isinstance(e[2], nnx.BatchNorm)]
    new: dict[int, LocalNorm] = {}
    for _, _, bn in edges:  # every layer built (and checked) before the model changes
        if id(bn) not in new:
            new[id(bn)] = _from_batchnorm(bn, k, partition, **options)
    for parent, key, bn in edges:
        _set_child(parent, key, new[id(bn)])
    return model
