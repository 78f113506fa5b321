"""The Flax adapter's autodiff glue (``localnorm.flax._functional``): ``"batch"`` mode's
closed-form derivative (a ``jax.custom_jvp`` around the core's ``batch_forward`` with
``batch_jvp`` as its rule) against JAX's autodiff of the array-API core, in every order
and direction; its dtypes; the accuracy of every mode under ``jax.jit`` against the
conformance tolerance, at large offsets; and a batch smaller than K under ``nnx.jit``.
(The conformance suite holds the layers to the NumPy reference; this file holds what it
does not check.)"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

import localnorm  # noqa: E402
from localnorm.conformance import tolerances  # noqa: E402
from localnorm.conformance.harness import Case  # noqa: E402
from localnorm.flax import LocalNorm  # noqa: E402
from localnorm.flax import _functional as fn  # noqa: E402

#: (shape, channel axis, K, partition): even and ragged batches along the batch axis,
#: both partitions, rank 2 to 4, channels last and not last.
CASES = [
    ((12, 5, 3), -1, 4, "contiguous"),
    ((14, 3, 2, 2), 1, 4, "strided"),
    ((13, 4), -1, 3, "contiguous"),
    ((11, 2, 3, 4), -1, 3, "strided"),
    ((8, 3), -1, 4, "strided"),
]


def _layer_and_core(shape, axis, k, partition, rng):
    """``native(x, scale, bias)`` (the NNX layer in training, through nnx.split/merge)
    and ``core(x, scale, bias)`` (:func:`localnorm.local_norm`, differentiated by JAX),
    with float64 arguments."""
    c = shape[axis]
    layer = LocalNorm(c, num_groups=k, axis=axis, partition=partition,
                      param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, _, rest = nnx.split(layer, nnx.Param, ...)

    def native(x, scale, bias):
        params = nnx.State({"scale": nnx.Param(scale), "bias": nnx.Param(bias)})
        return nnx.merge(graphdef, params, rest, copy=True)(x)

    def core(x, scale, bias):
        return localnorm.local_norm(x, scale, bias, axis=axis, partition=partition,
                                    check_finite=False)

    args = (jnp.asarray(rng.normal(size=shape) * 3 + 5), jnp.asarray(rng.normal(size=(k, c))),
            jnp.asarray(rng.normal(size=(k, c))))
    return native, core, args


@pytest.mark.parametrize("shape,axis,k,partition", CASES)
def test_derivatives_equal_autodiff_of_the_core(shape, axis, k, partition):
    """Reverse mode, forward mode, and second order (grad of grad, jacfwd of grad) of the
    layer in training equal JAX's autodiff of the array-API core."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(sum(shape) + k)
        native, core, args = _layer_and_core(shape, axis, k, partition, rng)
        ct = jnp.asarray(rng.normal(size=shape))
        tangents = tuple(jnp.asarray(rng.normal(size=a.shape)) for a in args)
        r1, r2 = (jnp.asarray(rng.normal(size=shape)) for _ in range(2))

        def derivatives(f_is_native):
            f = native if f_is_native else core

            def inner(*a):  # <d loss / dx, r2>, differentiated again below
                return jnp.sum(jax.grad(lambda *a: jnp.sum(f(*a) ** 3 * r1))(*a) * r2)

            def hessian_rows(x):  # jacfwd of grad: forward over reverse
                return jax.jacfwd(jax.grad(lambda x: jnp.sum(jnp.sin(f(x, *args[1:])))))(x)

            return (f(*args), jax.vjp(f, *args)[1](ct), jax.jvp(f, args, tangents)[1],
                    jax.grad(inner, argnums=(0, 1, 2))(*args), hessian_rows(args[0]))

        derivatives = jax.jit(derivatives, static_argnums=0)
        got, want = derivatives(True), derivatives(False)
        names = ("forward", "vjp", "jvp", "grad of grad", "jacfwd of grad")
        for name, g, w in zip(names, got, want):
            for gl, wl in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
                np.testing.assert_allclose(gl, wl, rtol=1e-9, atol=1e-9, err_msg=name)


def _activation_sums(f, x, *params, backward=True):
    """How many sums over a whole activation-sized array one forward (+backward) of ``f``
    takes (``reduce_sum`` equations of the (vjp's) jaxpr whose operand has x's size)."""
    if backward:
        jaxpr = jax.make_jaxpr(lambda x, ct: jax.vjp(lambda x: f(x, *params), x)[1](ct))(x, x)
    else:
        jaxpr = jax.make_jaxpr(lambda x: f(x, *params))(x)
    count = 0

    def walk(j):
        nonlocal count
        for eqn in j.eqns:
            if eqn.primitive.name == "reduce_sum" and eqn.invars[0].aval.size == x.size:
                count += 1
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", p)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jaxpr.jaxpr)
    return count


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_batch_mode_backward_is_the_closed_form(partition):
    """Training runs the custom rule, and its backward adds two sums over the activation
    (of dy and of dy * xhat) to the forward's (each sample's moments, the groups' from
    those by the law of total variance); JAX's autodiff of the core takes more."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4, 4, 3)), jnp.float32)
    layer = LocalNorm(3, num_groups=4, partition=partition, rngs=nnx.Rngs(0))
    names = [e.primitive.name for e in jax.make_jaxpr(lambda x: layer(x))(x).jaxpr.eqns]
    assert "custom_jvp_call" in names
    scale, bias = jnp.ones((4, 3)), jnp.zeros((4, 3))

    def native(x, s, b):
        return fn.batch_norm_groups(x, s, b, 4, partition, 3, 1e-5)

    forward = _activation_sums(native, x, scale, bias, backward=False)
    both = _activation_sums(native, x, scale, bias)
    core = _activation_sums(lambda x, s, b: localnorm.local_norm(
        x, s, b, partition=partition, check_finite=False), x, scale, bias)
    assert forward >= 2 and both == forward + 2 < core


def test_bfloat16_derivatives_keep_the_dtypes_and_float32_statistics():
    """bfloat16 activations: dx in bfloat16, dscale/dbias in the parameters' float32, and
    the values those of the float32 computation on the same (bfloat16) input, rounded."""
    rng = np.random.default_rng(3)
    x16 = jnp.asarray(rng.normal(size=(8, 6, 6, 4)) * 2 + 30, jnp.bfloat16)
    ct16 = jnp.asarray(rng.normal(size=x16.shape), jnp.bfloat16)
    scale = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)

    def f(x, s, b):
        return fn.batch_norm_groups(x, s, b, 4, "contiguous", 3, 1e-5)

    y16, vjp16 = jax.vjp(f, x16, scale, bias)
    y32, vjp32 = jax.vjp(f, x16.astype(jnp.float32), scale, bias)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(y16.astype(jnp.float32), y32, rtol=2**-7, atol=2**-7 * 4)
    got, want = vjp16(ct16), vjp32(ct16.astype(jnp.float32))
    assert [g.dtype for g in got] == [jnp.bfloat16, jnp.float32, jnp.float32]
    np.testing.assert_allclose(got[0].astype(jnp.float32), want[0], rtol=2**-7,
                               atol=2**-7 * float(jnp.abs(want[0]).max()))
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def _fast_variance(x, mode):
    """E[x^2] - E[x]^2 (nnx.BatchNorm's default), normalized: the formulation the
    evaluation modes must not use."""
    axes = (1, 2) if mode == "single" else (0, 1, 2)
    mean = x.mean(axes, keepdims=True)
    var = jnp.maximum((x * x).mean(axes, keepdims=True) - mean * mean, 0.0)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5)


@pytest.mark.parametrize("mode", ["single", "set"])
@pytest.mark.parametrize("shape,offset,spread", [
    ((2, 56, 56, 4), 1e3, 1.0),      # the paper's 56x56 maps, 10^3 std of offset
    ((8, 16, 16, 4), 1e4, 1.0),       # 10^4 std of offset
    ((8, 8, 8, 16), 100.0, 1e-3),     # near-constant sets: spread below sqrt(eps)
])
def test_eval_two_pass_is_well_within_the_conformance_tolerance(mode, shape, offset, spread):
    """The evaluation modes' moments (the core's corrected two-pass per sample; "set":
    then the law of total variance over the batch), the layer under nnx.jit, on float32
    input with a large offset: within a quarter of the conformance tolerance, where E[x^2] - E[x]^2 on the same input is outside it
    (the input is hard enough to tell them apart)."""
    rng = np.random.default_rng(4)
    x = (offset + spread * rng.standard_normal(shape)).astype(np.float32)
    ones, zeros = np.ones((2, shape[-1])), np.zeros((2, shape[-1]))
    case = Case(x=x, gamma=ones, beta=zeros, axis=-1, mode=mode, group=1)
    want = tolerances.expected(case)
    tol = tolerances.tolerance(case, want)
    layer = LocalNorm(shape[-1], num_groups=2, deterministic=True, mode=mode, group=1,
                      rngs=nnx.Rngs(0))
    f = nnx.jit(lambda layer, x: layer(x))
    err = np.abs(np.asarray(f(layer, jnp.asarray(x)), np.float64) - want)
    assert np.all(err <= 0.25 * tol), f"max error / tolerance = {(err / tol).max():.3f}"
    fast = np.asarray(jax.jit(lambda x: _fast_variance(x, mode))(jnp.asarray(x)), np.float64)
    assert np.any(np.abs(fast - want) > tol)


def _fast_batch(x, k, partition):
    """E[x^2] - E[x]^2 per group along the batch axis (float32, as nnx.BatchNorm's
    default computes it), normalized: what "batch" mode must not use."""
    spatial = tuple(range(1, x.ndim - 1))
    gidx = jnp.asarray(localnorm.group_index(x.shape[0], k, partition))
    count = jax.ops.segment_sum(jnp.ones(x.shape[0]), gidx, k)[:, None]

    def group_mean(v):
        per_sample = v.mean(spatial) if spatial else v
        return jax.ops.segment_sum(per_sample, gidx, k) / count

    mean = group_mean(x)
    var = jnp.maximum(group_mean(x * x) - mean * mean, 0.0)
    shape = (x.shape[0],) + (1,) * len(spatial) + (x.shape[-1],)
    return (x - mean[gidx].reshape(shape)) * jax.lax.rsqrt(var[gidx] + 1e-5).reshape(shape)


@pytest.mark.parametrize("shape,k,partition,offset,spread", [
    ((8, 56, 56, 4), 4, "contiguous", 1e3, 1.0),   # the paper's 56x56 maps
    ((12, 16, 16, 4), 4, "strided", 1e4, 1.0),      # 10^4 std of offset
    ((14, 16, 16, 4), 4, "contiguous", 1e4, 1.0),   # ragged: N % K != 0
    ((11, 8, 8, 16), 3, "strided", 100.0, 1e-3),    # ragged, spread below sqrt(eps)
    ((18, 4), 4, "contiguous", 1e4, 1.0),           # no spatial axes, ragged
])
def test_batch_mode_law_of_total_variance_is_well_within_the_tolerance(
        shape, k, partition, offset, spread):
    """"batch" mode's per-sample corrected two-pass moments combined over each group's
    samples by the law of total variance, under jax.jit, on float32 input with a large
    offset: within a quarter of the conformance tolerance, forward and
    backward (against the core differentiated by JAX in float64), where E[x^2] - E[x]^2
    on the same input is outside it."""
    rng = np.random.default_rng(5)
    x = (offset + spread * rng.standard_normal(shape)).astype(np.float32)
    c = shape[-1]
    gamma, beta = rng.normal(size=(k, c)), rng.normal(size=(k, c))
    case = Case(x=x, gamma=gamma, beta=beta, axis=-1, mode="batch", partition=partition)
    want = tolerances.expected(case)
    tol = tolerances.tolerance(case, want)
    f = jax.jit(lambda x, s, b: fn.batch_norm_groups(x, s, b, k, partition, x.ndim - 1, 1e-5))
    args32 = (jnp.asarray(x), jnp.asarray(gamma, jnp.float32), jnp.asarray(beta, jnp.float32))
    err = np.abs(np.asarray(f(*args32), np.float64) - want)
    assert np.all(err <= 0.25 * tol), f"max error / tolerance = {(err / tol).max():.3f}"
    fast = np.asarray(jax.jit(_fast_batch, static_argnums=(1, 2))(jnp.asarray(x), k,
                                                                   partition), np.float64)
    fast = fast * gamma[localnorm.group_index(shape[0], k, partition)].reshape(
        (shape[0],) + (1,) * (len(shape) - 2) + (c,))
    assert np.any(np.abs(fast - (want - beta[localnorm.group_index(
        shape[0], k, partition)].reshape((shape[0],) + (1,) * (len(shape) - 2) + (c,))))
        > tol)
    # the backward: within a quarter of the conformance suite's gradient tolerances
    ct = rng.standard_normal(shape)
    got = jax.vjp(f, *args32)[1](jnp.asarray(ct, jnp.float32))
    with jax.enable_x64(True):
        core = jax.vjp(lambda x, s, b: localnorm.local_norm(
            x, s, b, partition=partition, check_finite=False),
            jnp.asarray(x, jnp.float64), jnp.asarray(gamma), jnp.asarray(beta))[1](
            jnp.asarray(ct))
    for name, g, w, bound in zip(("dx", "dscale", "dbias"), got, core,
                                 tolerances.grad_tolerance(case, ct)):
        err = np.abs(np.asarray(g, np.float64) - np.asarray(w)).max()
        assert err <= 0.25 * bound, f"{name}: max error / tolerance = {err / bound:.3f}"


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_fewer_samples_than_groups_in_training_is_refused_under_nnx_jit(partition):
    """A training batch smaller than K is refused at trace time (from static shapes) with
    the project's error, under nnx.jit as in eager calls: never a silent result."""
    layer = LocalNorm(3, num_groups=4, partition=partition, rngs=nnx.Rngs(0))
    x = jnp.ones((3, 5, 3))
    for call in (lambda: nnx.jit(lambda m, x: m(x))(layer, x), lambda: layer(x)):
        with pytest.raises(localnorm.LocalNormError, match="(?i)group"):
            call()


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_unchecked_batch_smaller_than_k_is_finite_with_zero_gradient_for_empty_groups(
        partition):
    """Where no check runs (the training glue itself, compiled), a batch smaller than K
    follows the core's definition: finite output equal to each sample normalized in its
    own group, and zero gradients for the parameters of the groups without samples."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(3, 5, 2)) * 2 + 1, jnp.float32)
    scale = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)

    def loss(x, s, b):
        return jnp.sum(jnp.sin(fn.batch_norm_groups(x, s, b, 5, partition, 2, 1e-5)))

    y = jax.jit(lambda x, s, b: fn.batch_norm_groups(x, s, b, 5, partition, 2, 1e-5))(
        x, scale, bias)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, scale, bias)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in (y, *grads))
    # N = 3 < K = 5: samples 0..2 are alone in groups 0..2 (either partition)
    mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    want = (x - mean) / jnp.sqrt(var + 1e-5) * scale[:3, None, :] + bias[:3, None, :]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    for g in grads[1:]:
        assert bool(jnp.any(g[:3] != 0)) and bool(jnp.all(g[3:] == 0))


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_compiled_layer_writes_no_centered_copy(mode):
    """The layer asks the core for its ``fusing`` moments: XLA then fuses every centering
    into the reduction or output that reads it, so the compiled layer accesses fewer bytes
    (XLA's cost model, not a timing) than the same math with one centered array read by
    two reductions, which XLA on CPU writes out and reads back."""
    from localnorm import _agnostic

    x = jnp.asarray(np.random.default_rng(8).normal(size=(16, 8, 8, 32)), jnp.float32)
    layer = LocalNorm(32, num_groups=4, deterministic=mode != "batch", mode=mode,
                      rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    g, b = layer.scale[...], layer.bias[...]

    def accessed(f, *args):
        cost = jax.jit(f).lower(*args).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["bytes accessed"])

    shared = (lambda x: _agnostic.batch_forward(jnp, x, g, b, axis=3, num_groups=4,
                                                partition="contiguous", eps=1e-5)[0]) \
        if mode == "batch" else \
        (lambda x: _agnostic.eval_forward(jnp, x, g, b, axis=3, mode=mode, group=0, eps=1e-5))
    got = accessed(lambda s, x: nnx.merge(graphdef, s, copy=True)(x), state, x)
    assert got < 0.9 * accessed(shared, x)
