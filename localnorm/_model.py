"""The model-level machinery of every adapter, written once: evaluation-mode switches,
random group draws, the per-layer finite-check switch, and ``predict`` with the paper's
test-time protocols.

Each adapter describes its framework in one small :class:`Adapter` subclass (how to find
its LocalNorm layers in a model, read and set a layer's evaluation setting, make an array,
call the model in evaluation) and its public ``set_eval_mode``, ``eval_mode`` and
``predict`` call the functions here, so the three adapters cannot drift apart. Imports no
framework.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _errors, _spec
from .protocols import Prediction, draw_groups, run_protocol

#: True while :func:`predict` runs its passes: the input was checked once up front, so the
#: layers skip their own per-call NaN/Inf checks. Every adapter's layers read it through
#: :func:`layer_checks_enabled`.
_SKIP_LAYER_CHECKS = contextvars.ContextVar("localnorm_skip_layer_checks", default=False)


def layer_checks_enabled() -> bool:
    """Whether an evaluating layer should check its input for NaN/Inf now (False inside
    :func:`predict`, which checks the whole input once)."""
    return not _SKIP_LAYER_CHECKS.get()


@contextlib.contextmanager
def skip_layer_checks() -> Iterator[None]:
    """Switch the layers' per-call NaN/Inf checks off for the block."""
    token = _SKIP_LAYER_CHECKS.set(True)
    try:
        yield
    finally:
        _SKIP_LAYER_CHECKS.reset(token)


class Adapter:
    """What the model-level machinery needs from a framework. Subclasses override every
    method that raises NotImplementedError; the others have defaults."""

    #: The layer class (and its subclasses) that :func:`localnorm_layers` collects.
    layer_type: type = object

    def modules(self, model: Any) -> list:
        """Every module/layer of ``model``, itself included, in model order."""
        raise NotImplementedError

    def setting(self, layer: Any) -> Any:
        """A layer's evaluation setting, opaque, for :meth:`assign` to restore."""
        raise NotImplementedError

    def check(self, layer: Any, mode: Any, group: Any) -> Any:
        """A validated setting of ``mode`` and ``group`` for ``layer`` (raises the
        project's error for a bad one)."""
        raise NotImplementedError

    def assign(self, layer: Any, setting: Any, temporary: bool = False) -> None:
        """Give ``layer`` a setting from :meth:`check` or :meth:`setting`; ``temporary``
        for :func:`predict`'s own passes, undone before any compiled function of the
        user's can run."""
        raise NotImplementedError

    def changed(self, model: Any) -> None:
        """Called after the settings of ``model``'s layers changed (Keras drops the
        functions it compiled with the old ones)."""

    @contextlib.contextmanager
    def evaluating(self, model: Any, layers: list) -> Iterator[None]:
        """The model in evaluation for :func:`predict`'s passes; restored afterwards."""
        yield

    def asarray(self, x: Any) -> Any:
        """``x`` as the framework's array (what ``predict`` computes on and returns)."""
        raise NotImplementedError

    def count_non_finite(self, x: Any) -> int:
        """How many NaN/Inf values ``x`` holds (0 for integer input)."""
        raise NotImplementedError

    def group_array(self, groups: np.ndarray, x: Any) -> Any:
        """An int64 NumPy array of per-sample groups as the framework's array, on x's
        device."""
        raise NotImplementedError

    def seed(self, generator: Any) -> Any:
        """A framework's own generator (a ``torch.Generator``, a JAX key) as a NumPy seed,
        so that every adapter draws random groups with one scheme; anything else as it
        is (None, an int, a NumPy Generator)."""
        return generator

    def call(self, model: Any, x: Any) -> Any:
        """One evaluation pass of ``model`` on ``x`` (its layers already set)."""
        raise NotImplementedError

    def result(self, prediction: Prediction) -> Prediction:
        """:func:`predict`'s result in the framework's array type (by default, as the
        protocols computed it, on :meth:`asarray`'s arrays)."""
        return prediction

    dialect: _errors.Dialect = _errors.CORE


def localnorm_layers(adapter: Adapter, model: Any) -> list:
    """Every LocalNorm layer of ``model`` (itself included), in model order."""
    return [m for m in adapter.modules(model) if isinstance(m, adapter.layer_type)]


def _layers_or_raise(adapter: Adapter, model: Any, where: str) -> list:
    layers = localnorm_layers(adapter, model)
    if not layers:
        raise _errors.no_localnorm_layers(f"{where}({type(model).__name__})")
    return layers


def shared_attribute(layers: list, name: str) -> Any:
    """The value of ``name`` that every layer holds (``num_groups``, ``partition``)."""
    values = {getattr(layer, name) for layer in layers}
    if len(values) != 1:
        raise _errors.inconsistent_layers(name, values)
    return values.pop()


def set_eval_mode(adapter: Adapter, model: Any, mode: Any, group: Any = 0) -> Any:
    """Validate ``mode``/``group`` for every LocalNorm layer of ``model``, then set them
    all (no layer changes when one is refused). Returns ``model``."""
    layers = _layers_or_raise(adapter, model, "set_eval_mode")
    settings = [adapter.check(layer, mode, group) for layer in layers]
    for layer, setting in zip(layers, settings):
        adapter.assign(layer, setting)
    adapter.changed(model)
    return model


@contextlib.contextmanager
def eval_mode(adapter: Adapter, model: Any, mode: Any, group: Any = 0) -> Iterator[Any]:
    """:func:`set_eval_mode` for a ``with`` block; every layer's previous setting is
    restored after it (also on error)."""
    layers = _layers_or_raise(adapter, model, "eval_mode")
    saved = [adapter.setting(layer) for layer in layers]
    try:
        yield set_eval_mode(adapter, model, mode, group)
    finally:
        for layer, setting in zip(layers, saved):
            adapter.assign(layer, setting)
        adapter.changed(model)


def random_groups(adapter: Adapter, generator: Any, n: int, num_groups: int) -> np.ndarray:
    """One group along the batch axis per sample, uniformly at random, by the one scheme
    of :func:`localnorm.protocols.draw_groups` (a NumPy Generator): the same seed gives
    the same groups in every adapter."""
    return draw_groups(n, num_groups, adapter.seed(generator))


def _check_single_group(group: Any, n: int, k: int) -> Any:
    """The SINGLE protocol's group: an int in [0, K), or a per-sample integer array (as
    int64 NumPy) of length n; None (random groups) is handled before."""
    arr = np.asarray(group)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or arr.ndim > 1:
        raise _errors.bad_group(group, k, allow_none=True)
    if arr.ndim == 1 and arr.shape[0] != n:
        raise _errors.group_array_mismatch(arr.shape[0], n)
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise _errors.bad_group(group, k, allow_none=True)
    return int(arr) if arr.ndim == 0 else arr.astype(np.int64)


def _to_numpy(group: Any) -> Any:
    """A framework's array as NumPy (torch tensors, JAX and TF arrays all convert)."""
    if isinstance(group, (int, np.integer, np.ndarray, list, tuple)) or group is None:
        return group
    detach = getattr(group, "detach", None)  # torch: leave autograd and the device
    if detach is not None:
        return group.detach().cpu().numpy()
    return np.asarray(group)


def predict(
    adapter: Adapter,
    model: Any,
    x: Any,
    *,
    protocol: str = "batch",
    vote: str = "hard",
    group: Any = None,
    generator: Any = None,
    batch_size: int | None = None,
    set_size: int | None = None,
    from_logits: bool = True,
    check_finite: bool = True,
) -> Prediction:
    """Classify ``x`` with ``model`` under one of the paper's test-time protocols (the
    implementation of every adapter's ``predict``; see :mod:`localnorm.protocols`).

    The model is in evaluation for the call only (the adapter's :meth:`Adapter.evaluating`),
    its LocalNorm layers are set for each pass and restored afterwards, ``x`` is checked
    for NaN/Inf once (the layers' own checks are skipped meanwhile), and the result is in
    the framework's array type.
    """
    _spec.check_choice("protocol", protocol, _spec.PROTOCOLS)
    _spec.check_choice("vote", vote, _spec.VOTE_METHODS)
    from_logits = _spec.check_flag("from_logits", from_logits)
    check_finite = _spec.check_flag("check_finite", check_finite)
    if protocol != "single" and group is not None:
        raise _errors.group_not_used(protocol, group)
    layers = _layers_or_raise(adapter, model, "predict")
    k = shared_attribute(layers, "num_groups")
    if k is None:
        # Layers that count K per batch from a virtual batch size share one scale/shift
        # row: for the protocols every group is that row ("batch" mode still forms the
        # virtual batches of each pass).
        k = 1
    partition = shared_attribute(layers, "partition")
    given, x = x, adapter.asarray(x)
    if not getattr(x, "ndim", 0):  # None, a dict, a dataset object: a 0-d array at best
        raise _errors.not_an_array("x", given)
    n = x.shape[0]
    if check_finite:
        bad = adapter.count_non_finite(x)
        if bad:
            size = int(np.prod(x.shape))
            raise _errors.not_finite("x", bad, size, dialect=adapter.dialect)
    if protocol == "single":
        if group is None:
            group = random_groups(adapter, generator, n, k)
        else:
            group = _check_single_group(_to_numpy(group), n, k)

    saved = [adapter.setting(layer) for layer in layers]

    def forward(xs: Any, mode: str, g: Any) -> Any:
        if isinstance(g, np.ndarray):
            g = adapter.group_array(g, xs)
        settings = [adapter.check(layer, mode, g) for layer in layers]
        for layer, setting in zip(layers, settings):
            adapter.assign(layer, setting, temporary=True)
        return adapter.call(model, xs)

    try:
        with adapter.evaluating(model, layers), skip_layer_checks():
            return adapter.result(run_protocol(
                forward, x, protocol=protocol, num_groups=k, batch_size=batch_size,
                set_size=set_size, vote=vote, group=group, partition=partition,
                from_logits=from_logits,
            ))
    finally:
        for layer, setting in zip(layers, saved):
            adapter.assign(layer, setting, temporary=True)
