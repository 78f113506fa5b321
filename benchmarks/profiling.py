"""Profiles behind ``discussion.md``: why a LocalNorm path costs what it costs.

Each experiment times the adapter's current path, the native BatchNorm and *variants*
(the same math written another way, or one ingredient of it alone) interleaved in one
run (:func:`benchmarks._timing.compare`), so that a ratio shows where the time goes; on
JAX, each row also carries the bytes XLA's cost analysis says the compiled function
accesses. Results go to ``benchmarks/profiles.json`` (``bench.json``'s layout: one
"section" per experiment), which the discussion cites by template, with the run's date,
load and source state::

    python -m localnorm.benchmarks.profiling all                 # every experiment, one process each
    python -m localnorm.benchmarks.profiling keras-tensorflow    # one experiment (prints its tables)

Experiments: ``torch`` (evaluation "single" and its NaN/Inf check, the contiguous
partition's layout copy), ``keras-tensorflow`` (strided groups: reductions over
non-adjacent axes), ``keras-jax`` ("single" under XLA: passes over the activation) and
``flax`` (the native paths against the core they replaced and against variants:
"single", the training forward, forward+backward). The variants here are evidence, not code paths of the
adapters; the discussion says which would be a fix and where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import _report as R
from ._cases import LayerCase, machine
from ._timing import Settings, compare

#: The settings of every experiment: more rounds than the benchmarks, since profiles are
#: often run on a loaded machine.
SETTINGS = Settings(rounds=15, warmup=1, min_sample_s=0.05)
#: The shapes profiled: the worst cases of the first full measurements.
CIFAR = LayerCase(128, 64, 32, 8)
CARS = LayerCase(16, 64, 56, 4)
EXPERIMENTS = ("torch", "keras-tensorflow", "keras-jax", "flax")


def _section(name: str, framework: str, versions: dict) -> dict:
    return {"name": name, "framework": framework, "backend": None, "device": "cpu",
            "status": "ok", "reason": "", "versions": versions, "notes": [], "records": []}


def _record(case: LayerCase, t, op: str, layout: str, rows: dict[str, dict] | None = None,
            baseline_extra: dict | None = None) -> dict:
    """A layer record with one row per candidate; ``rows`` adds fields to rows by name."""
    out = []
    for name in t.samples:
        if name == t.baseline:
            continue
        row = R.row(t, name)
        row.update((rows or {}).get(name, {}))
        out.append(row)
    rec = R.timing_record("layer", case.label, t, out, op=op, layout=layout)
    rec.update(baseline_extra or {})
    return rec


# ----------------------------------------------------------------------------- torch

def torch_experiment() -> dict:
    """Evaluation "single" against its ingredients and ``F.instance_norm``; the
    contiguous partition against one layout copy of its input."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn

    import localnorm.torch as lt

    sec = _section("torch", "torch", {"torch": torch.__version__,
                                      "threads": torch.get_num_threads()})
    n, c, h, k = CIFAR
    x = torch.randn(n, c, h, h, generator=torch.Generator().manual_seed(0))
    gy = torch.randn_like(x)
    bn = nn.BatchNorm2d(c, track_running_stats=False)
    single = lt.LocalNorm2d(c, num_groups=k).eval()
    lt.set_eval_mode(single, "single", group=0)
    unchecked = copy.deepcopy(single)
    unchecked.check_finite = False
    w, b = single.weight[0].detach(), single.bias[0].detach()
    fns = {"BatchNorm2d": lambda: bn(x),
           "LocalNorm2d single": lambda: single(x),
           "LocalNorm2d single, check_finite=False": lambda: unchecked(x),
           "NaN/Inf check alone (one sum of x, as the layer checks)":
               lambda: bool(torch.isfinite(x.sum())),
           "F.instance_norm with group 0's weight": lambda: F.instance_norm(
               x, weight=w, bias=b, eps=1e-5)}
    with torch.no_grad():
        t = compare(fns, baseline="BatchNorm2d", settings=SETTINGS)
    sec["records"].append(_record(CIFAR, t, "eval single", "NCHW"))

    xg = x.clone().requires_grad_(True)
    m = n // k
    layers = {part: lt.LocalNorm2d(c, num_groups=k, partition=part)
              for part in ("contiguous", "strided")}

    def fb(layer):
        return lambda: torch.autograd.grad(layer(xg), [xg] + list(layer.parameters()), gy)

    fns = {"BatchNorm2d": fb(bn),
           "LocalNorm2d contiguous": fb(layers["contiguous"]),
           "LocalNorm2d strided": fb(layers["strided"]),
           "one layout copy of x (contiguous groups side by side)":
               lambda: x.reshape(k, m, c, h, h).transpose(0, 1).contiguous()}
    tfn = sys.modules[type(layers["contiguous"]).__module__.rsplit(".", 1)[0] + "._functional"]
    if hasattr(tfn, "_native"):  # the adapter's native path with its CUDA layout copies, forced
        ln = layers["contiguous"]

        def fused():
            xv, back = tfn._native(xg, k, "contiguous", copies=True)
            y = back(F.batch_norm(xv, None, None, ln.weight.reshape(-1), ln.bias.reshape(-1),
                                  True, 0.0, ln.eps))
            return torch.autograd.grad(y, [xg, ln.weight, ln.bias], gy)

        fns["contiguous by the fused path: layout copies around one F.batch_norm"] = fused
    t = compare(fns, baseline="BatchNorm2d", settings=SETTINGS)
    sec["records"].append(_record(CIFAR, t, "forward+backward", "NCHW"))
    return sec


# ----------------------------------------------------------------------------- keras-tensorflow

def keras_tensorflow_experiment() -> dict:
    """Strided groups on TensorFlow: the statistics' reduction over non-adjacent axes,
    alone and in the layer, against the same math with the spatial axes reduced first."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import ops

    import localnorm.keras as lk

    sec = _section("keras-tensorflow", "keras", {"keras": keras.__version__,
                                                 "tensorflow": tf.__version__})
    n, c, h, k = CIFAR
    m = n // k
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((n, h, h, c), dtype=np.float32))
    gy = tf.constant(rng.standard_normal((n, h, h, c), dtype=np.float32))

    def layer_fn(layer, grad):
        layer.build(x.shape)
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]
        if not grad:
            f = tf.function(lambda x: layer.stateless_call(tv, ntv, x, training=True)[0])
            return lambda: f(x)

        @tf.function
        def fb(x, gy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                tape.watch(tv)
                y = layer.stateless_call(tv, ntv, x, training=True)[0]
            return tape.gradient(y, [x] + tv, output_gradients=gy)

        return lambda: fb(x, gy)

    def strided_variant(per_sample: bool):
        """``_ops.local_norm``'s strided branch with each mean taken over the spatial axes
        first (adjacent: one pass over x), then over the group's samples (a tiny tensor);
        with ``per_sample``, the statistics and the shift are also broadcast to one row
        per sample, (m, K, 1, 1, C), before they meet the activation, so the gradients
        TensorFlow derives for them reduce adjacent (spatial) axes only."""
        def mean(v):
            s = ops.mean(ops.mean(v, axis=(2, 3), keepdims=True), axis=0, keepdims=True)
            return ops.broadcast_to(s, (m, k, 1, 1, c)) if per_sample else s

        def fn(x, gamma, beta):
            xr = ops.reshape(x, (m, k, h, h, c))
            mu = mean(xr)
            d = xr - mu
            scale = ops.reshape(gamma, (1, k, 1, 1, c)) * ops.rsqrt(mean(ops.square(d)) + 1e-5)
            shift = ops.reshape(beta, (1, k, 1, 1, c))
            if per_sample:
                shift = ops.broadcast_to(shift, (m, k, 1, 1, c))
            return ops.reshape(d * scale + shift, (n, h, h, c))

        return fn

    gamma, beta = tf.ones((k, c)), tf.zeros((k, c))

    def variant(fn, grad):
        if not grad:
            f = tf.function(lambda x: fn(x, gamma, beta))
            return lambda: f(x)

        @tf.function
        def fb(x, gy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                tape.watch([gamma, beta])
                y = fn(x, gamma, beta)
            return tape.gradient(y, [x, gamma, beta], output_gradients=gy)

        return lambda: fb(x, gy)

    mean_strided = tf.function(lambda x: tf.reduce_mean(tf.reshape(x, (m, k, h, h, c)),
                                                        axis=(0, 2, 3)))
    mean_contiguous = tf.function(lambda x: tf.reduce_mean(tf.reshape(x, (k, m, h, h, c)),
                                                           axis=(1, 2, 3)))
    for op, grad in (("forward", False), ("forward+backward", True)):
        fns = {"BatchNormalization": layer_fn(keras.layers.BatchNormalization(), grad),
               "LocalNormalization contiguous": layer_fn(lk.LocalNormalization(num_groups=k),
                                                         grad),
               "LocalNormalization strided": layer_fn(
                   lk.LocalNormalization(num_groups=k, partition="strided"), grad),
               "strided, spatial axes reduced first (variant)":
                   variant(strided_variant(False), grad),
               "strided, spatial axes first, statistics broadcast per sample (variant)":
                   variant(strided_variant(True), grad)}
        if not grad:
            fns["strided group mean alone: reduce_mean over axes (0, 2, 3)"] = \
                lambda: mean_strided(x)
            fns["contiguous group mean alone: reduce_mean over axes (1, 2, 3)"] = \
                lambda: mean_contiguous(x)
        t = compare(fns, baseline="BatchNormalization", settings=SETTINGS,
                    sync=lambda out: [v.numpy() for v in tf.nest.flatten(out)])
        sec["records"].append(_record(CIFAR, t, op, "NHWC"))
    return sec


# ----------------------------------------------------------------------------- jax

def _xla(fn, *args):
    """``fn`` compiled ahead of time for ``args``: (zero-argument call, bytes accessed)."""
    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (lambda: compiled(*args)), float(cost.get("bytes accessed", 0.0))


def _jax_record(case, candidates: dict, baseline: str, op: str) -> dict:
    import jax

    t = compare({n: f for n, (f, _) in candidates.items()}, baseline=baseline,
                settings=SETTINGS, sync=jax.block_until_ready)
    base_bytes = candidates[baseline][1]
    rows = {n: {"xla_bytes": b, "xla_bytes_ratio": b / base_bytes}
            for n, (_, b) in candidates.items()}
    return _record(case, t, op, "NHWC", rows, {"baseline_xla_bytes": base_bytes})


def _shifted_sums(jax, v, shift, axes):
    """Sums of ``v - shift`` and of its square over ``axes`` in one variadic
    ``jax.lax.reduce``: one read of ``v`` for both (XLA on CPU does not fuse a broadcast
    subtraction into two separate reductions; it writes it out and reads it twice)."""
    import numpy as np

    d = v - shift
    zero = np.zeros((), v.dtype)
    return jax.lax.reduce((d, d * d), (zero, zero),
                          lambda a, b: (a[0] + b[0], a[1] + b[1]), axes)


def _single_variants(jnp, jax):
    """Per-sample statistics (the "single" mode of an NHWC input, axes 1 and 2) written
    three ways; the output is the normalized x (no scale or shift) in each."""
    red = (1, 2)

    def two_pass(x):  # mean, then the mean of squared deviations (as _ops.py does)
        mu = x.mean(red, keepdims=True)
        d = x - mu
        return d * jax.lax.rsqrt((d * d).mean(red, keepdims=True) + 1e-5)

    def fast_variance(x):  # E[x^2] - E[x]^2, as nnx.BatchNorm(use_fast_variance=True)
        mu = x.mean(red, keepdims=True)
        var = jnp.maximum((x * x).mean(red, keepdims=True) - mu * mu, 0.0)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5)

    def shifted(x):  # both sums about each sample's first pixel, one read
        s = jax.lax.stop_gradient(x[:, :1, :1, :])
        count = x.shape[1] * x.shape[2]
        s1, s2 = (v[:, None, None, :] / count for v in _shifted_sums(jax, x, s, red))
        var = jnp.maximum(s2 - s1 * s1, 0.0)
        return (x - (s + s1)) * jax.lax.rsqrt(var + 1e-5)

    return {"plain two-pass per-sample moments, jnp (variant)": two_pass,
            "E[x^2] - E[x]^2 per-sample moments, jnp (variant)": fast_variance,
            "shifted one-pass per-sample moments, one lax.reduce (variant)": shifted}


def keras_jax_experiment() -> dict:
    """keras-jax "single": the layer against the same statistics written with fewer
    passes, and the bytes XLA says each accesses."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    import localnorm.keras as lk

    sec = _section("keras-jax", "keras", {"keras": keras.__version__, "jax": jax.__version__})
    n, c, h, k = CARS
    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, h, h, c), dtype=np.float32))

    def layer(lay, training):
        lay.build(x.shape)
        tv = [v.value for v in lay.trainable_variables]
        ntv = [v.value for v in lay.non_trainable_variables]
        f, nbytes = _xla(lambda tv, ntv, x: lay.stateless_call(tv, ntv, x, training=training)[0],
                         tv, ntv, x)
        return f, nbytes

    cands = {"BatchNormalization": layer(keras.layers.BatchNormalization(), True),
             "LocalNormalization single": layer(
                 lk.LocalNormalization(num_groups=k, mode="single"), False)}
    for name, fn in _single_variants(jnp, jax).items():
        cands[name] = _xla(fn, x)
    sec["records"].append(_jax_record(CARS, cands, "BatchNormalization", "eval single"))
    return sec


def group_variants(k: int, m: int, h: int, c: int):
    """Two ways to normalize K contiguous groups (along the batch axis) of m samples of an
    (N, H, W, C) input, with (K, C) scale ``g`` and shift ``b``: ``plain(g, b, x)``, a plain
    two-pass differentiated by JAX, and ``closed(g, b, x)``, the same forward with the
    closed-form BatchNorm backward per group (``jax.custom_vjp``: the sums of dy and of
    dy * xhat, then one elementwise pass for dx). Equal up to float32 rounding
    (tests/bench/test_profiling.py)."""
    import jax

    red = (1, 2, 3)  # of the (K, m, H, W, C) view
    count = m * h * h

    def bcast(p):
        return p[:, None, None, None, :]

    def plain(g, b, x):
        xr = x.reshape(k, m, h, h, c)
        mu = xr.mean(red, keepdims=True)
        d = xr - mu
        return (d * (jax.lax.rsqrt((d * d).mean(red, keepdims=True) + 1e-5) * bcast(g))
                + bcast(b)).reshape(x.shape)

    def closed_fwd(g, b, x):
        xr = x.reshape(k, m, h, h, c)
        mu = xr.mean(red, keepdims=True)
        d = xr - mu
        rstd = jax.lax.rsqrt((d * d).mean(red, keepdims=True) + 1e-5)
        return (d * (rstd * bcast(g)) + bcast(b)).reshape(x.shape), (x, mu, rstd, g)

    @jax.custom_vjp
    def closed(g, b, x):
        return closed_fwd(g, b, x)[0]

    def closed_bwd(res, dy):
        x, mu, rstd, g = res
        xr, dyr = x.reshape(k, m, h, h, c), dy.reshape(k, m, h, h, c)
        xhat = (xr - mu) * rstd
        db, dg = dyr.sum(red), (dyr * xhat).sum(red)
        dx = (bcast(g) * rstd) * (dyr - bcast(db) / count - xhat * bcast(dg) / count)
        return dg, db, dx.reshape(x.shape)

    closed.defvjp(closed_fwd, closed_bwd)
    return plain, closed


def _flax_eval_variants(jnp, jax):
    """Per-sample ("single") statistics of an NHWC input written two more ways than
    :func:`_single_variants`, normalized x out: the core's corrected two-pass with each
    use of the centered x computed from x again (``x - mean0`` for the correction,
    ``x + (-mean0)`` for the variance: the same bits, but XLA's common-subexpression pass
    keeps them apart, so no centered copy is written), and E[x^2] - E[x]^2 guarded by a
    ``jax.lax.cond`` that takes a two-pass variance whenever any set's mean^2 exceeds 16
    times its variance (the accuracy bound of the fast formula)."""
    red = (1, 2)

    def mean(a):
        return a.mean(red, keepdims=True)

    def centered_twice(x):
        mean0 = mean(x)
        mu = mean0 + mean(x - mean0)
        d2 = x + (-mean0)
        return (x - mu) * jax.lax.rsqrt(mean(d2 * d2) + 1e-5)

    def guarded(x):
        mu = mean(x)
        fast = jnp.maximum(mean(x * x) - mu * mu, 0.0)
        ok = jnp.all(mu * mu <= 16.0 * (fast + 1e-5))
        var = jax.lax.cond(ok, lambda: fast, lambda: mean(jnp.square(x - mu)))
        return (x - mu) * jax.lax.rsqrt(var + 1e-5)

    return {"corrected two-pass, centered twice, no centered copy (variant)": centered_twice,
            "E[x^2] - E[x]^2 guarded by lax.cond, fast branch (variant)": guarded}


def flax_experiment() -> dict:
    """flax: the layer's native paths (``backends/flax/_functional.py``) against
    ``nnx.BatchNorm``, the array-API core they replaced (``localnorm.local_norm`` under
    jax.jit, differentiated by JAX) and variants with fewer passes over the activation:
    evaluation "single", the training forward, and forward+backward."""
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import localnorm
    import localnorm.flax as lf

    sec = _section("flax", "flax", {"jax": jax.__version__, "flax": flax.__version__})
    n, c, h, k = CARS
    m = n // k
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, h, c), dtype=np.float32))
    gy = jnp.asarray(rng.standard_normal((n, h, h, c), dtype=np.float32))
    g0, b0 = jnp.ones((k, c)), jnp.zeros((k, c))

    def fwd(layer):
        graphdef, state = nnx.split(layer)
        return _xla(lambda state, x: nnx.merge(graphdef, state, copy=True)(x), state, x)

    def bn():
        return nnx.BatchNorm(c, use_running_average=False, rngs=nnx.Rngs(0))

    def core(mode):
        return lambda g, b, x: localnorm.local_norm(x, g, b, mode=mode, check_finite=False)

    cands = {"BatchNorm": fwd(bn()),
             "LocalNorm single": fwd(lf.LocalNorm(c, num_groups=k, deterministic=True,
                                                  mode="single", rngs=nnx.Rngs(0))),
             "local_norm core, single (corrected two-pass)": _xla(core("single"), g0, b0, x)}
    for name, fn in {**_single_variants(jnp, jax), **_flax_eval_variants(jnp, jax)}.items():
        cands[name] = _xla(fn, x)
    guarded = _flax_eval_variants(jnp, jax)[
        "E[x^2] - E[x]^2 guarded by lax.cond, fast branch (variant)"]
    cands["E[x^2] - E[x]^2 guarded by lax.cond, input offset by 100 std: two-pass branch "
          "(variant)"] = _xla(guarded, x + 100.0)
    sec["records"].append(_jax_record(CARS, cands, "BatchNorm", "eval single"))

    # the training forward and forward+backward, contiguous groups: the layer, the core
    # it replaced, and the profiled group variants (plain two-pass; closed-form vjp)
    plain, closed = group_variants(k, m, h, c)

    def centered_twice(g, b, x):  # the layer's forward, no centered copy
        xr = x.reshape(k, m, h, h, c)
        red = (1, 2, 3)
        mean0 = xr.mean(red, keepdims=True)
        mu = mean0 + (xr - mean0).mean(red, keepdims=True)
        d2 = xr + (-mean0)
        rstd = jax.lax.rsqrt((d2 * d2).mean(red, keepdims=True) + 1e-5)
        return ((xr - mu) * (rstd * g[:, None, None, None, :])
                + b[:, None, None, None, :]).reshape(x.shape)

    cands = {"BatchNorm": fwd(bn()),
             "LocalNorm contiguous": fwd(lf.LocalNorm(c, num_groups=k, rngs=nnx.Rngs(0))),
             "local_norm core, contiguous": _xla(core("batch"), g0, b0, x),
             "contiguous, plain two-pass (variant)": _xla(plain, g0, b0, x),
             "contiguous, corrected two-pass, centered twice, no centered copy (variant)":
                 _xla(centered_twice, g0, b0, x)}
    sec["records"].append(_jax_record(CARS, cands, "BatchNorm", "forward"))

    def fb_layer(layer):
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def fb(params, x, gy):
            _, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x), params, x)
            return vjp(gy)

        return _xla(fb, params, x, gy)

    def fb_fn(fn):
        def fb(g, b, x, gy):
            _, vjp = jax.vjp(fn, g, b, x)
            return vjp(gy)

        return _xla(fb, g0, b0, x, gy)

    cands = {"BatchNorm": fb_layer(bn()),
             "LocalNorm contiguous": fb_layer(lf.LocalNorm(c, num_groups=k, rngs=nnx.Rngs(0))),
             "LocalNorm strided": fb_layer(lf.LocalNorm(c, num_groups=k, partition="strided",
                                                        rngs=nnx.Rngs(0))),
             "local_norm core, contiguous, autodiff": fb_fn(core("batch")),
             "contiguous, plain two-pass, autodiff (variant)": fb_fn(plain),
             "contiguous, plain two-pass, closed-form custom_vjp (variant)": fb_fn(closed)}
    sec["records"].append(_jax_record(CARS, cands, "BatchNorm", "forward+backward"))
    return sec


RUNNERS = {"torch": torch_experiment, "keras-tensorflow": keras_tensorflow_experiment,
           "keras-jax": keras_jax_experiment, "flax": flax_experiment}


# ----------------------------------------------------------------------------- driver

def _source_state(root: Path) -> dict:
    """The commit profiled and the source files changed since (the shared checkout moves)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "localnorm",
                                        "backends").splitlines() if line[:2].strip()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": changed}


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return ""


def run_all(out: Path, names=EXPERIMENTS, timeout: float = 1800.0) -> dict:
    """Run each experiment in its own process (Keras fixes its backend per process) and
    write them all to ``out``."""
    root = Path(__file__).resolve().parents[1]
    load = [_load()]
    doc = {"schema": R.SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc)
           .isoformat(timespec="seconds"), "quick": False,
           "command": "python -m localnorm.benchmarks.profiling all", "settings": SETTINGS.as_dict(),
           "machine": machine(), "source": _source_state(root), "sections": []}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(root)] + [p for p in [os.environ.get(
                   "PYTHONPATH")] if p]))
    for name in names:
        with _tmp_json() as path:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", f"{__package__}.profiling", name,
                                   "--out", str(path)], cwd=root, env=env, capture_output=True,
                                  text=True, timeout=timeout)
            if proc.returncode == 0:
                sec = json.loads(path.read_text(encoding="utf-8"))
            else:
                sec = _section(name, name.split("-")[0], {})
                sec.update(status="error", reason=(proc.stderr.strip().splitlines()
                                                   or ["failed"])[-1])
            sec["seconds"] = round(time.perf_counter() - t0, 1)
        doc["sections"].append(sec)
        load.append(_load())
        print(f"profiling: {name}: {sec['status']} in {sec['seconds']} s", file=sys.stderr)
    doc["load_average"] = " / ".join(dict.fromkeys(x for x in load if x))
    R.dump(doc, out)
    return doc


class _tmp_json:
    def __enter__(self):
        import tempfile

        fd, name = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m localnorm.benchmarks.profiling",
                                description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=EXPERIMENTS + ("all",))
    p.add_argument("--out", help="JSON output (default: print tables; with 'all': "
                   "benchmarks/profiles.json)")
    a = p.parse_args(argv)
    if a.experiment == "all":
        out = Path(a.out) if a.out else R.PROFILES
        doc = run_all(out)
        print(f"wrote {out}", file=sys.stderr)
        return 1 if any(s["status"] != "ok" for s in doc["sections"]) else 0
    sec = RUNNERS[a.experiment]()
    if a.out:
        R.dump(sec, a.out)
    else:
        print("\n".join(R.section_tables(sec["records"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
