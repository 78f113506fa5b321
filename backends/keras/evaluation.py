"""Model-wide evaluation settings and the paper's test-time protocols for Keras models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from localnorm import _errors, _spec
from localnorm.protocols import Prediction, draw_groups, run_protocol

from .layers import DIALECT, SKIP_FINITE_CHECK, LocalNormalization, check_eval_setting
from .layers import _EVAL_FUNCTIONS, _reset_functions

__all__ = ["set_eval_mode", "eval_mode", "predict", "localnorm_layers"]


def localnorm_layers(model: keras.layers.Layer) -> list[LocalNormalization]:
    """Every :class:`LocalNormalization` in ``model`` (itself included), nested models and
    layers included, in model order."""
    return [
        layer for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, LocalNormalization)
    ]


def _reset_compiled(model: keras.layers.Layer) -> None:
    # Each layer drops the compiled functions of the models that traced it
    # (LocalNormalization._set_eval); this also covers the model passed and its
    # sub-models, whatever traced them.
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.Model):
            _reset_functions(layer, _EVAL_FUNCTIONS)


def _layers_or_raise(model, where: str) -> list[LocalNormalization]:
    layers = localnorm_layers(model)
    if not layers:
        raise _errors.no_localnorm_layers(where)
    return layers


def set_eval_mode(model: keras.layers.Layer, mode: str, group: Any = 0) -> keras.layers.Layer:
    """Set the evaluation mode of every LocalNorm layer in ``model``.

    Training (``model.fit``, ``training=True``) always uses ``"batch"`` mode; this sets
    what the layers do otherwise (``model(x)``, ``model.predict``, ``model.evaluate``).
    The setting is stored in each layer's config, so it survives ``.keras`` saving.
    Keras bakes it into the functions it compiles for ``predict``/``evaluate``: those of
    every model that traced one of the layers (an outer model too) are dropped, so the
    next call re-traces with the new setting. Functions compiled by hand
    (``tf.function``, ``jax.jit``, ``model.export``) keep the setting they were traced
    with.

    Parameters
    ----------
    model : keras.Model or keras.layers.Layer
        A model (nested models included) or a single layer.
    mode : str, one of "batch", "single", "set"
        ``"batch"``: per-group statistics along the batch axis on the test batch (the
        paper's BATCH). ``"single"``: each sample its own statistics. ``"set"``: one set
        of statistics over the whole batch. See :func:`localnorm.local_norm`.
    group : int or sequence of int, default 0
        Whose gamma/beta ``"single"``/``"set"`` mode use: an int in [0, K) (K groups along
        the batch axis), or in ``"single"`` mode one group per sample.

    Returns
    -------
    The model, for chaining.

    Raises
    ------
    ValueError
        For an unknown mode, a group out of range, or a model without LocalNorm layers.
    """
    layers = _layers_or_raise(model, "set_eval_mode")
    settings = [check_eval_setting(mode, group, layer.num_groups) for layer in layers]
    for layer, setting in zip(layers, settings):
        layer._set_eval(setting)
    _reset_compiled(model)
    return model


@contextlib.contextmanager
def eval_mode(model: keras.layers.Layer, mode: str, group: Any = 0) -> Iterator[keras.layers.Layer]:
    """Context manager: :func:`set_eval_mode` inside the block, the previous settings of
    every layer restored after it (also on error).

    Examples
    --------
    >>> import keras, numpy as np
    >>> from localnorm.keras import LocalNormalization, eval_mode
    >>> model = keras.Sequential([keras.Input((4,)), LocalNormalization(num_groups=2)])
    >>> with eval_mode(model, "set", group=1):
    ...     y = model(np.ones((3, 4)) + np.arange(3)[:, None])
    >>> model.layers[0].mode
    'batch'
    """
    layers = _layers_or_raise(model, "eval_mode")
    saved = [layer._eval for layer in layers]
    set_eval_mode(model, mode, group)
    try:
        yield model
    finally:
        for layer, setting in zip(layers, saved):
            layer._set_eval(setting)
        _reset_compiled(model)


@contextlib.contextmanager
def _eager_eval_mode(layers: list[LocalNormalization], mode: str, group: Any) -> Iterator[None]:
    """:func:`eval_mode` for :func:`predict`'s own eager passes: the setting is undone
    before any compiled function can run, so none is dropped (a later
    ``model.predict`` keeps its trace)."""
    settings = [check_eval_setting(mode, group, layer.num_groups) for layer in layers]
    saved = [layer._eval for layer in layers]
    for layer, setting in zip(layers, settings):
        layer._set_eval(setting, invalidate=False)
    try:
        yield
    finally:
        for layer, setting in zip(layers, saved):
            layer._set_eval(setting, invalidate=False)


def _shared(layers: list[LocalNormalization], name: str) -> Any:
    values = {getattr(layer, name) for layer in layers}
    if len(values) != 1:
        raise _errors.inconsistent_layers(name, values)
    return values.pop()


def _to_numpy(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(a))


def predict(
    model: keras.Model,
    x: Any,
    protocol: str = "batch",
    vote: str = "hard",
    group: Any = None,
    generator: Any = None,
    batch_size: int | None = None,
    set_size: int | None = None,
    from_logits: bool = True,
    check_finite: bool = True,
) -> Prediction:
    """Evaluate ``model`` on ``x`` under one of the paper's test-time protocols.

    The protocols (BATCH, SINGLE, SINGLE-VOTING, VOTING) are defined once in
    :mod:`localnorm.protocols` and give the same results as ``localnorm.torch.predict``
    for the same weights. The model's LocalNorm layers are switched to the needed modes
    for the call only (as :func:`eval_mode` does); the passes run eagerly
    (``model(x, training=False)``), so compiled ``model.predict`` functions are left
    untouched.

    Parameters
    ----------
    model : keras.Model
        A model with LocalNorm layers, all with the same ``num_groups`` and ``partition``.
    x : array
        Test inputs, batch on axis 0 (NumPy or a backend tensor).
    protocol : {"batch", "single", "single-voting", "voting"}, default "batch"
        See :func:`localnorm.protocols.run_protocol`.
    vote : {"hard", "soft"}, default "hard"
        How the voting protocols combine the K groups (:func:`localnorm.vote`).
    group : int, sequence of int or None
        SINGLE: the group along the batch axis whose gamma/beta every image uses, or one
        per image; None draws one uniformly per image from ``generator``.
    generator : int, numpy.random.Generator or None
        Seed or NumPy generator for the random groups of SINGLE with ``group=None``.
    batch_size : int, optional
        BATCH: the evaluation batch (default all of x). Other protocols: how many rows
        one pass holds (default ``len(x)``; SINGLE-VOTING tiles each image K times, see
        :func:`localnorm.protocols.run_protocol`).
    set_size : int, optional
        VOTING: images per set, normally the training group size (batch size / K).
    from_logits : bool, default True
        Whether the model outputs logits (set False for a softmax output); matters for
        soft voting and for hard voting's tie-break.
    check_finite : bool, default True
        Refuse an ``x`` holding NaN/Inf, checked once on the whole input before any pass
        (the layers' own per-call checks are skipped during the passes).

    Returns
    -------
    localnorm.Prediction
        ``(scores, labels, agreement)`` as NumPy arrays.

    Raises
    ------
    LocalNormError
        For an unknown protocol, groups that do not fit, NaN/Inf in ``x`` (with
        ``check_finite``), or LocalNorm layers that disagree on ``num_groups`` or
        ``partition``.
    """
    layers = _layers_or_raise(model, "predict")
    k = _shared(layers, "num_groups")
    partition = _shared(layers, "partition")
    _spec.check_choice("protocol", protocol, _spec.PROTOCOLS)
    x = _to_numpy(x)
    if check_finite and (np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16"):
        # (An integer x, e.g. token ids for an Embedding, has no NaN to look for.)
        finite = np.isfinite(x)
        if not finite.all():
            raise _errors.not_finite("x", int(finite.size - finite.sum()), finite.size,
                                     dialect=DIALECT)
    if protocol == "single":
        if group is None:
            group = draw_groups(x.shape[0], k, generator)
        elif not isinstance(group, (int, np.integer)):
            group = _to_numpy(np.asarray(group) if isinstance(group, (list, tuple)) else group)
            check_eval_setting("single", group, k)
            if len(group) != x.shape[0]:
                raise _errors.group_array_mismatch(len(group), x.shape[0])

    def forward(xb: np.ndarray, mode: str, g: Any) -> np.ndarray:
        token = SKIP_FINITE_CHECK.set(True)
        try:
            with _eager_eval_mode(layers, mode, g):
                return _to_numpy(model(xb, training=False))
        finally:
            SKIP_FINITE_CHECK.reset(token)

    return run_protocol(
        forward, x, protocol=protocol, num_groups=k, batch_size=batch_size,
        set_size=set_size, vote=vote, group=group, partition=partition,
        from_logits=from_logits,
    )
