"""Model-level functions for Keras models: the evaluation-mode switch, ``predict`` with the
paper's test-time protocols (both over :mod:`localnorm._model`), and ``convert_batchnorm``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import array_api_compat.numpy
import keras
import numpy as np

from localnorm import _layer, _model
from localnorm.protocols import Prediction

from . import _errors as _keras_errors
from ._layers import DIALECT, GhostBatchNormalization, LocalNormalization
from ._layers import note_models
from ._layers import _EVAL_FUNCTIONS, _reset_functions

__all__ = ["set_eval_mode", "eval_mode", "predict", "localnorm_layers", "convert_batchnorm"]


class _Keras(_model.Adapter):
    """Keras models for the shared model-level machinery (:mod:`localnorm._model`)."""

    layer_type = LocalNormalization
    dialect = DIALECT

    def modules(self, model):
        if not isinstance(model, keras.layers.Layer):
            return []
        found = list(model._flatten_layers(include_self=True, recursive=True))
        # Keras's layer tracking names, for each model here, the LocalNorm layers it
        # contains: a later change made through a layer itself (layer.set_mode,
        # layer.partition) then reaches these models' compiled functions too.
        for sub in found:
            if isinstance(sub, keras.Model):
                for layer in sub._flatten_layers(include_self=False, recursive=True):
                    if isinstance(layer, LocalNormalization):
                        note_models(layer, [sub])
        return found

    def setting(self, layer):
        return layer._eval

    def check(self, layer, mode, group):
        return layer._checked_setting(mode, group)

    def assign(self, layer, setting, temporary=False):
        # predict's own passes are undone before a compiled function can run: they keep
        # the user's compiled predict/evaluate functions.
        layer._set_eval(setting, invalidate=not temporary)

    def changed(self, model):
        # Each layer drops the compiled functions of the models that traced it
        # (LocalNormalization._set_eval); this also covers the model passed and its
        # sub-models, whatever traced them.
        for layer in self.modules(model):
            if isinstance(layer, keras.Model):
                _reset_functions(layer, _EVAL_FUNCTIONS)

    @contextlib.contextmanager
    def evaluating(self, model, layers):
        """On PyTorch, no autograd graph for predict's passes (as ``model.predict``)."""
        if keras.backend.backend() != "torch":
            yield
            return
        import torch

        with torch.no_grad():
            yield

    # The protocols run on NumPy (TensorFlow tensors have no array-API namespace); the
    # result is converted to the backend's tensors at the end.
    def asarray(self, x):
        return x if isinstance(x, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(x))

    def count_non_finite(self, x):
        return _layer.count_non_finite(array_api_compat.numpy, x)

    def group_array(self, groups, x):
        return groups

    def call(self, model, x):
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))

    def result(self, prediction):
        return Prediction(*(None if a is None else keras.ops.convert_to_tensor(a)
                            for a in prediction))


_KERAS = _Keras()


def localnorm_layers(model: keras.layers.Layer) -> list[LocalNormalization]:
    """Every :class:`LocalNormalization` in ``model`` (itself included), nested models and
    layers included, in model order."""
    return _model.localnorm_layers(_KERAS, model)


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
    mode : str
        One of ``"batch"``, ``"single"``, ``"set"``. ``"batch"``: per-group statistics along the batch axis on the test batch (the
        paper's BATCH). ``"single"``: each sample its own statistics. ``"set"``: one set
        of statistics over the whole batch. See :func:`localnorm.local_norm`.
    group : int or sequence of int, default 0
        Whose gamma/beta ``"single"``/``"set"`` mode use: an int in [0, K) (K groups along
        the batch axis), or in ``"single"`` mode one group per sample.

    Returns
    -------
    keras.Model or keras.layers.Layer
        The model, for chaining.

    Raises
    ------
    ValueError
        For an unknown mode, a group out of range, or a model without LocalNorm layers.
    """
    return _model.set_eval_mode(_KERAS, model, mode, group)


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
    with _model.eval_mode(_KERAS, model, mode, group) as m:
        yield m


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
    :mod:`localnorm.protocols` and run by the model-level machinery every adapter
    shares, so they give the same results as ``localnorm.torch.predict`` for the same
    weights. The model's LocalNorm layers are switched to the needed modes for the call
    only (as :func:`eval_mode` does); the passes run eagerly
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
        per image; None draws one uniformly per image from ``generator``. The other
        protocols use every group and refuse one.
    generator : int, numpy.random.Generator or None
        Seed or NumPy generator for the random groups of SINGLE with ``group=None`` (one
        scheme in every adapter: the same seed gives the same groups in PyTorch, Keras
        and Flax).
    batch_size : int, optional
        BATCH: the evaluation batch, at least K (default all of x). Other protocols: how
        many rows one pass holds (default ``len(x)``; SINGLE-VOTING tiles each image K
        times, see :func:`localnorm.protocols.run_protocol`).
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
        ``(scores, labels, agreement)`` as tensors of the Keras backend (as
        ``keras.ops`` returns them; ``keras.ops.convert_to_numpy`` gives NumPy), the
        same convention as the PyTorch and Flax adapters' ``predict``.

    Raises
    ------
    LocalNormError
        For an unknown protocol, groups that do not fit, NaN/Inf in ``x`` (with
        ``check_finite``), or LocalNorm layers that disagree on ``num_groups`` or
        ``partition``.
    """
    return _model.predict(
        _KERAS, model, x, protocol=protocol, vote=vote, group=group, generator=generator,
        batch_size=batch_size, set_size=set_size, from_logits=from_logits,
        check_finite=check_finite,
    )


# -- BatchNorm conversion -------------------------------------------------------------

#: The options of a BatchNormalization that the layer replacing it keeps, by their names.
_KEPT_OPTIONS = ("axis", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
                 "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")


def _from_batchnorm(bn: keras.layers.BatchNormalization, num_groups: int | None,
                    partition: str, ghost: bool = False,
                    virtual_batch_size: int | None = None) -> LocalNormalization:
    config = bn.get_config()
    cls, options = LocalNormalization, {name: config[name] for name in _KEPT_OPTIONS}
    if ghost:
        cls = GhostBatchNormalization
        options.update(virtual_batch_size=virtual_batch_size, momentum=bn.momentum)
    layer = cls(num_groups=num_groups, partition=partition, name=bn.name, dtype=bn.dtype_policy,
                trainable=bn.trainable, **options)
    build_config = bn.get_build_config()
    if bn.built and build_config is not None:
        layer.build_from_config(build_config)
        pairs = [(layer.gamma, bn.gamma), (layer.beta, bn.beta)]
        if ghost:
            pairs += [(layer.moving_mean, bn.moving_mean),
                      (layer.moving_variance, bn.moving_variance)]
        for ours, theirs in pairs:
            if ours is not None:
                row = keras.ops.convert_to_numpy(theirs)
                ours.assign(np.tile(row[None, :], (int(ours.shape[0]), 1)))
    return layer


def _copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new layer with ``layer``'s config and, when it is built, its weights."""
    clone = layer.__class__.from_config(layer.get_config())
    build_config = layer.get_build_config()
    if layer.built and layer.weights and build_config is not None:
        clone.build_from_config(build_config)
        if len(clone.weights) != len(layer.weights):
            raise _keras_errors.cannot_copy(layer.name, type(layer).__name__,
                                            len(layer.weights), len(clone.weights))
        clone.set_weights(layer.get_weights())
    return clone


def _check_convertible(model) -> None:
    """Refuse a model whose layer graph is not known: a subclassed one. Sequential and
    functional models are rebuilt; Keras exports no name for its Functional class, but
    every functional model is also a public ``keras.Function`` (the graph of operations
    it is built on)."""
    functional = isinstance(model, keras.Model) and isinstance(model, keras.Function)
    if not (functional or isinstance(model, keras.Sequential)):
        raise _keras_errors.cannot_convert(type(model).__name__)


def convert_batchnorm(model, num_groups: int | None = None, partition: str | None = None, *,
                      ghost: bool = False, virtual_batch_size: int | None = None):
    """A new model with every ``BatchNormalization`` replaced by a :class:`LocalNormalization`
    (or, with ``ghost=True``, by a :class:`GhostBatchNormalization`).

    Each BatchNormalization's gamma and beta are copied into every one of the
    ``num_groups`` groups along the batch axis (so ``gamma`` of shape (C,) becomes
    ``(num_groups, C)``), and its axis, epsilon, center/scale, initializers,
    regularizers, constraints, name and dtype policy are kept. Every other layer is
    rebuilt from its config with its weights copied, so the original model is left
    untouched and shares no weights with the result. The moving mean and variance are
    dropped: LocalNorm recomputes its statistics, also at test time. With
    ``num_groups=1`` the converted model equals the original called with
    ``training=True`` (batch statistics).

    With ``ghost=True`` each BatchNormalization becomes a
    :class:`GhostBatchNormalization` with its momentum, and its gamma, beta, moving mean
    and moving variance become the one (1, C) row shared by the groups along the batch
    axis: in inference the converted model computes what the original computes.

    Parameters
    ----------
    model : keras.Sequential, functional keras.Model, or keras.layers.BatchNormalization
        Nested Sequential/functional models are converted too. A single
        BatchNormalization layer gives a single LocalNormalization layer.
    num_groups : int, optional
        K, the number of groups along the batch axis; default 4 (with ``ghost=True``,
        give this or ``virtual_batch_size``).
    partition : str or None, default None
        "contiguous" or "strided"; None means "contiguous", or "strided" with ``ghost=True`` (the Ghost BatchNorm
        presets', tf-keras's virtual batches). How training batches are split
        into groups (see :class:`LocalNormalization`).
    ghost : bool, default False
        Convert into Ghost BatchNorm (one gamma/beta and moving statistics shared by the
        groups) instead.
    virtual_batch_size : int, optional
        With ``ghost=True``: samples per group, their number counted per batch (see
        :class:`GhostBatchNormalization`).

    Returns
    -------
    keras.Model or LocalNormalization
        The converted model (not compiled: compile it before ``fit``).

    Raises
    ------
    ValueError
        For a subclassed model (its layer graph is not known), a bad ``num_groups`` or an
        unknown ``partition``; for a BatchNormalization it cannot reach (inside a wrapper
        such as ``TimeDistributed`` or a custom layer), which would otherwise stay a
        BatchNormalization; for a custom layer that does not rebuild its weights from
        its config.
    """
    ghost, num_groups, partition, virtual_batch_size = _layer.convert_options(
        num_groups, partition, ghost, virtual_batch_size)

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return _from_batchnorm(layer, num_groups, partition, ghost, virtual_batch_size)
        if isinstance(layer, keras.Model):
            _check_convertible(layer)
        elif any(isinstance(sub, keras.layers.BatchNormalization)
                 for sub in layer._flatten_layers(include_self=False, recursive=True)):
            raise _keras_errors.batchnorm_out_of_reach(layer.name, type(layer).__name__)
        return _copy(layer)

    if isinstance(model, keras.layers.BatchNormalization):
        return clone(model)
    _check_convertible(model)
    return keras.models.clone_model(model, clone_function=clone, recursive=True)
