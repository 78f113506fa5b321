"""The keras sections (one process per backend): ``localnorm.keras.LocalNormalization``
(each partition) against ``keras.layers.BatchNormalization`` (batch statistics) and
``keras.layers.GroupNormalization``; whole-network training steps; the test-time protocols.

Layers are timed through ``layer.stateless_call`` compiled the backend's usual way:
``jax.jit`` on JAX, ``tf.function`` (graph mode, no XLA) on TensorFlow, eager on PyTorch;
gradients by ``jax.vjp``, ``tf.GradientTape`` and ``torch.autograd.grad``. Networks are
Keras functional models trained with ``model.train_on_batch`` (Keras's own compiled step,
``jit_compile="auto"``). Memory is not measured for Keras (no backend-neutral peak counter
on CPU; see the torch and flax sections).
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np

from . import _report as R
from ._cases import (LAYER_TARGET, MNIST_CONVS, MNIST_DENSE, NETWORK_TARGET, VGG_CFG, Context,
                     NetCase, guarded, section)
from ._timing import compare


# ----------------------------------------------------------------------------- backends

def _kw(layer, training) -> dict:
    """``training=...`` for layers whose ``call`` takes it (GroupNormalization does not)."""
    return {"training": training} if "training" in inspect.signature(layer.call).parameters \
        else {}


class _Jax:
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


class _TensorFlow:
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


class _Torch:
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


_BACKENDS = {"jax": _Jax, "tensorflow": _TensorFlow, "torch": _Torch}


# ----------------------------------------------------------------------------- layers

def _built(layer, shape):
    layer.build(shape)
    return layer


def _layer_records(ctx: Context, be, lk) -> list[dict]:
    records = []
    for case in ctx.other_layer_cases:
        n, c, h, k = case
        rng = np.random.default_rng(0)
        x = be.tensor(rng.standard_normal((n, h, h, c), dtype=np.float32))
        gy = be.tensor(rng.standard_normal((n, h, h, c), dtype=np.float32))
        shape = (n, h, h, c)
        gn = f"GroupNormalization({min(32, c)})"
        layers = {
            "BatchNormalization": _built(keras.layers.BatchNormalization(), shape),
            gn: _built(keras.layers.GroupNormalization(groups=min(32, c)), shape),
        }
        for part in ("contiguous", "strided"):
            layers[f"LocalNormalization {part}"] = _built(
                lk.LocalNormalization(num_groups=k, partition=part), shape)
        for op in ("forward", "forward+backward"):
            fns = {name: (be.forward(m, x, True) if op == "forward" else be.fwbw(m, x, gy))
                   for name, m in layers.items()}
            t = compare(fns, baseline="BatchNormalization", settings=ctx.settings, sync=be.sync)
            rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("Local") else None)
                    for nm in fns if nm != "BatchNormalization"]
            records.append(R.timing_record("layer", case.label, t, rows, op=op, layout="NHWC"))
        for mode in ("single", "set"):
            ln = _built(lk.LocalNormalization(num_groups=k, mode=mode, group=0), shape)
            fns = {"BatchNormalization": be.forward(layers["BatchNormalization"], x, True),
                   gn: be.forward(layers[gn], x, True),
                   "BatchNormalization eval (moving stats)":
                       be.forward(layers["BatchNormalization"], x, False),
                   f"LocalNormalization {mode}": be.forward(ln, x, False)}
            t = compare(fns, baseline="BatchNormalization", settings=ctx.settings, sync=be.sync)
            rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("Local") else None)
                    for nm in fns if nm != "BatchNormalization"]
            records.append(R.timing_record("layer", case.label, t, rows, op=f"eval {mode}",
                                           layout="NHWC"))
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


def _pair(net: NetCase, lk):
    """The BatchNorm network and the same network built with LocalNormalization layers
    (built directly rather than with ``convert_batchnorm``, which does not yet handle the
    ``mask`` argument Keras records for BatchNormalization calls in functional models)."""
    bn = _build(net, _bn)
    ln = _build(net, lambda: lk.LocalNormalization(num_groups=net.k))
    return bn, ln


def _data(net: NetCase):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((net.batch, net.size, net.size, net.channels), dtype=np.float32)
    return x, rng.integers(0, net.classes, net.batch)


def _network_records(ctx: Context, be, lk) -> list[dict]:
    records = []
    for net in ctx.keras_networks:
        bn, ln = _pair(net, lk)
        x, y = _data(net)
        fns = {}
        for name, model in (("BatchNorm", bn), ("LocalNorm", ln)):
            model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            fns[name] = lambda m=model: m.train_on_batch(x, y)
        t = compare(fns, baseline="BatchNorm", settings=ctx.settings, sync=lambda out: None)
        records.append(R.timing_record("network", net.label, t,
                                       [R.row(t, "LocalNorm", target=NETWORK_TARGET)],
                                       op="training step (train_on_batch)", layout="NHWC"))
    return records


def _protocol_records(ctx: Context, be, lk) -> list[dict]:
    net = ctx.protocol_net
    bn, ln = _pair(net, lk)
    x, _ = _data(net)
    fns = {
        "BatchNorm inference": lambda: keras.ops.convert_to_numpy(bn(x, training=False)),
        "BATCH": lambda: lk.predict(ln, x, protocol="batch").scores,
        "SINGLE": lambda: lk.predict(ln, x, protocol="single", generator=0).scores,
        "SINGLE-VOTING": lambda: lk.predict(ln, x, protocol="single-voting").scores,
    }
    t = compare(fns, baseline="BatchNorm inference", settings=ctx.settings,
                sync=lambda out: None)
    rows = [R.row(t, "BATCH"), R.row(t, "SINGLE"),
            R.row(t, "SINGLE-VOTING", baseline="SINGLE", scale=float(net.k))]
    return [R.timing_record("protocol", f"{net.label}, {net.batch} test images", t, rows,
                            op="evaluation (model(x, training=False), as localnorm.keras."
                               "predict runs)", layout="NHWC")]


def run(ctx: Context, backend: str) -> dict:
    import localnorm.keras as lk

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND={backend} was requested but keras runs on "
                           f"{keras.backend.backend()}")
    be = _BACKENDS[backend]()
    mod = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[backend]
    version = __import__(mod).__version__
    sec = section(f"keras-{backend}", "keras", backend=backend, device="cpu",
                  versions={"keras": keras.__version__, backend: version})
    sec["notes"].append(
        "Baselines: keras.layers.BatchNormalization() with training=True (batch statistics) "
        "and GroupNormalization(min(32, C)); layers timed through stateless_call "
        + {"jax": "under jax.jit.", "tensorflow": "in a tf.function (no XLA).",
           "torch": "eagerly."}[backend])
    sec["notes"].append("Memory is not measured for Keras: no backend-neutral peak counter on "
                        "CPU (see the torch and flax sections for memory figures).")
    parts = {"layer": _layer_records, "network": _network_records,
             "protocol": _protocol_records}
    for kind, fn in parts.items():
        if kind in ctx.kinds:
            guarded(sec, kind, lambda fn=fn: fn(ctx, be, lk))
    return sec
