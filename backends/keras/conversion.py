"""Turn a trained Keras BatchNormalization model into a LocalNorm model."""

from __future__ import annotations

import keras
import numpy as np

from localnorm import _errors, _spec

from .layers import GhostBatchNormalization, LocalNormalization

__all__ = ["convert_batchnorm"]


def _from_batchnorm(bn: keras.layers.BatchNormalization, num_groups: int | None,
                    partition: str, ghost: bool = False,
                    virtual_batch_size: int | None = None) -> LocalNormalization:
    config = bn.get_config()
    if ghost:
        cls, options = GhostBatchNormalization, dict(
            virtual_batch_size=virtual_batch_size, momentum=bn.momentum)
    else:
        cls, options = LocalNormalization, {}
    layer = cls(
        num_groups=num_groups,
        axis=bn.axis,
        epsilon=bn.epsilon,
        center=bn.center,
        scale=bn.scale,
        beta_initializer=config["beta_initializer"],
        gamma_initializer=config["gamma_initializer"],
        beta_regularizer=config["beta_regularizer"],
        gamma_regularizer=config["gamma_regularizer"],
        beta_constraint=config["beta_constraint"],
        gamma_constraint=config["gamma_constraint"],
        partition=partition,
        name=bn.name,
        dtype=bn.dtype_policy,
        trainable=bn.trainable,
        **options,
    )
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
        clone.set_weights(layer.get_weights())
    return clone


def _is_functional(model) -> bool:
    """A model built with the functional API. Keras exports no name for its Functional
    class, but every functional model is also a public ``keras.Function`` (the graph of
    operations it is built on); a subclassed model is not."""
    return isinstance(model, keras.Model) and isinstance(model, keras.Function)


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
        unknown ``partition``.
    """
    ghost = bool(ghost)
    if not ghost:
        if virtual_batch_size is not None:
            raise _errors.virtual_batch_needs_shared(virtual_batch_size)
        num_groups = 4 if num_groups is None else num_groups
    if partition is None:
        partition = "strided" if ghost else "contiguous"
    num_groups, virtual_batch_size = _spec.check_ghost_groups(
        num_groups, virtual_batch_size, shared_affine=ghost)
    partition = _spec.check_choice("partition", partition, _spec.PARTITIONS)
    options = dict(ghost=ghost, virtual_batch_size=virtual_batch_size)
    if isinstance(model, keras.layers.BatchNormalization):
        return _from_batchnorm(model, num_groups, partition, **options)
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise _errors.cannot_convert(type(model).__name__)

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return _from_batchnorm(layer, num_groups, partition, **options)
        if isinstance(layer, keras.Model) and not (
            isinstance(layer, keras.Sequential) or _is_functional(layer)
        ):
            raise _errors.cannot_convert(type(layer).__name__)
        return _copy(layer)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)
