"""The Keras 3 LocalNorm layer."""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
from keras import constraints, initializers, ops, regularizers
from keras.src.backend import get_stateless_scope
from keras.src.backend.common import global_state

from localnorm import _errors, _layer, _model, _spec

from . import _errors as _keras_errors
from . import _functional as fn

__all__ = ["LocalNormalization", "GhostBatchNormalization"]

DIALECT = _keras_errors.KERAS

#: For each layer, the Keras models known to contain it, whose compiled step functions
#: (``predict_function``, ``test_function``, ``train_function``) may have traced it. A
#: layer's evaluation setting and partition are Python values baked into those traces, so
#: a change must drop them (see ``_invalidate_traces``). Weak on both sides: neither the
#: layer nor the models are kept alive by the registry.
_MODELS_OF: "weakref.WeakKeyDictionary[keras.layers.Layer, weakref.WeakSet]" = (
    weakref.WeakKeyDictionary())

_EVAL_FUNCTIONS = ("predict_function", "test_function")
_ALL_FUNCTIONS = _EVAL_FUNCTIONS + ("train_function",)


def _enclosing_models() -> list:
    """The ``keras.Model`` objects whose call or build is running now, outermost first,
    as Keras itself records them: every ``Layer.__call__`` and ``build`` opens a Keras name
    scope whose ``caller`` is that layer (``keras.src.backend.common.name_scope``).

    On the TensorFlow and PyTorch backends Keras's trainers call the model
    (``model(x)``), so while a compiled function traces the layer this names every model
    around it. On JAX the trainers call ``model.stateless_call``, which opens no scope:
    there a model is known once it is built around the layer, called, fitted or given to
    a function of :mod:`localnorm.keras` (``note_models``), and the traces of models
    not known are handled through JAX's caches (``_note_stateless_trace``).
    """
    stack = global_state.get_global_attribute("name_scope_stack") or ()
    return [scope.caller for scope in stack if isinstance(scope.caller, keras.Model)]


#: For each layer, the variables (as a frozenset of ids) of each model that traced it on
#: JAX without being known to hold it (see ``_note_stateless_trace``).
_UNKNOWN_TRACES: "weakref.WeakKeyDictionary[keras.layers.Layer, set]" = (
    weakref.WeakKeyDictionary())


def _model_variable_ids(model) -> frozenset:
    return frozenset(id(v) for v in model.trainable_variables + model.non_trainable_variables)


def _note_stateless_trace(layer: keras.layers.Layer) -> None:
    """On JAX, Keras's trainers trace a model through ``model.stateless_call``: inside a
    ``keras.StatelessScope`` that holds exactly that model's variables, and naming no
    model. Remember those variables unless a model known to hold the layer has them: a
    later change then clears JAX's caches of traced functions (see
    ``_invalidate_traces``)."""
    if keras.backend.backend() != "jax":
        return  # the other backends' trainers call the model, which names it
    scope = get_stateless_scope()
    ids = frozenset(scope.state_mapping) if scope is not None else frozenset()
    own = frozenset(id(w) for w in (layer.gamma, layer.beta) if w is not None)
    if not ids or not own <= ids:
        return  # not a model's stateless call (e.g. Keras's shape inference: no variables)
    if ids == own:
        return  # the layer's own stateless_call, compiled by hand (no Keras trainer)
    if any(_model_variable_ids(m) == ids for m in _MODELS_OF.get(layer, ())):
        return
    _UNKNOWN_TRACES.setdefault(layer, set()).add(ids)


def note_models(layer: keras.layers.Layer, models) -> None:
    """Record that ``models`` contain ``layer``: a later change of its setting drops their
    compiled functions."""
    models = [m for m in models if m is not layer]
    if models:
        _MODELS_OF.setdefault(layer, weakref.WeakSet()).update(models)


def _reset_functions(model: keras.layers.Layer, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


@keras.saving.register_keras_serializable(package="localnorm")
class LocalNormalization(keras.layers.Layer):
    """LocalNorm: BatchNorm with ``num_groups`` groups along the batch axis.

    The batch (axis 0) is split into K groups **along the batch axis** (not over channels,
    as ``GroupNormalization`` does); each group is normalized with its own statistics and
    scaled with its own row of ``gamma``/``beta``, both of shape ``(K, C)``. Statistics
    are always recomputed from the input, also at test time. The math is that of
    :func:`localnorm.local_norm`, specified in ``docs/spec.md``; this layer runs the
    core's one implementation of it on the TensorFlow, JAX and PyTorch backends.

    In training (``training=True``, as in ``model.fit``) the layer uses ``"batch"`` mode.
    Otherwise it uses its evaluation ``mode``, normally set model-wide with
    :func:`localnorm.keras.set_eval_mode` or :func:`localnorm.keras.eval_mode`; the
    setting is part of the layer's config, so it survives ``.keras`` saving.

    Parameters
    ----------
    num_groups : int or None, default 4
        K, the number of groups along the batch axis (None with ``virtual_batch_size``:
        counted per batch). A training batch needs at least K samples (2 per group for
        dense input); ``num_groups=1`` is BatchNormalization with batch statistics.
    axis : int, default -1
        The channel axis (any axis but the batch axis 0; 0 or a non-int is refused when
        the layer is made, an axis out of the input's range when it is built). Input of
        any rank >= 2 works; the batch size is never fixed.
    epsilon : float, default 1e-5
        Added to the variance. Keras's ``BatchNormalization`` defaults to 1e-3; 1e-5 is
        the LocalNorm paper's and the other adapters' value (see ``docs/spec.md``).
    center : bool, default True
        Whether to learn the per-group shift ``beta``.
    scale : bool, default True
        Whether to learn the per-group scale ``gamma``.
    beta_initializer : str or keras.initializers.Initializer, default "zeros"
        Initializer of ``beta``, of shape (K, C), as in ``keras.layers.BatchNormalization``.
    gamma_initializer : str or keras.initializers.Initializer, default "ones"
        Initializer of ``gamma``, of shape (K, C), as in ``keras.layers.BatchNormalization``.
    beta_regularizer : keras.regularizers.Regularizer, optional
        Regularizer of ``beta``; None (the default) adds none.
    gamma_regularizer : keras.regularizers.Regularizer, optional
        Regularizer of ``gamma``; None (the default) adds none.
    beta_constraint : keras.constraints.Constraint, optional
        Constraint applied to ``beta`` after each update; None (the default) adds none.
    gamma_constraint : keras.constraints.Constraint, optional
        Constraint applied to ``gamma`` after each update; None (the default) adds none.
    partition : {"contiguous", "strided"}, default "contiguous"
        How ``"batch"`` mode assigns samples to groups: consecutive runs (the paper's) or
        sample n to group n mod K. Ragged batches work under both.
    mode : {"batch", "single", "set", "running"}, default "batch"
        Evaluation mode (when not training): ``"batch"`` recomputes per-group statistics
        on the test batch (the paper's BATCH); ``"single"`` normalizes each sample with
        its own statistics; ``"set"`` uses one set of statistics for the whole batch;
        ``"running"`` (with ``track_running_stats=True``) the moving statistics.
    group : int or sequence of int, default 0
        Whose gamma/beta ``"single"`` and ``"set"`` mode use: an int in [0, K), or in
        ``"single"`` mode one group per sample.
    check_finite : bool, default True
        Refuse NaN/Inf input in evaluation (its statistics are recomputed from the test
        batch, so one bad value would change the outputs of every sample that shares
        them). Checked on eager calls only: training, ``model.predict`` (a traced
        function on TensorFlow and JAX), ``tf.function``, ``jax.jit`` and
        ``torch.compile`` are never checked (see the spec's "Non-finite input").
    shared_affine : bool, default False
        One ``gamma``/``beta`` row, of shape (1, C), shared by the K groups along the
        batch axis (Ghost BatchNorm; its gradient is the sum over the groups), instead of
        one row per group. See :class:`GhostBatchNormalization`.
    virtual_batch_size : int, optional
        With ``shared_affine=True`` and ``num_groups=None``: K is counted per batch as
        ``max(1, N // virtual_batch_size)`` (groups of at least ``virtual_batch_size``
        samples), so any batch size trains. The batch size must be known when the layer
        is traced (it is in ``model.fit``/``predict`` with a fixed ``batch_size``).
    track_running_stats : bool, default False
        With ``shared_affine=True``: keep ``moving_mean``/``moving_variance`` of shape
        (1, C) and allow the ``"running"`` evaluation mode. Each training step moves
        them toward the mean over the groups of their moments (biased variance, as
        Keras's ``BatchNormalization``). As there, a layer with ``trainable=False`` runs
        in its evaluation mode also when training, and leaves them as they are.
    momentum : float, default 0.99
        Keras's convention: ``moving = momentum * moving + (1 - momentum) * value``
        (PyTorch's ``momentum`` is ``1 -`` this one). Used with
        ``track_running_stats=True``.
    **kwargs
        Standard layer arguments (``name``, ``dtype``, ``trainable``...). Under a mixed
        precision policy (``"mixed_float16"``, ``"mixed_bfloat16"``) the weights stay in
        float32 and statistics are computed in float32.

    Shape
    -----
    - Input: any rank >= 2, the batch on axis 0 (split into the K groups; N >= K in
      training) and the channels C on ``axis``, e.g. (N, H, W, C).
    - Output: the same shape as the input.

    Notes
    -----
    The evaluation setting and ``partition`` are Python values, baked into the functions
    that Keras traces and compiles (``model.predict``, ``evaluate``, ``fit``). Changing
    them through this layer or :func:`localnorm.keras.set_eval_mode` drops the compiled
    functions of every model that traced the layer, so the next call re-traces (on JAX,
    for a model never given to :mod:`localnorm.keras` and compiled by Keras alone, by
    clearing JAX's caches of traced functions). Functions you compile yourself
    (``tf.function``, ``jax.jit``, ``model.export``) keep the setting they were traced
    with, unless that cache clearing makes a ``jax.jit`` re-trace.

    Input must be floating point (an integer input raises a ``TypeError``: cast it
    first). Where the batch size is unknown until run time (TensorFlow's retrace of
    ``model.fit``'s ragged last batch, exported models), a batch too small for the groups
    raises in a TensorFlow graph; under XLA (``jit_compile=True``) and in exported
    JAX/ONNX programs, which cannot raise, it has the spec's defined finite result: a
    group without samples reaches no output and its gamma/beta rows get a zero gradient,
    a group with one value per channel outputs its beta (``docs/spec.md``, "Batches
    smaller than K"; the Keras guide, "Compiling and exporting").

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
        check_finite: bool = True,
        shared_affine: bool = False,
        virtual_batch_size: int | None = None,
        track_running_stats: bool = False,
        momentum: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        options = _layer.layer_options(
            DIALECT, "LocalNormalization", num_groups=num_groups,
            virtual_batch_size=virtual_batch_size, shared_affine=shared_affine,
            track_running_stats=track_running_stats, momentum=momentum, eps=epsilon,
            partition=partition, check_finite=check_finite, center=center, scale=scale)
        self._partition = options.pop("partition")
        for name, value in options.items():
            setattr(self, name, value)
        self.axis = _spec.check_channel_axis(axis)  # its range: against the input in build()
        # The framework's own options after the shared ones (the order of every adapter).
        policy = self.dtype_policy
        if not all(keras.backend.is_float_dtype(d)
                   for d in (policy.compute_dtype, policy.variable_dtype)):
            raise _keras_errors.not_floating_policy(type(self).__name__, policy.name)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self._eval = self._checked_setting(mode, group)
        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None
        self._ndim = None
        self._axis = None

    # -- settings baked into traces ------------------------------------------------------

    @property
    def partition(self) -> str:
        """How ``"batch"`` mode assigns samples to the groups along the batch axis
        (``"contiguous"`` or ``"strided"``). Settable: a new value is validated and
        drops the compiled functions of the models that traced the layer."""
        return self._partition

    @partition.setter
    def partition(self, value: str) -> None:
        value = _spec.check_choice("partition", value, _spec.PARTITIONS)
        if value != self._partition:
            self._partition = value
            self._invalidate_traces(_ALL_FUNCTIONS)

    @property
    def mode(self) -> str:
        """Evaluation mode, used whenever the layer is called without ``training=True``."""
        return self._eval[0]

    @property
    def group(self) -> Any:
        """Group along the batch axis (int, or int64 array of one group per sample) whose
        gamma/beta ``"single"``/``"set"`` mode use."""
        return self._eval[1]

    def set_mode(self, mode: str, group: Any = 0) -> LocalNormalization:
        """Set this layer's evaluation mode and group along the batch axis (the name the
        PyTorch and Flax layers use too; ``set_eval_mode`` is its earlier name).

        The next ``model.predict``/``evaluate`` of any model that contains the layer
        re-traces with the new setting. :func:`localnorm.keras.set_eval_mode` sets every
        LocalNorm layer of a model at once.

        Parameters
        ----------
        mode : str, one of "batch", "single", "set", "running"
            See the class docstring.
        group : int or sequence of int, default 0
            Whose gamma/beta ``"single"``/``"set"`` mode use.

        Returns
        -------
        LocalNormalization
            The layer itself.
        """
        self._set_eval(self._checked_setting(mode, group))
        return self

    #: The earlier name of :meth:`set_mode`.
    set_eval_mode = set_mode

    def _checked_setting(self, mode: Any, group: Any) -> tuple[str, Any]:
        """A validated evaluation ``(mode, group)`` for this layer
        (:func:`localnorm._layer.eval_setting`), an array group as int64 NumPy (a backend
        tensor is read on the host first)."""
        if ops.is_tensor(group):
            group = ops.convert_to_numpy(group)
        return _layer.eval_setting(mode, group, self.num_groups, running=self.track_running_stats,
                                   ghost_only=type(self).__name__)

    def _set_eval(self, setting: tuple[str, Any], invalidate: bool = True) -> None:
        """Store a validated ``(mode, group)``; unless ``invalidate=False`` (only for a
        change undone before any compiled function runs), drop the compiled evaluation
        functions that baked the old one in."""
        old, self._eval = self._eval, setting
        # (a group is an int or an int64 array: array_equal compares both, shapes first)
        if invalidate and (old[0] != setting[0] or not np.array_equal(old[1], setting[1])):
            self._invalidate_traces(_EVAL_FUNCTIONS)

    def _invalidate_traces(self, names: tuple[str, ...]) -> None:
        # The models stay registered: a partition change later must still reach a
        # train_function that an evaluation change left in place.
        known = list(_MODELS_OF.get(self, ()))
        for model in known:
            _reset_functions(model, names)
        unknown = _UNKNOWN_TRACES.pop(self, set())
        unknown -= {_model_variable_ids(m) for m in known}  # models made known since
        if unknown:
            # A model not known to hold the layer traced it on JAX, where Keras's trainers
            # name no model (``_note_stateless_trace``). JAX's own API drops its traces:
            # every jitted function, that model's included, re-traces at its next call.
            import jax

            jax.clear_caches()

    # -- Keras layer API -----------------------------------------------------------------

    def build(self, input_shape):
        note_models(self, _enclosing_models())  # e.g. a Sequential built around the layer
        ndim = len(input_shape)
        if ndim < 2:
            raise _errors.bad_rank(ndim, ">= 2", where=type(self).__name__, dialect=DIALECT)
        self._axis = _spec.normalize_axis(self.axis, ndim)
        self._ndim = ndim
        channels = input_shape[self._axis]
        if channels is None:
            raise _keras_errors.unknown_channels(self.axis, tuple(input_shape))
        shape = (1 if self.shared_affine else self.num_groups, int(channels))
        if self.track_running_stats:
            self.moving_mean = self.add_weight(
                shape=shape, name="moving_mean", initializer="zeros", trainable=False,
                autocast=False)
            self.moving_variance = self.add_weight(
                shape=shape, name="moving_variance", initializer="ones", trainable=False,
                autocast=False)
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

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise _keras_errors.mask_unsupported(type(self).__name__)
        if self.track_running_stats and not self.trainable:
            # Frozen (``trainable=False``, e.g. a frozen base model): inference, as Keras's
            # BatchNormalization (and tf-keras's virtual batches): the moving statistics
            # are used and left as they are, also in model.fit.
            training = False
        mode, group = ("batch", 0) if training else self._eval
        # A size known only at run time (None in a TensorFlow graph, a symbol in a JAX or
        # PyTorch export) is None for the core's checks.
        shape = tuple(d if isinstance(d, int) else None for d in inputs.shape)
        k = _layer.call_groups(shape[0], mode, self.num_groups, self.virtual_batch_size)
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        _layer.check_call(
            shape, floating=keras.backend.is_float_dtype(dtype), dtype=dtype,
            rank_ok=self._ndim in (None, len(shape)), rank=str(self._ndim), axis=self._axis,
            num_features=self.num_features, mode=mode, num_groups=k, group=group,
            where=type(self).__name__, dialect=DIALECT, channels_name="layer.num_features")
        note_models(self, _enclosing_models())
        if fn.is_traced(inputs):
            _note_stateless_trace(self)
        elif not training and mode != _spec.RUNNING and self.check_finite \
                and _model.layer_checks_enabled():
            # ("running" mode uses stored statistics, as BatchNormalization: a NaN/Inf
            # reaches only its own sample's output, so it is not checked)
            with fn.eager():
                _layer.refuse_non_finite(fn.namespace(), inputs, DIALECT)
        if mode == _spec.RUNNING:
            return fn.running(inputs, self.gamma, self.beta, self.moving_mean,
                                self.moving_variance, axis=self._axis, eps=self.epsilon)
        if k is None and keras.backend.backend() == "jax" and fn.is_traced(inputs):
            k = fn.symbolic_groups(inputs, self.virtual_batch_size)  # jax.export's batch
        elif k is None:
            if keras.backend.backend() != "tensorflow":
                raise _keras_errors.virtual_batch_unknown_size(type(self).__name__,
                                                               self.virtual_batch_size)
            # K = max(1, N // virtual_batch_size) as a run-time count (the core's Groups
            # take it); every batch of at least one sample has K <= N
            k = ops.maximum(ops.shape(inputs)[0] // self.virtual_batch_size, 1)
            inputs = fn.run_time_batch_check(inputs, self._axis, mode, 1, DIALECT,
                                             counted_groups=k)
        elif None in shape:
            inputs = fn.run_time_batch_check(
                inputs, self._axis, mode, k, DIALECT,
                group_length=group.shape[0] if isinstance(group, np.ndarray) and group.ndim else None)
        if isinstance(group, np.ndarray):
            group = ops.convert_to_tensor(group, "int32")
        y, moments = fn.local_norm(
            inputs, self.gamma, self.beta, num_groups=k, axis=self._axis, mode=mode,
            group=group, partition=self.partition, eps=self.epsilon, moments=True,
        )
        if training and self.track_running_stats:
            self._update_running(inputs, k, moments)
        return y

    def _update_running(self, inputs, k: int, moments=None) -> None:
        """Move the moving mean and (biased, as Keras's BatchNormalization) variance
        toward the mean over the K groups along the batch axis of their moments:
        ``moving = momentum * moving + (1 - momentum) * mean_k(moment_k)``, tf-keras's
        rule for ``virtual_batch_size`` (:func:`localnorm._layer.running_update` with
        factor ``1 - momentum``). ``moments``: the forward's (K, C) group means and
        variances where it returned them (eager PyTorch), else computed here."""
        xp = fn.namespace()
        x = ops.stop_gradient(inputs)
        if moments is None:
            moments = _layer.group_moments(xp, x, self._axis, k, self.partition)
        else:
            moments = (*moments, _layer.group_counts(xp, x, self._axis, k, self.partition))
        moving = (self.moving_mean, self.moving_variance)
        new = _layer.running_update(xp, *map(ops.convert_to_tensor, moving), *moments,
                                    1.0 - self.momentum, unbiased=False)
        for weight, value in zip(moving, new):
            weight.assign(value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=None, mask=None):
        """The output spec of a symbolic call (the functional API, which never runs
        ``call``): refuses a non-floating ``keras.Input`` when the model is built rather
        than when data first arrives."""
        note_models(self, _enclosing_models())  # e.g. a Sequential built around a model
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise _errors.not_floating(dtype, DIALECT)
        return super().compute_output_spec(inputs, training=training, mask=mask)

    def load_own_variables(self, store):
        """Load gamma/beta from a checkpoint (``.keras``, ``.weights.h5``), refusing one
        saved with another number of groups along the batch axis or of channels with
        :func:`localnorm._errors.checkpoint_mismatch` (Keras's generic message would only
        say that the layer could not be loaded)."""
        own = list(self.weights)
        if len(store.keys()) == len(own):
            for i, w in enumerate(own):
                saved = tuple(store[str(i)].shape)
                if saved != tuple(w.shape):
                    raise _errors.checkpoint_mismatch(
                        w.name, saved, tuple(w.shape), shared=self.shared_affine,
                        num_groups=self.num_groups)
        super().load_own_variables(store)

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config` (``keras.models.load_model``). Keras turns a
        constructor's error into a TypeError after a dump of the whole model config, which
        would bury the message: the constructor's LocalNorm error is raised as it is."""
        try:
            return super().from_config(config)
        except TypeError as error:
            if isinstance(error.__context__, _errors.LocalNormError):
                raise error.__context__ from None
            raise

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
            check_finite=self.check_finite,
            shared_affine=self.shared_affine,
            virtual_batch_size=self.virtual_batch_size,
            track_running_stats=self.track_running_stats,
            momentum=self.momentum,
        )
        return config


@keras.saving.register_keras_serializable(package="localnorm")
class GhostBatchNormalization(LocalNormalization):
    """Ghost BatchNorm: BatchNormalization whose statistics are computed per virtual
    batch (group along the batch axis), with one ``gamma``/``beta`` shared by the groups.

    Hoffer, Hubara and Soudry (2017). Keras 3 removed tf-keras's
    ``BatchNormalization(virtual_batch_size=...)``; this is its replacement on the
    TensorFlow, JAX and PyTorch backends. In training (``model.fit``) each virtual batch
    (a group **along the batch axis**) is normalized with its own mean and variance; in
    inference (``model.predict``, ``training=False``) the moving statistics are used, as
    ``BatchNormalization``'s, so any batch size (also one sample) can be inferred. As
    ``BatchNormalization``'s, a frozen layer (``trainable=False``) runs in inference
    mode also in training: its moving statistics are used and not updated. A
    thin preset of :class:`LocalNormalization` (``shared_affine=True``,
    ``track_running_stats=True``, evaluation mode ``"running"``, Keras's
    ``BatchNormalization`` defaults ``momentum=0.99``, ``epsilon=1e-3``); the math is
    :func:`localnorm.local_norm` with gamma/beta of shape (1, C), see ``docs/spec.md``
    and the guide ``docs/guides/ghost-batchnorm.md``.

    Parameters
    ----------
    virtual_batch_size : int, optional
        Samples per virtual batch. A training batch of N samples is split into
        ``K = max(1, N // virtual_batch_size)`` groups (each of between
        ``virtual_batch_size`` and ``2 * virtual_batch_size - 1`` samples): a multiple of
        it gives groups of exactly ``virtual_batch_size`` samples, as tf-keras, and any
        other batch size trains too. Give this or ``num_groups``.
    num_groups : int, optional
        A fixed number K of groups along the batch axis instead.
    axis : int, default -1
        The channel axis.
    momentum : float, default 0.99
        ``moving = momentum * moving + (1 - momentum) * mean over the groups of their
        moments`` (tf-keras's rule for virtual batches; biased variance, as Keras).
    epsilon : float, default 1e-3
        Added to the variance (Keras's ``BatchNormalization`` default).
    center : bool, default True
        Whether to learn ``beta``, of shape (1, C).
    scale : bool, default True
        Whether to learn ``gamma``, of shape (1, C).
    track_running_stats : bool, default True
        Keep ``moving_mean``/``moving_variance`` (1, C) and infer with them. False:
        inference recomputes statistics on the test batch (``"batch"`` mode).
    partition : {"strided", "contiguous"}, default "strided"
        Which samples form a virtual batch: sample n is in group ``n % K``, what
        tf-keras computes (its reshape to ``(virtual_batch_size, N / virtual_batch_size,
        ...)`` takes the moments over the first axis), or consecutive runs.
    mode : str, optional
        Evaluation mode; default ``"running"`` (``"batch"`` without running statistics).
    **kwargs
        The other arguments of :class:`LocalNormalization` (initializers, regularizers,
        constraints, ``group``, ``check_finite``) and of ``keras.layers.Layer``.

    Examples
    --------
    >>> import numpy as np
    >>> from localnorm.keras import GhostBatchNormalization
    >>> layer = GhostBatchNormalization(virtual_batch_size=4)
    >>> x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    >>> y = layer(x, training=True)        # 2 virtual batches of 4 samples
    >>> tuple(layer.gamma.shape), tuple(layer.moving_mean.shape)
    ((1, 3), (1, 3))
    >>> tuple(layer(x[:1]).shape)          # inference: any batch size
    (1, 3)
    """

    def __init__(
        self,
        virtual_batch_size: int | None = None,
        num_groups: int | None = None,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        track_running_stats: bool = True,
        partition: str = "strided",
        mode: str | None = None,
        **kwargs,
    ):
        kwargs.pop("shared_affine", None)  # a config from get_config holds it (True)
        if mode is None:
            mode = _spec.RUNNING if track_running_stats else "batch"
        super().__init__(
            num_groups=num_groups, axis=axis, epsilon=epsilon, center=center, scale=scale,
            partition=partition, mode=mode, shared_affine=True,
            virtual_batch_size=virtual_batch_size, track_running_stats=track_running_stats,
            momentum=momentum, **kwargs,
        )
