"""The flax section: ``localnorm.flax.LocalNorm`` (each partition) against ``nnx.BatchNorm``
(batch statistics) and ``nnx.GroupNorm``; whole-network training steps (NNX networks,
NHWC); the test-time protocols; memory in training.

Layers and training steps are timed as one ``jax.jit``-compiled function of (parameters,
state, inputs) built with ``nnx.split``/``nnx.merge``, waited for with
``jax.block_until_ready``; the protocols as ``localnorm.flax.predict`` runs them (under
``nnx.jit``), against the BatchNorm network under ``nnx.jit`` too. Memory is XLA's
own account of the compiled training step (``compiled.memory_analysis()``: temporary
buffers, i.e. activations and workspace, which is the part a normalization layer changes;
arguments and outputs are the same parameters for both networks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import _report as R
from ._cases import (LAYER_TARGET, MNIST_CONVS, MNIST_DENSE, NETWORK_TARGET, VGG_CFG, Context,
                     NetCase, guarded, section)
from ._timing import compare


def _sync(out: Any) -> None:
    jax.block_until_ready(out)


def _adapter():
    import localnorm.flax as lf

    return lf


# ----------------------------------------------------------------------------- layers

def _jit_forward(layer):
    graphdef, state = nnx.split(layer)
    f = jax.jit(lambda state, x: nnx.merge(graphdef, state, copy=True)(x))
    return lambda x: f(state, x)


def _jit_fwbw(layer):
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def fb(params, x, gy):
        def f(params, x):
            return nnx.merge(graphdef, params, rest, copy=True)(x)

        _, vjp = jax.vjp(f, params, x)
        return vjp(gy)

    g = jax.jit(fb)
    return lambda x, gy: g(params, x, gy)


def _layer_records(ctx: Context, lf) -> list[dict]:
    records = []
    for case in ctx.layer_cases:
        n, c, h, k = case
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((n, h, h, c), dtype=np.float32))
        gy = jnp.asarray(rng.standard_normal((n, h, h, c), dtype=np.float32))
        gn_groups = min(32, c)
        layers = {
            "BatchNorm": nnx.BatchNorm(c, use_running_average=False, rngs=nnx.Rngs(0)),
            f"GroupNorm({gn_groups})": nnx.GroupNorm(c, num_groups=gn_groups, rngs=nnx.Rngs(0)),
            # the baseline's variance is E[x^2] - E[x]^2 (one fused pass); the two-pass
            # variance, as accurate as LocalNorm's moments, shows what that formula buys
            "BatchNorm, two-pass variance": nnx.BatchNorm(
                c, use_running_average=False, use_fast_variance=False, rngs=nnx.Rngs(0)),
        }
        for part in ("contiguous", "strided"):
            layers[f"LocalNorm {part}"] = lf.LocalNorm(c, num_groups=k, partition=part,
                                                       rngs=nnx.Rngs(0))
        # Ghost BatchNorm against BatchNorm: the preset as users get it (K groups, strided,
        # running statistics updated in training)
        layers["GhostBatchNorm"] = lf.GhostBatchNorm(c, num_groups=k, rngs=nnx.Rngs(0))
        fwd = {name: (lambda f=_jit_forward(m): f(x)) for name, m in layers.items()}
        t = compare(fwd, baseline="BatchNorm", settings=ctx.settings, sync=_sync)
        rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("LocalNorm") else None)
                for nm in fwd if nm != "BatchNorm"]
        records.append(R.timing_record("layer", case.label, t, rows, op="forward", layout="NHWC"))

        fwbw = {name: (lambda f=_jit_fwbw(m): f(x, gy)) for name, m in layers.items()}
        t = compare(fwbw, baseline="BatchNorm", settings=ctx.settings, sync=_sync)
        rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("LocalNorm") else None)
                for nm in fwbw if nm != "BatchNorm"]
        records.append(R.timing_record("layer", case.label, t, rows, op="forward+backward",
                                       layout="NHWC"))

        bn_eval = nnx.BatchNorm(c, use_running_average=True, rngs=nnx.Rngs(0))
        ev = {"BatchNorm": fwd["BatchNorm"],
              "BatchNorm, two-pass variance": fwd["BatchNorm, two-pass variance"],
              "BatchNorm eval (running stats)": (lambda f=_jit_forward(bn_eval): f(x))}
        for mode in ("single", "set"):
            ln = lf.LocalNorm(c, num_groups=k, deterministic=True, mode=mode, group=0,
                              rngs=nnx.Rngs(0))
            ev[f"LocalNorm {mode}"] = (lambda f=_jit_forward(ln): f(x))
        ghost = lf.GhostBatchNorm(c, num_groups=k, deterministic=True, rngs=nnx.Rngs(0))
        ev["GhostBatchNorm eval (running stats)"] = (lambda f=_jit_forward(ghost): f(x))
        t = compare(ev, baseline="BatchNorm", settings=ctx.settings, sync=_sync)
        rows = [R.row(t, nm, target=LAYER_TARGET if nm.startswith("LocalNorm") else None)
                for nm in ev if nm != "BatchNorm"]
        records.append(R.timing_record("layer", case.label, t, rows, op="eval", layout="NHWC"))
    return records


# ----------------------------------------------------------------------------- networks

class MnistNet(nnx.Module):
    """The paper's MNIST network (Input-16c-16c-32c-32c-512d-1024d-output), BatchNorm."""

    def __init__(self, classes: int, rngs: nnx.Rngs) -> None:
        self.convs = nnx.List()
        self.plan = []
        cin, size = 1, 28
        for v in MNIST_CONVS:
            if v == "M":
                self.plan.append("M")
                size //= 2
            else:
                self.convs.append(nnx.Conv(cin, v, (3, 3), use_bias=False, rngs=rngs))
                self.convs.append(nnx.BatchNorm(v, rngs=rngs))
                self.plan.append("C")
                cin = v
        self.dense = nnx.List()
        fin = cin * size * size
        for d in MNIST_DENSE:
            self.dense.append(nnx.Linear(fin, d, use_bias=False, rngs=rngs))
            self.dense.append(nnx.BatchNorm(d, rngs=rngs))
            fin = d
        self.head = nnx.Linear(fin, classes, rngs=rngs)

    def __call__(self, x):
        i = 0
        for p in self.plan:
            if p == "M":
                x = nnx.max_pool(x, (2, 2), (2, 2))
            else:
                x = nnx.relu(self.convs[i + 1](self.convs[i](x)))
                i += 2
        x = x.reshape(x.shape[0], -1)
        for j in range(0, len(self.dense), 2):
            x = nnx.relu(self.dense[j + 1](self.dense[j](x)))
        return self.head(x)


class Block(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        self.proj = stride != 1 or cin != cout
        if self.proj:
            self.sconv = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
            self.sbn = nnx.BatchNorm(cout, rngs=rngs)

    def __call__(self, x):
        out = nnx.relu(self.bn1(self.conv1(x)))
        short = self.sbn(self.sconv(x)) if self.proj else x
        return nnx.relu(self.bn2(self.conv2(out)) + short)


class ResNet20(nnx.Module):
    """CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels), BatchNorm."""

    def __init__(self, classes: int, rngs: nnx.Rngs) -> None:
        self.stem = nnx.Conv(3, 16, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.blocks = nnx.List()
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(3):
                self.blocks.append(Block(cin, cout, 2 if (i > 0 and j == 0) else 1, rngs))
                cin = cout
        self.head = nnx.Linear(cin, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(axis=(1, 2)))


class VGG(nnx.Module):
    """VGG-style network (:data:`benchmarks._cases.VGG_CFG`), BatchNorm."""

    def __init__(self, classes: int, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List()
        cin = 3
        for v in VGG_CFG:
            if v != "M":
                self.layers.append(nnx.Conv(cin, v, (3, 3), use_bias=False, rngs=rngs))
                self.layers.append(nnx.BatchNorm(v, rngs=rngs))
                cin = v
        self.head = nnx.Linear(cin, classes, rngs=rngs)

    def __call__(self, x):
        i = 0
        for v in VGG_CFG:
            if v == "M":
                x = nnx.max_pool(x, (2, 2), (2, 2))
            else:
                x = nnx.relu(self.layers[i + 1](self.layers[i](x)))
                i += 2
        return self.head(x.mean(axis=(1, 2)))


BUILDERS = {"mnist": MnistNet, "resnet20": ResNet20, "vgg11-half": VGG}


def _pair(net: NetCase, lf, partition: str = "contiguous"):
    """The BatchNorm network and its conversion by ``localnorm.flax.convert_batchnorm``
    (same initial weights)."""
    bn = BUILDERS[net.name](net.classes, nnx.Rngs(0))
    ln = lf.convert_batchnorm(BUILDERS[net.name](net.classes, nnx.Rngs(0)), num_groups=net.k,
                              partition=partition)
    return bn, ln


def _models(net: NetCase, lf) -> dict:
    bn, ln = _pair(net, lf)
    _, ln_strided = _pair(net, lf, "strided")
    return {"BatchNorm": bn, "LocalNorm contiguous": ln, "LocalNorm strided": ln_strided}


def _data(net: NetCase):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((net.batch, net.size, net.size, net.channels),
                                        dtype=np.float32))
    y = jnp.asarray(rng.integers(0, net.classes, net.batch))
    return x, y


_COMPILED: dict = {}


def _train_step(model, x, y, key=None):
    """A compiled SGD step on (params, other state, optimizer state, x, y); returns
    ``(step, carry)``. Compiled once per ``key`` (the timing and the memory figures of a
    network share one compilation)."""
    if key is not None and key in _COMPILED:
        return _COMPILED[key]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(1e-3, momentum=0.9)

    def step(params, rest, opt_state, x, y):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            logits = m(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, nnx.state(m, nnx.Not(nnx.Param))

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss

    carry = [params, rest, tx.init(params)]
    out = (jax.jit(step).lower(*carry, x, y).compile(), carry)
    if key is not None:
        _COMPILED[key] = out
    return out


def _network_records(ctx: Context, lf) -> list[dict]:
    records = []
    for net in ctx.networks:
        x, y = _data(net)
        fns = {}
        for name, model in _models(net, lf).items():
            step, carry = _train_step(model, x, y, (net, name))

            def call(step=step, carry=carry):
                *carry[:], loss = step(*carry, x, y)
                return loss

            fns[name] = call
        t = compare(fns, baseline="BatchNorm", settings=ctx.net_settings, sync=_sync)
        rows = [R.row(t, name, target=NETWORK_TARGET) for name in fns if name != "BatchNorm"]
        records.append(R.timing_record("network", net.label, t, rows, op="training step",
                                       layout="NHWC"))
    return records


def _protocol_records(ctx: Context, lf) -> list[dict]:
    """The protocols as ``localnorm.flax.predict`` runs them by default (the model under
    ``nnx.jit``, x checked for NaN/Inf up front), against the BatchNorm network in
    evaluation (running averages) under ``nnx.jit`` too."""
    net = ctx.protocol_net
    bn, ln = _pair(net, lf)
    x, _ = _data(net)
    bn.eval()
    infer = nnx.jit(lambda model, x: model(x))
    fns = {
        "BatchNorm inference": lambda: infer(bn, x),
        "BATCH": lambda: lf.predict(ln, x, protocol="batch").scores,
        "SINGLE": lambda: lf.predict(ln, x, protocol="single", generator=0).scores,
        "SINGLE-VOTING": lambda: lf.predict(ln, x, protocol="single-voting").scores,
    }
    t = compare(fns, baseline="BatchNorm inference", settings=ctx.net_settings, sync=_sync)
    rows = [R.row(t, "BATCH"), R.row(t, "SINGLE"),
            R.row(t, "SINGLE-VOTING", baseline="SINGLE", scale=float(net.k))]
    return [R.timing_record("protocol", f"{net.label}, {net.batch} test images", t, rows,
                            op="evaluation (under nnx.jit, as localnorm.flax.predict runs by "
                               "default)", layout="NHWC")]


def _memory_records(ctx: Context, lf) -> list[dict]:
    records = []
    for net in ctx.networks:
        x, y = _data(net)
        figures = {}
        for name, model in _models(net, lf).items():
            step, _ = _train_step(model, x, y, (net, name))
            figures[name] = int(step.memory_analysis().temp_size_in_bytes)
        records.append(R.memory_record(
            net.label, "BatchNorm", figures.pop("BatchNorm"), figures, layout="NHWC",
            method="XLA memory_analysis().temp_size_in_bytes of the jitted training step"))
    return records


def run(ctx: Context) -> dict:
    import flax

    lf = _adapter()
    dev = jax.devices()[0]
    sec = section("flax", "flax", device=f"{dev.platform}: {dev.device_kind}",
                  versions={"jax": jax.__version__, "flax": flax.__version__})
    sec["notes"] += [
        "Baselines: nnx.BatchNorm(use_running_average=False) (batch statistics; its unused "
        "running-average update is removed by XLA; its variance E[x^2] - E[x]^2 in one "
        "fused pass, flax's default use_fast_variance=True), the same with "
        "use_fast_variance=False (the two-pass variance) as a row, and "
        "nnx.GroupNorm(C, min(32, C)), on the same input. Layout: NHWC only (flax's own; nnx.Conv has no NCHW).",
        "Networks: NNX BatchNorm models converted with localnorm.flax.convert_batchnorm "
        "(each partition); one jitted SGD step (optax, momentum 0.9) per call.",
    ]
    parts = {"layer": _layer_records, "network": _network_records,
             "protocol": _protocol_records, "memory": _memory_records}
    for kind, fn in parts.items():
        if kind in ctx.kinds:
            guarded(sec, kind, lambda fn=fn: fn(ctx, lf))
    return sec
