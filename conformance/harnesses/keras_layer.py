"""Subject "keras": :class:`localnorm.keras.LocalNormalization` on this process's Keras
backend (``KERAS_BACKEND`` = tensorflow, jax or torch; Keras fixes it per process, so the
test command runs this subject once per backend, each in its own process).

Each case builds (or reuses) the layer with the case's K, C, axis, eps and partition (C
taken from gamma, so a channel mismatch reaches the layer's own check) and runs it with
the case's gamma/beta through ``Layer.stateless_call``: ``"batch"`` mode as in training
(``training=True``), ``"single"``/``"set"`` in evaluation after ``set_eval_mode``. Gradients with respect to the input, gamma and beta
come from the backend's own autodiff through ``Layer.stateless_call``:
``tf.GradientTape``, ``jax.vjp`` or ``torch.autograd``. On JAX each call runs as one
jitted function (cached per layer and setting), as JAX programs normally do.

On TensorFlow one case in eight runs through a ``tf.function`` whose input signature
leaves the batch and spatial sizes unknown (``None``), as ``model.fit`` traces a ragged
last batch: group indices, counts and the batch checks are then computed at run time.
The others run eagerly (every size known: the layer's static path and trace-time
checks). Which cases take the graph depends only on the bytes of ``x`` (a hash), so a
saved reproduction takes the same path. (One in eight, not all: every other graph case
needs its own trace and graph optimization, about ten times the cost of an eager case;
all of them made the TensorFlow run 2.5 times as long, one in eight adds about a fifth.) A run-time check that refuses the input raises TensorFlow's
``InvalidArgumentError`` with localnorm's message; the harness re-raises it as the
``ValueError`` that error parity expects.

Dtypes: float64 and float32 layers, and float16/bfloat16 input under the
``mixed_float16``/``mixed_bfloat16`` policies (float32 weights and statistics). On the
JAX backend float64 cases run under ``jax.enable_x64(True)``, scoped to the call.
"""

from __future__ import annotations

import contextlib
import importlib.util
import zlib

import numpy as np

from ..harness import Case, Harness

_POLICY = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

#: The battery compiles hundreds of small one-off programs on JAX: skip LLVM's expensive
#: optimizations (about a quarter of the compile time; HLO passes and numerics unchanged).
_FAST_COMPILE = dict(compiler_options={"xla_backend_optimization_level": 0,
                                       "xla_llvm_disable_expensive_passes": True})


def _backend() -> str:
    import keras

    return keras.backend.backend()


class KerasHarness(Harness):
    name = "keras"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    grads = True
    group_arrays = True
    modes = ("batch", "single", "set")
    partitions = ("contiguous", "strided")
    channel_axes = None
    ranks = (2, 3, 4, 5)

    options = {"flag": ("center", "scale", "check_finite", "shared_affine",
                        "track_running_stats"),
               "momentum": ("momentum",)}

    def build_layer(self, **options):
        """Both ways Keras builds a layer: the constructor, and ``from_config`` (what
        ``keras.models.load_model`` calls), which must give the same error first."""
        from localnorm.keras import LocalNormalization

        config = {**LocalNormalization(num_groups=2).get_config(), **options}
        try:
            LocalNormalization(num_groups=2, **options)
        except ValueError as exc:
            constructor = exc
        else:
            constructor = None
        try:
            layer = LocalNormalization.from_config(config)
        except ValueError as exc:
            assert constructor is not None and str(exc) == str(constructor), (
                f"from_config and the constructor differ: {exc} / {constructor}")
            raise
        assert constructor is None, f"from_config accepted what the constructor refused: {constructor}"
        return layer

    @property
    def traced(self) -> bool:
        """Whether every call runs traced (one jitted function on JAX), so checks of
        values (NaN/Inf) cannot run; the bad-input battery skips those rows then."""
        return _backend() == "jax"

    def __init__(self):
        self._cache = {}
        self._jitted = {}
        self._graphs = {}

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("keras") is None:
            return "keras not installed"
        backend = _backend()
        if backend not in ("tensorflow", "jax", "torch"):
            return f"Keras backend {backend!r} is not one of tensorflow, jax, torch"
        return None

    # -- helpers -----------------------------------------------------------------------

    def _scope(self, case: Case):
        if case.dtype == "float64" and _backend() == "jax":
            import jax

            return jax.enable_x64(True)
        return contextlib.nullcontext()

    def _layer(self, case: Case):
        """A built layer for the case's configuration, with its evaluation setting.

        Layers are cached per configuration (building one costs more than calling it,
        on TensorFlow most of all); the case's gamma/beta are passed to
        ``stateless_call``, so a cached layer's own weights are never used.
        """
        from localnorm.keras import LocalNormalization

        ndim = case.x.ndim
        key = (case.num_groups, case.num_features, ndim, case.axis, case.eps,
               case.partition, case.dtype, case.shared_affine)
        layer = self._cache.get(key)
        if layer is None:
            layer = LocalNormalization(
                num_groups=case.num_groups, axis=case.axis, epsilon=case.eps,
                partition=case.partition, dtype=_POLICY.get(case.dtype, case.dtype),
                shared_affine=case.shared_affine,
            )
            shape = list(case.x.shape)
            if ndim >= 2 and -ndim <= case.axis < ndim:
                shape[case.axis] = case.num_features
            layer.build(tuple(shape))
            if len(self._cache) >= 256:
                self._cache.clear()
                self._jitted.clear()
                self._graphs.clear()
            self._cache[key] = layer
        layer.set_eval_mode(case.mode, case.group)
        return layer

    def _compiled(self, what: str, layer, case: Case):
        """On JAX, ``what`` ("forward" or "vjp") of the layer as one jitted function,
        cached per layer and evaluation setting (jit caches per shape). Eager JAX would
        compile every primitive for every new shape the strategies draw, several times
        slower than compiling the whole call once."""
        import jax

        group = case.group if isinstance(case.group, (int, np.integer)) else tuple(case.group)
        key = (what, id(layer), case.mode, group)
        fn = self._jitted.get(key)
        if fn is None:
            training = case.mode == "batch"
            if what == "forward":
                fn = jax.jit(lambda p, x: _apply(layer, x, p, training), **_FAST_COMPILE)
            else:
                fn = jax.jit(lambda p, x, ct: _vjp_jax(layer, x, p, ct, training),
                             **_FAST_COMPILE)
            self._jitted[key] = fn
        return fn

    @staticmethod
    def unknown_batch(case: Case) -> bool:
        """Whether the case runs through a TensorFlow graph with unknown batch and
        spatial sizes (on the TensorFlow backend, for about one case in eight)."""
        if _backend() != "tensorflow":
            return False
        return zlib.crc32(np.ascontiguousarray(case.x).view(np.uint8).tobytes()) % 8 == 1

    def _graph(self, what: str, layer, case: Case):
        """On TensorFlow, ``what`` ("forward" or "vjp") of the layer as a ``tf.function``
        with unknown batch and spatial sizes (only the channel axis, from x, is known, so
        a channel mismatch is still refused when the graph is traced). Cached per layer,
        evaluation setting and rank. Without autograph, as Keras traces its own train and
        predict steps (autograph would re-raise a trace-time LocalNormError as a
        StagingError)."""
        import tensorflow as tf

        ndim = case.x.ndim
        axis = case.axis % ndim if -ndim <= case.axis < ndim else None
        group = case.group if isinstance(case.group, (int, np.integer)) else tuple(case.group)
        channels = case.x.shape[axis] if axis is not None else None
        key = (what, id(layer), case.mode, group, ndim, channels)
        fn = self._graphs.get(key)
        if fn is None:
            training = case.mode == "batch"
            shape = [None] * ndim
            if axis is not None:
                shape[axis] = channels
            x_spec = tf.TensorSpec(shape, tf.as_dtype(case.dtype))
            p_spec = [tf.TensorSpec(case.gamma.shape, layer.variable_dtype)] * 2
            if what == "forward":
                fn = tf.function(lambda x, p: _apply(layer, x, list(p), training),
                                 input_signature=[x_spec, p_spec], autograph=False)
            else:
                ct_spec = tf.TensorSpec(shape, tf.float64)
                fn = tf.function(
                    lambda x, p, ct: _vjp_tensorflow(layer, x, list(p), ct, training),
                    input_signature=[x_spec, p_spec, ct_spec], autograph=False)
            self._graphs[key] = fn
        return fn

    @staticmethod
    @contextlib.contextmanager
    def _run_time_refusals():
        """A graph's run-time batch check raises InvalidArgumentError with localnorm's
        message: surface it as the ValueError that error parity expects."""
        import tensorflow as tf

        try:
            yield
        except tf.errors.InvalidArgumentError as exc:
            if "Fix" not in exc.message:
                raise
            raise ValueError(exc.message) from exc

    def _params(self, layer, case: Case):
        import keras

        return [keras.ops.convert_to_tensor(p.astype(layer.variable_dtype))
                for p in (case.gamma, case.beta)]

    @staticmethod
    def _x(case: Case):
        import keras

        x = case.x
        if x.dtype.name == "bfloat16":  # ml_dtypes: exact through float32
            return keras.ops.cast(x.astype(np.float32), "bfloat16")
        return keras.ops.convert_to_tensor(x)

    @staticmethod
    def _numpy(t, dtype: str) -> np.ndarray:
        import keras

        if dtype == "bfloat16":
            import ml_dtypes

            f32 = keras.ops.convert_to_numpy(keras.ops.cast(t, "float32"))
            return f32.astype(ml_dtypes.bfloat16)
        return np.asarray(keras.ops.convert_to_numpy(t))

    # -- the harness protocol ------------------------------------------------------------

    def forward(self, case: Case) -> np.ndarray:
        with self._scope(case):
            layer = self._layer(case)
            params = self._params(layer, case)
            if _backend() == "jax":
                y = self._compiled("forward", layer, case)(params, self._x(case))
            elif self.unknown_batch(case):
                with self._run_time_refusals():
                    y = self._graph("forward", layer, case)(self._x(case), params)
            else:
                y = _apply(layer, self._x(case), params, training=case.mode == "batch")
            return self._numpy(y, case.dtype)

    def vjp(self, case: Case, cotangent: np.ndarray):
        with self._scope(case):
            layer = self._layer(case)
            training = case.mode == "batch"
            params = self._params(layer, case)
            x = self._x(case)
            ct = np.asarray(cotangent, dtype=np.float64)
            if _backend() == "jax":
                grads = self._compiled("vjp", layer, case)(params, x, ct)
            elif self.unknown_batch(case):
                with self._run_time_refusals():
                    grads = self._graph("vjp", layer, case)(x, params, ct)
            else:
                grads = _VJP[_backend()](layer, x, params, ct, training)
            return tuple(np.asarray(self._numpy(g, "float64"), dtype=np.float64)
                         for g in grads)


def _apply(layer, x, params, training):
    y, _ = layer.stateless_call(params, [], x, training=training)
    return y


def _vjp_tensorflow(layer, x, params, ct, training):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([x, *params])
        y = _apply(layer, x, params, training)
    return tape.gradient(y, [x, *params], output_gradients=tf.cast(ct, y.dtype))


def _vjp_jax(layer, x, params, ct, training):
    import jax

    y, pullback = jax.vjp(lambda x_, p_: _apply(layer, x_, p_, training), x, params)
    dx, dparams = pullback(jax.numpy.asarray(ct, dtype=y.dtype))
    return [dx, *dparams]


def _vjp_torch(layer, x, params, ct, training):
    import torch

    x = x.detach().requires_grad_(True)
    params = [p.detach().requires_grad_(True) for p in params]
    y = _apply(layer, x, params, training)
    ct_t = torch.as_tensor(ct, device=y.device).to(y.dtype)
    return torch.autograd.grad(y, [x, *params], grad_outputs=ct_t)


_VJP = {"tensorflow": _vjp_tensorflow, "jax": _vjp_jax, "torch": _vjp_torch}
