"""The keras sections (one process per backend): ``localnorm.keras.LocalNormalization``
(each partition) against ``keras.layers.BatchNormalization`` (batch statistics) and
``keras.layers.GroupNormalization``; whole-network training steps; the test-time
protocols; memory in training.

Layers are timed the backend's usual way: ``layer.stateless_call`` under ``jax.jit`` on
JAX and in a ``tf.function`` (graph mode, no XLA) on TensorFlow, eager layer calls on
PyTorch;
gradients by ``jax.vjp``, ``tf.GradientTape`` and ``torch.autograd.grad``; in both of
Keras's layouts, channels_last (NHWC, ``axis=-1``, Keras's default) and channels_first
(NCHW, ``axis=1``). Networks are Keras functional models (channels_last: TensorFlow has
no channels_first convolution on CPU) trained with ``model.train_on_batch`` (Keras's own
compiled step, ``jit_compile="auto"``); the LocalNorm networks are the BatchNorm ones
converted with ``localnorm.keras.convert_batchnorm``.

Memory, per backend: on JAX, XLA's account of the compiled training step
(``jax.jit(step).lower(...).compile().memory_analysis()``, temporary buffers); on
PyTorch, the bytes autograd saves for backward (as the torch section on CPU); on
TensorFlow, the peak of ``tf.config.experimental.get_memory_info`` on a GPU, and nothing
on CPU (TensorFlow keeps no CPU peak counter).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import keras
import numpy as np

from . import _report as R
from ._cases import (LAYER_TARGET, MNIST_CONVS, MNIST_DENSE, NETWORK_TARGET, VGG_CFG, Context,
                     NetCase, guarded, section)
from ._timing import compare


# ----------------------------------------------------------------------------- backends
# Each backend class: sync(out), tensor(numpy array), forward(layer, x, training) and
# fwbw(layer, x, gy) -> zero-argument callables, eager (whether forward calls the layer
# eagerly, where evaluation runs the layer's NaN/Inf check), memory_method (None: not
# measured) and train_memory(model, x, y) -> bytes.

def _kw(layer, training) -> dict:
    """``training=...`` for layers whose ``call`` takes it (GroupNormalization does not)."""
    return {"training": training} if "training" in inspect.signature(layer.call).parameters \
        else {}


class _Jax:
    eager = False

    def __init__(self):
        import jax

        self.jax = jax

    def sync(self, out):
        self.jax.block_until_ready(out)

    def tensor(self, a):
        return self.jax.numpy.asarray(a)

    def forward(self, layer, x, training):
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]
        f = self.jax.jit(lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, **_kw(layer, training))[0])
        return lambda: f(tv, ntv, x)

    def fwbw(self, layer, x, gy):
        jax = self.jax
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def fb(tv, ntv, x, gy):
            _, vjp = jax.vjp(lambda tv, x: layer.stateless_call(tv, ntv, x, **_kw(layer, True))[0],
                             tv, x)
            return vjp(gy)

        f = jax.jit(fb)
        return lambda: f(tv, ntv, x, gy)

    #: how :meth:`train_memory` measures
    memory_method = ("XLA memory_analysis().temp_size_in_bytes of the jitted training step "
                     "(stateless_call forward, cross-entropy, gradients, SGD update)")

    def train_memory(self, model, x, y) -> int:
        """Bytes of temporary buffers (activations, workspace) XLA allocates for one
        compiled training step of ``model``."""
        jax = self.jax
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def loss_fn(tv, ntv, x, y):
            logits, ntv = model.stateless_call(tv, ntv, x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            return keras.ops.mean(loss), ntv

        def step(tv, ntv, x, y):
            (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x, y)
            return [v - 1e-3 * g for v, g in zip(tv, grads)], ntv, loss

        compiled = jax.jit(step).lower(tv, ntv, self.tensor(x), self.tensor(y)).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)


class _TensorFlow:
    eager = False

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def sync(self, out):
        # Eager results of a tf.function on CPU are ready; this forces them anyway.
        for t in self.tf.nest.flatten(out):
            _ = t.numpy().flat[0] if t is not None else None

    def tensor(self, a):
        return self.tf.convert_to_tensor(a)

    def forward(self, layer, x, training):
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]
        f = self.tf.function(lambda x: layer.stateless_call(tv, ntv, x, **_kw(layer, training))[0])
        return lambda: f(x)

    def fwbw(self, layer, x, gy):
        tf = self.tf
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        @tf.function
        def fb(x, gy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                tape.watch(tv)
                y = layer.stateless_call(tv, ntv, x, **_kw(layer, True))[0]
            return tape.gradient(y, [x] + tv, output_gradients=gy)

        return lambda: fb(x, gy)

    @property
    def memory_method(self):
        if self.tf.config.list_logical_devices("GPU"):
            return ("tf.config.experimental.get_memory_info('GPU:0')['peak'] over one "
                    "train_on_batch, above the memory held before it")
        return None  # TensorFlow keeps no peak counter for CPU memory

    def train_memory(self, model, x, y) -> int:
        tf = self.tf
        model.train_on_batch(x, y)  # compiled, optimizer slots created
        tf.config.experimental.reset_memory_stats("GPU:0")
        base = tf.config.experimental.get_memory_info("GPU:0")["current"]
        model.train_on_batch(x, y)
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"] - base)


class _Torch:
    eager = True

    def __init__(self):
        import torch

        self.torch = torch

    def sync(self, out):
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()

    def tensor(self, a):
        return keras.ops.convert_to_tensor(a)

    def forward(self, layer, x, training):
        torch = self.torch

        def f():
            with torch.no_grad():
                return layer(x, **_kw(layer, training))

        return f

    def fwbw(self, layer, x, gy):
        torch = self.torch
        xg = x.detach().requires_grad_(True)
        params = [v.value for v in layer.trainable_variables]
        return lambda: torch.autograd.grad(layer(xg, **_kw(layer, True)), [xg] + params, gy)

    memory_method = ("bytes saved for backward in one training forward pass "
                     "(torch saved_tensors_hooks, each storage once, variables excluded; as "
                     "the torch section on CPU)")

    def train_memory(self, model, x, y) -> int:
        from .torch_bench import saved_activation_bytes

        torch = self.torch
        xt = keras.ops.convert_to_tensor(x)
        yt = keras.ops.convert_to_tensor(y)

        def forward():
            logits = model(xt, training=True)
            return torch.nn.functional.cross_entropy(logits, yt.long())

        return saved_activation_bytes(forward, [v.value for v in model.weights])


_BACKENDS = {"jax": _Jax, "tensorflow": _TensorFlow, "torch": _Torch}


# ----------------------------------------------------------------------------- layers

def _built(layer, shape):
    layer.build(shape)
    return layer


#: Keras's two layouts: (name, channel axis).
LAYOUTS = (("NHWC", -1), ("NCHW", 1))


def layer_comparisons(case, layout: str, be, lk, settings) -> list[dict]:
    """The layer records of one input shape in one layout, each against
    BatchNormalization (batch statistics) on the same input: forward and forward+backward
    (with GroupNormalization and both LocalNormalization partitions), and evaluation
    (LocalNormalization in "single" and "set" mode with ``check_finite=False``, as
    BatchNormalization checks nothing, and BatchNormalization with its moving
    statistics; where the backend calls layers eagerly, also "single" with the default
    NaN/Inf check)."""
    n, c, h, k = case
    axis = dict(LAYOUTS)[layout]
    shape = (n, h, h, c) if axis == -1 else (n, c, h, h)
    rng = np.random.default_rng(0)
    x = be.tensor(rng.standard_normal(shape, dtype=np.float32))
    gy = be.tensor(rng.standard_normal(shape, dtype=np.float32))
    gn = f"GroupNormalization({min(32, c)})"
    layers = {
        "BatchNormalization": _built(keras.layers.BatchNormalization(axis=axis), shape),
        gn: _built(keras.layers.GroupNormalization(groups=min(32, c), axis=axis), shape),
    }
    for part in ("contiguous", "strided"):
        layers[f"LocalNormalization {part}"] = _built(
            lk.LocalNormalization(num_groups=k, axis=axis, partition=part), shape)
    # Ghost BatchNorm against BatchNormalization: the preset as users get it (K groups,
    # strided, moving statistics updated in training)
    layers["GhostBatchNormalization"] = _built(
        lk.GhostBatchNormalization(num_groups=k, axis=axis), shape)
    records = []
    for op in ("forward", "forward+backward"):
        fns = {name: (be.forward(m, x, True) if op == "forward" else be.fwbw(m, x, gy))
               for name, m in layers.items()}
        t = compare(fns, baseline="BatchNormalization", settings=settings, sync=be.sync)
        rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("Local") else None)
                for nm in fns if nm != "BatchNormalization"]
        records.append(R.timing_record("layer", case.label, t, rows, op=op, layout=layout))
    fns = {"BatchNormalization": be.forward(layers["BatchNormalization"], x, True),
           "BatchNormalization eval (moving stats)":
               be.forward(layers["BatchNormalization"], x, False)}
    for mode in ("single", "set"):
        # BatchNormalization checks nothing: the compared layers neither (check_finite).
        ln = _built(lk.LocalNormalization(num_groups=k, axis=axis, mode=mode, group=0,
                                          check_finite=False), shape)
        fns[f"LocalNormalization {mode}"] = be.forward(ln, x, False)
    fns["GhostBatchNormalization eval (moving stats)"] = be.forward(
        layers["GhostBatchNormalization"], x, False)
    if be.eager:
        # Where layers are called eagerly, evaluation checks the input for NaN/Inf by
        # default (docs/spec.md, "Non-finite input"): what that costs.
        ln = _built(lk.LocalNormalization(num_groups=k, axis=axis, mode="single", group=0),
                    shape)
        fns["LocalNormalization single, check_finite=True"] = be.forward(ln, x, False)
    t = compare(fns, baseline="BatchNormalization", settings=settings, sync=be.sync)
    rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("Local") else None)
            for nm in fns if nm != "BatchNormalization"]
    records.append(R.timing_record("layer", case.label, t, rows, op="eval", layout=layout))
    return records


def _layer_records(ctx: Context, be, lk) -> list[dict]:
    records = []
    for case in ctx.layer_cases:
        for layout, _ in LAYOUTS:
            records += layer_comparisons(case, layout, be, lk, ctx.settings)
    return records


# ----------------------------------------------------------------------------- networks

L = keras.layers


def _bn():
    return L.BatchNormalization(epsilon=1e-5)


def _conv_bn_relu(x, c, norm, stride=1):
    x = L.Conv2D(c, 3, strides=stride, padding="same", use_bias=False)(x)
    return L.ReLU()(norm()(x))


def mnist_net(classes: int = 10, norm=_bn) -> keras.Model:
    """The paper's MNIST network (Input-16c-16c-32c-32c-512d-1024d-output)."""
    inp = keras.Input((28, 28, 1))
    x = inp
    for v in MNIST_CONVS:
        x = L.MaxPooling2D(2)(x) if v == "M" else _conv_bn_relu(x, v, norm)
    x = L.Flatten()(x)
    for d in MNIST_DENSE:
        x = L.ReLU()(norm()(L.Dense(d, use_bias=False)(x)))
    return keras.Model(inp, L.Dense(classes)(x))


def resnet20(classes: int = 10, size: int = 32, norm=_bn) -> keras.Model:
    """CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels)."""
    inp = keras.Input((size, size, 3))
    x = _conv_bn_relu(inp, 16, norm)
    cin = 16
    for i, cout in enumerate((16, 32, 64)):
        for j in range(3):
            stride = 2 if (i > 0 and j == 0) else 1
            out = _conv_bn_relu(x, cout, norm, stride)
            out = norm()(L.Conv2D(cout, 3, padding="same", use_bias=False)(out))
            short = x
            if stride != 1 or cin != cout:
                short = norm()(L.Conv2D(cout, 1, strides=stride, use_bias=False)(x))
            x = L.ReLU()(L.Add()([out, short]))
            cin = cout
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes)(x))


def vgg(classes: int = 10, size: int = 32, norm=_bn) -> keras.Model:
    """VGG-style network (:data:`benchmarks._cases.VGG_CFG`)."""
    inp = keras.Input((size, size, 3))
    x = inp
    for v in VGG_CFG:
        x = L.MaxPooling2D(2)(x) if v == "M" else _conv_bn_relu(x, v, norm)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes)(x))


def _build(net: NetCase, norm) -> keras.Model:
    keras.utils.set_random_seed(0)
    if net.name == "mnist":
        return mnist_net(net.classes, norm)
    if net.name == "resnet20":
        return resnet20(net.classes, net.size, norm)
    return vgg(net.classes, net.size, norm)


def _pair(net: NetCase, lk, partition: str = "contiguous"):
    """The BatchNorm network and its conversion by ``localnorm.keras.convert_batchnorm``
    (same weights, K groups along the batch axis)."""
    bn = _build(net, _bn)
    return bn, lk.convert_batchnorm(bn, num_groups=net.k, partition=partition)


def _data(net: NetCase):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((net.batch, net.size, net.size, net.channels), dtype=np.float32)
    return x, rng.integers(0, net.classes, net.batch)


def _compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _network_records(ctx: Context, be, lk) -> list[dict]:
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, lk)
        ln_strided = lk.convert_batchnorm(bn, num_groups=net.k, partition="strided")
        x, y = _data(net)
        fns = {}
        for name, model in (("BatchNorm", bn), ("LocalNorm contiguous", ln),
                            ("LocalNorm strided", ln_strided)):
            fns[name] = lambda m=_compiled(model): m.train_on_batch(x, y)
        t = compare(fns, baseline="BatchNorm", settings=ctx.net_settings,
                    sync=lambda out: None)
        rows = [R.row(t, name, target=NETWORK_TARGET) for name in fns if name != "BatchNorm"]
        records.append(R.timing_record("network", net.label, t, rows,
                                       op="training step (train_on_batch)", layout="NHWC"))
    return records


def _protocol_records(ctx: Context, be, lk) -> list[dict]:
    net = ctx.protocol_net
    bn, ln = _pair(net, lk)
    x, _ = _data(net)
    # On PyTorch, predict's passes run under torch.no_grad (as model.predict): so does the
    # baseline
    grad_off = be.torch.no_grad if isinstance(be, _Torch) else contextlib.nullcontext

    def bn_inference():
        with grad_off():
            return keras.ops.convert_to_numpy(bn(x, training=False))

    fns = {
        "BatchNorm inference": bn_inference,
        "BATCH": lambda: lk.predict(ln, x, protocol="batch").scores,
        "SINGLE": lambda: lk.predict(ln, x, protocol="single", generator=0).scores,
        "SINGLE-VOTING": lambda: lk.predict(ln, x, protocol="single-voting").scores,
    }
    t = compare(fns, baseline="BatchNorm inference", settings=ctx.net_settings,
                sync=lambda out: None)
    rows = [R.row(t, "BATCH"), R.row(t, "SINGLE"),
            R.row(t, "SINGLE-VOTING", baseline="SINGLE", scale=float(net.k))]
    return [R.timing_record("protocol", f"{net.label}, {net.batch} test images", t, rows,
                            op="evaluation (model(x, training=False), as localnorm.keras."
                               "predict runs; under torch.no_grad on PyTorch)",
                            layout="NHWC")]


def _memory_records(ctx: Context, be, lk) -> list[dict]:
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, lk)
        ln_strided = lk.convert_batchnorm(bn, num_groups=net.k, partition="strided")
        x, y = _data(net)
        if isinstance(be, _TensorFlow):
            for m in (bn, ln, ln_strided):
                _compiled(m)
        figures = {name: be.train_memory(m, x, y) for name, m in
                   (("BatchNorm", bn), ("LocalNorm contiguous", ln),
                    ("LocalNorm strided", ln_strided))}
        records.append(R.memory_record(net.label, "BatchNorm", figures.pop("BatchNorm"),
                                       figures, method=be.memory_method, layout="NHWC"))
    return records


def device_name(backend: str) -> str:
    """The device Keras computes on, with its kind where the backend tells it."""
    if backend == "torch":  # keras.distribution does not support the PyTorch backend
        import torch

        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    dev = keras.distribution.list_devices()[0]
    if backend == "jax":
        import jax

        return f"{dev}: {jax.devices()[0].device_kind}"
    return dev


def run(ctx: Context, backend: str) -> dict:
    import localnorm.keras as lk

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND={backend} was requested but keras runs on "
                           f"{keras.backend.backend()}")
    be = _BACKENDS[backend]()
    version = __import__(backend).__version__
    sec = section(f"keras-{backend}", "keras", backend=backend, device=device_name(backend),
                  versions={"keras": keras.__version__, backend: version})
    sec["notes"] += [
        "Baselines: keras.layers.BatchNormalization(axis) with training=True (batch "
        "statistics) and GroupNormalization(min(32, C), axis), on the same input in the "
        "same layout; layers timed "
        + {"jax": "through stateless_call under jax.jit.",
           "tensorflow": "through stateless_call in a tf.function (graph mode, no XLA).",
           "torch": "by eager layer calls (the PyTorch backend's own way)."}[backend],
        "Networks: BatchNorm models converted with localnorm.keras.convert_batchnorm (each "
        "partition), trained with train_on_batch (SGD, momentum 0.9) on random data.",
    ]
    if "memory" in ctx.kinds and be.memory_method is None:
        sec["notes"].append("Memory is not measured on TensorFlow without a GPU: TensorFlow "
                            "keeps no peak counter of CPU memory "
                            "(tf.config.experimental.get_memory_info is for GPUs).")
    parts = {"layer": _layer_records, "network": _network_records,
             "protocol": _protocol_records, "memory": _memory_records}
    for kind, fn in parts.items():
        if kind in ctx.kinds and (kind != "memory" or be.memory_method is not None):
            guarded(sec, kind, lambda fn=fn: fn(ctx, be, lk))
    return sec
