"""The Keras 3 backend of the robustness experiment (``--backend keras``).

Builds :mod:`~localnorm.experiments.models`'s networks as functional Keras models,
channels-last (``keras.layers.BatchNormalization``, ``keras.layers.GroupNormalization``,
:class:`localnorm.keras.LocalNormalization`), trains them with ``model.fit`` (Adam, one
``fit`` call per epoch on that epoch's shuffled full batches) and evaluates LocalNorm with
:func:`localnorm.keras.predict`. The Keras backend (TensorFlow, JAX or PyTorch) is
Keras' own choice, set with the ``KERAS_BACKEND`` environment variable before the run
starts; it is recorded in results.json (``config.keras_backend``) and ``--resume`` keeps
it. ``--device auto`` is that backend's default device (its GPU when its CUDA build is
installed), ``cpu`` or ``cuda[:N]`` (``gpu[:N]``) place the run with ``keras.device``.
Checkpoints are ``.npz`` files of ``model.get_weights()`` plus the training log.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np

from . import _errors, models
from .report import atomic_write_bytes
from .training import Runner, TrainLog, epoch_batches, statistics_chunks

__all__ = ["KerasRunner"]


def _limit_threads(threads: int | None) -> None:
    """Ask the Keras backend for ``threads`` CPU threads (before it runs anything)."""
    if not threads:
        return
    backend = os.environ.get("KERAS_BACKEND", "")
    if backend == "jax":
        from .flax_runner import limit_jax_threads

        limit_jax_threads(threads)
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:  # TensorFlow already started (e.g. in a test session)
            pass
    elif name == "torch":
        import torch

        torch.set_num_threads(int(threads))


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 2, 3, 1)))


class KerasRunner(Runner):
    """Keras 3 on its configured backend: functional models, ``fit``,
    :func:`localnorm.keras.predict`."""

    name = "keras"
    checkpoint_suffix = ".keras.npz"

    def __init__(self, device: str = "auto", threads: int | None = None):
        super().__init__(device, threads)
        _limit_threads(threads)
        import keras

        self._keras = keras
        self._backend = keras.backend.backend()
        self._place = self._resolve(device)

    # -- device ------------------------------------------------------------------------

    def _available(self) -> list[str]:
        try:
            return list(self._keras.distribution.list_devices())
        except AttributeError:  # the torch backend has no list_devices
            import torch

            return ["cpu:0"] + [f"gpu:{i}" for i in range(torch.cuda.device_count())]

    def _resolve(self, device: str) -> str | None:
        if device == "auto":
            return None
        kind, _, index = device.partition(":")
        kind = {"cuda": "gpu"}.get(kind, kind)
        name = f"{kind}:{index or 0}"
        available = self._available()
        if name not in available:
            raise _errors.device_unavailable(device, "keras", ["auto", *available])
        return name

    def _on_device(self):
        import contextlib

        return contextlib.nullcontext() if self._place is None else self._keras.device(self._place)

    @property
    def device(self) -> str:
        return self._place or self._available()[0]

    @property
    def framework(self) -> str:
        import importlib

        inner = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(self._backend)
        version = getattr(importlib.import_module(inner), "__version__", "?") if inner else "?"
        return f"keras {self._keras.__version__} ({self._backend} {version})"

    @property
    def details(self) -> dict:
        return {"keras_backend": self._backend}

    # -- networks ----------------------------------------------------------------------

    def _norm(self, norm: str, channels: int, num_groups: int):
        layers = self._keras.layers
        if norm == "batchnorm":
            return layers.BatchNormalization(axis=-1, momentum=1 - models.BN_MOMENTUM,
                                             epsilon=models.EPSILON)
        if norm == "groupnorm":
            return layers.GroupNormalization(groups=models.groupnorm_groups(channels), axis=-1,
                                             epsilon=models.EPSILON)
        try:
            from localnorm.keras import LocalNormalization
        except ImportError:
            raise _errors.adapter_missing("localnorm", "keras", "localnorm.keras") from None
        return LocalNormalization(num_groups=num_groups, axis=-1, epsilon=models.EPSILON)

    def _init(self):
        # PyTorch's default weight init, U(+-1/sqrt(fan_in)), in every backend (models.py).
        return self._keras.initializers.VarianceScaling(models.INIT_SCALE, "fan_in", "uniform")

    def _conv_norm(self, t, norm, cout, num_groups, stride=1, kernel=3, relu=True):
        layers = self._keras.layers
        t = layers.Conv2D(cout, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=self._init())(t)
        t = self._norm(norm, cout, num_groups)(t)
        return layers.ReLU()(t) if relu else t

    def build(self, model, norm, in_shape, num_classes, num_groups, seed):
        models.check(model, norm)
        keras = self._keras
        layers = keras.layers
        keras.utils.set_random_seed(seed)
        c, h, w = in_shape
        with self._on_device():
            inputs = keras.Input((h, w, c))
            t = inputs
            if model == "mnistnet":
                for i, cout in enumerate(models.MNISTNET_CONVS):
                    t = self._conv_norm(t, norm, cout, num_groups)
                    if i % 2 == 1:
                        t = layers.MaxPooling2D(2)(t)
                t = layers.Flatten()(t)
                for width in models.MNISTNET_DENSE:
                    t = layers.Dense(width, activation="relu", kernel_initializer=self._init())(t)
            else:
                cin = models.RESNET_STAGES[0]
                t = self._conv_norm(t, norm, cin, num_groups)
                for i, cout in enumerate(models.RESNET_STAGES):
                    for b in range(models.RESNET_BLOCKS):
                        stride = 2 if (i > 0 and b == 0) else 1
                        out = self._conv_norm(t, norm, cout, num_groups, stride)
                        out = self._conv_norm(out, norm, cout, num_groups, relu=False)
                        short = t if (stride == 1 and cin == cout) else self._conv_norm(
                            t, norm, cout, num_groups, stride, kernel=1, relu=False)
                        t = layers.ReLU()(layers.Add()([out, short]))
                        cin = cout
                t = layers.GlobalAveragePooling2D()(t)
            outputs = layers.Dense(num_classes, kernel_initializer=self._init())(t)
            return keras.Model(inputs, outputs, name=f"{model}_{norm}")

    def train(self, net, x, y, *, epochs, batch_size, lr, seed, progress=None):
        keras = self._keras
        xh, y = _nhwc(x), np.asarray(y, dtype=np.int64)
        rng = np.random.default_rng(seed)
        with self._on_device():
            net.compile(
                optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            )
            loss = acc = float("nan")
            t0 = time.perf_counter()
            for epoch in range(epochs):
                batches = epoch_batches(len(y), batch_size, rng)
                idx = batches.ravel()
                hist = net.fit(xh[idx], y[idx], batch_size=batches.shape[1], epochs=1,
                               shuffle=False, verbose=0)
                loss, acc = float(hist.history["loss"][-1]), float(hist.history["accuracy"][-1])
                if progress is not None:
                    progress(epoch, loss, acc)
        return TrainLog(time.perf_counter() - t0, loss, acc, epochs)

    def _logits(self, net, x, bounds, training=False) -> np.ndarray:
        ops = self._keras.ops
        return np.concatenate([ops.convert_to_numpy(net(x[s:e], training=training))
                               for s, e in bounds])

    def _dynamic_copy(self, net):
        """A clone of a BatchNorm model, called with ``training=True``: it normalizes with
        each batch's statistics (and updates only its own running statistics)."""
        dyn = self._keras.models.clone_model(net)
        dyn.set_weights(net.get_weights())
        return dyn

    def evaluate(self, net, evaluation, x, *, batch_size, num_groups, seed, vote="hard",
                 chunk=1024):
        xh = _nhwc(x)
        with self._on_device():
            if evaluation.method == "localnorm":
                from localnorm.keras import localnorm_layers, predict

                k = localnorm_layers(net)[0].num_groups
                pred = predict(
                    net, xh, protocol=evaluation.protocol, vote=vote,
                    generator=np.random.default_rng(seed),
                    batch_size=batch_size if evaluation.protocol == "batch" else chunk,
                    set_size=max(batch_size // k, 1),
                )
                agreement = None if pred.agreement is None else np.asarray(
                    pred.agreement, dtype=np.float64)
                return np.asarray(pred.labels), agreement
            if evaluation.method == "batchnorm-dynamic":
                out = self._logits(self._dynamic_copy(net), xh,
                                   statistics_chunks(len(xh), batch_size, num_groups),
                                   training=True)
            else:
                out = self._logits(net, xh, [(s, min(s + chunk, len(xh)))
                                             for s in range(0, len(xh), chunk)])
        return out.argmax(1), None

    def save(self, net, path, log):
        buf = io.BytesIO()
        weights = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(net.get_weights())}
        np.savez(buf, **weights, log=np.asarray(json.dumps(log.__dict__)))
        atomic_write_bytes(Path(path), buf.getvalue())

    def load(self, net, path):
        with np.load(path) as f:
            names = sorted(n for n in f.files if n.startswith("w"))
            net.set_weights([f[n] for n in names])
            return TrainLog(**json.loads(str(f["log"])))
