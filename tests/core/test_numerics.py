"""Numerics on real framework arrays, eagerly (the conformance battery runs jax under
jit): finite output for constant input, float16/bfloat16 in -> same dtype out with
float32 statistics, the input's array type and device kept, NaN refused."""

from __future__ import annotations

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, reference

MODES = [("batch", 0), ("single", 1), ("set", 1)]


def _frameworks():
    out = []
    try:
        import torch

        out.append(("torch", torch.from_numpy, lambda a: a.detach().float().numpy(),
                    {"float16": torch.float16, "bfloat16": torch.bfloat16,
                     "float32": torch.float32}))
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        out.append(("jax", jnp.asarray, lambda a: np.asarray(a, dtype=np.float32),
                    {"float16": jnp.float16, "bfloat16": jnp.bfloat16,
                     "float32": jnp.float32}))
    except ImportError:
        pass
    return out


FRAMEWORKS = _frameworks()
IDS = [f[0] for f in FRAMEWORKS]


def _cast(fw, a, dtype):
    name, to, _, dtypes = fw
    t = to(a.astype(np.float32))
    return t.to(dtypes[dtype]) if name == "torch" else t.astype(dtypes[dtype])


@pytest.mark.parametrize("mode, group", MODES)
@pytest.mark.parametrize("value", [0.0, 3.0, -250.0, 1e4])
def test_constant_input_numpy(mode, group, value):
    x = np.full((6, 3, 4), value)
    g, b = np.full((2, 3), 2.0), np.arange(6.0).reshape(2, 3)
    y = localnorm.local_norm(x, g, b, axis=1, mode=mode, group=group)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, reference.local_norm(x, g, b, axis=1, mode=mode, group=group),
                               atol=1e-9)


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("mode, group", MODES)
@pytest.mark.parametrize("value", [0.0, 3.0, -250.0])
def test_constant_input_low_precision(fw, dtype, mode, group, value):
    x = _cast(fw, np.full((6, 3, 4), value), dtype)
    g = _cast(fw, np.full((2, 3), 2.0), "float32")
    b = _cast(fw, np.arange(6.0).reshape(2, 3), "float32")
    y = localnorm.local_norm(x, g, b, axis=1, mode=mode, group=group)
    assert y.dtype == x.dtype
    yn = fw[2](y)
    assert np.all(np.isfinite(yn))
    row = 0 if mode == "batch" else group
    # Constant input normalizes to 0: the output is beta of the sample's group.
    want = np.broadcast_to(np.arange(6.0).reshape(2, 3)[row][None, :, None], yn.shape).copy()
    if mode == "batch":
        want[3:] = np.arange(3.0, 6.0)[None, :, None]
    np.testing.assert_allclose(yn, want, atol=0.02 + 0.01 * abs(value) ** 0.5)


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
@pytest.mark.parametrize("dtype, rtol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
@pytest.mark.parametrize("mode, group", MODES)
def test_low_precision_matches_reference(fw, dtype, rtol, mode, group):
    """float16/bfloat16 in, same dtype out, as accurate as one final rounding allows
    (statistics in float32), even with a large offset."""
    rng = np.random.default_rng(0)
    x64 = rng.normal(size=(8, 3, 5)) * 0.5 + 40.0
    x = _cast(fw, x64, dtype)
    xr = fw[2](x).astype(np.float64)  # the values actually given
    g64, b64 = rng.normal(size=(2, 2, 3)).astype(np.float32).astype(np.float64)
    y = localnorm.local_norm(x, _cast(fw, g64, "float32"), _cast(fw, b64, "float32"), axis=1,
                             mode=mode, group=group)
    assert y.dtype == x.dtype
    want = reference.local_norm(xr, g64, b64, axis=1, mode=mode, group=group)
    np.testing.assert_allclose(fw[2](y), want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_array_type_and_nan_refusal_eager(fw):
    x = np.random.default_rng(1).normal(size=(4, 2, 3)).astype(np.float32)
    g, b = np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32)
    y = localnorm.local_norm(fw[1](x), fw[1](g), fw[1](b), axis=1)
    assert type(y) is type(fw[1](x))
    np.testing.assert_allclose(fw[2](y), reference.local_norm(x, g, b, axis=1), atol=1e-5)
    x[2, 1, 0] = np.nan
    with pytest.raises(LocalNormError, match="NaN"):
        localnorm.local_norm(fw[1](x), fw[1](g), fw[1](b), axis=1)


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_group_array_in_framework_type(fw):
    x = np.random.default_rng(2).normal(size=(5, 2, 3))
    g, b = np.random.default_rng(3).normal(size=(2, 3, 2))
    groups = np.array([0, 2, 1, 2, 0])
    want = reference.local_norm(x, g, b, axis=1, mode="single", group=groups)
    got = localnorm.local_norm(fw[1](x), fw[1](g), fw[1](b), axis=1, mode="single",
                               group=fw[1](groups))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64) if fw[0] == "jax"
                               else got.numpy(), want, atol=1e-5)
    with pytest.raises(LocalNormError, match="group="):
        localnorm.local_norm(fw[1](x), fw[1](g), fw[1](b), axis=1, mode="single",
                             group=fw[1](np.array([0, 3, 1, 2, 0])))


def test_float64_statistics_when_params_are_float64():
    """float32 x with float64 gamma/beta computes in float64 and returns float32."""
    x = (np.random.default_rng(4).normal(size=(4, 3)) * 1e-3 + 1e3).astype(np.float32)
    y = localnorm.local_norm(x, np.ones((2, 3)), np.zeros((2, 3)))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, reference.local_norm(x, np.ones((2, 3)), np.zeros((2, 3))),
                               atol=1e-5)


def test_numpy_bfloat16_in_same_dtype_out():
    """NumPy's bfloat16 (ml_dtypes, what JAX bfloat16 arrays become in NumPy) computes
    like float16: float32 statistics, bfloat16 out; the reference takes it too."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(8, 3, 5)) * 0.5 + 40.0).astype(ml_dtypes.bfloat16)
    g, b = rng.normal(size=(2, 2, 3)).astype(np.float32)
    for mode, group in MODES:
        y = localnorm.local_norm(x, g, b, axis=1, mode=mode, group=group)
        assert y.dtype == x.dtype
        want = reference.local_norm(x, g, b, axis=1, mode=mode, group=group)
        np.testing.assert_array_equal(
            want, reference.local_norm(x.astype(np.float64), g, b, axis=1, mode=mode,
                                       group=group))
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=1.6e-2,
                                   atol=1.6e-2 * np.abs(want).max())
    x[1, 2, 3] = np.nan
    with pytest.raises(LocalNormError, match="NaN"):
        localnorm.local_norm(x, g, b, axis=1)


def test_other_numpy_extension_dtypes_are_refused():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones((4, 3)).astype(ml_dtypes.float8_e4m3fn)
    g, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    for fn in (localnorm.local_norm, reference.local_norm):
        with pytest.raises(TypeError, match="x.dtype=float8_e4m3fn"):
            fn(x, g, b)


def _exact_local_norm(x, g, b, axis, partition, eps=1e-5):
    """Batch-mode LocalNorm with long-double statistics (no code shared with the
    reference): checks that the reference itself is exact at this size."""
    gi = localnorm.group_index(x.shape[0], g.shape[0], partition)
    red = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    y = np.empty(x.shape, dtype=np.longdouble)
    for k in range(g.shape[0]):
        xs = x[gi == k].astype(np.longdouble)
        mean = xs.mean(axis=red, keepdims=True)
        var = ((xs - mean) ** 2).mean(axis=red, keepdims=True)
        y[gi == k] = (xs - mean) / np.sqrt(var + eps) * g[k].reshape(shape) + b[k].reshape(shape)
    return y


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize(
    "shape, k, mean, std",
    [((1025, 32, 32, 4), 4, 50.0, 1.0),    # ragged, 65k values per group, offset 50 std
     ((1024, 32, 32, 4), 4, 50.0, 1.0),    # even
     ((64, 16, 16, 8), 3, 500.0, 500.0)],  # ragged, K=3
)
def test_float64_within_1e12_of_the_reference_at_realistic_sizes(shape, k, mean, std, partition):
    """The issue's bound at full size, channels last (NumPy's worst layout for sums):
    the array-API path and the reference agree to 1e-12, and the reference is exact."""
    rng = np.random.default_rng(sum(shape) + k)
    x = rng.normal(mean, std, size=shape)
    g, b = rng.normal(size=(2, k, shape[-1]))
    y = localnorm.local_norm(x, g, b, axis=-1, partition=partition)
    ref = reference.local_norm(x, g, b, axis=-1, partition=partition)
    assert np.abs(y - ref).max() <= 1e-12
    x86_long_double = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
    if x86_long_double and shape[0] % k and partition == "contiguous":
        exact = _exact_local_norm(x, g, b, x.ndim - 1, partition)
        assert float(np.abs(ref - exact).max()) <= 1e-13


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_float32_accuracy_does_not_degrade_with_set_size(fw):
    """65536 values per group with an offset of 50 std, channels last: the float32 error
    stays that of a few roundings (the corrected two-pass, staged reductions), not the
    ~1e-3 of summing 65536 values one after another."""
    rng = np.random.default_rng(11)
    x64 = rng.normal(50.0, 1.0, size=(256, 32, 32, 4))
    g64, b64 = rng.normal(size=(2, 4, 4)).astype(np.float32).astype(np.float64)
    x = _cast(fw, x64, "float32")
    y = localnorm.local_norm(x, _cast(fw, g64, "float32"), _cast(fw, b64, "float32"))
    want = reference.local_norm(fw[2](x).astype(np.float64), g64, b64)
    assert float(np.abs(fw[2](y) - want).max()) <= 2e-5


def test_float32_accuracy_numpy():
    rng = np.random.default_rng(11)
    x = rng.normal(50.0, 1.0, size=(256, 32, 32, 4)).astype(np.float32)
    g, b = rng.normal(size=(2, 4, 4)).astype(np.float32)
    y = localnorm.local_norm(x, g, b)
    assert float(np.abs(y - reference.local_norm(x, g, b)).max()) <= 2e-5


@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("shape, axis", [((8, 3, 4, 5), 1), ((11, 3, 6), 1), ((9, 4, 4, 3), 3),
                                         ((5, 3, 2), 1), ((3, 2, 5), 1)])
def test_in_place_evaluation_equals_the_plain_expression(namespace, partition, shape, axis):
    """``inplace=True`` (what eager PyTorch runs) is the same arithmetic as the plain
    expressions that frameworks differentiate, reordered: forward and VJP agree to float64
    rounding, at an offset of 1e4, on even and ragged batches (N < K included) and on
    either channel axis; the inputs are left unchanged."""
    import importlib

    from localnorm import _agnostic

    xp = importlib.import_module(
        "array_api_compat.numpy" if namespace == "numpy" else "array_api_strict")
    rng = np.random.default_rng(len(shape) + shape[0])
    c = shape[axis]
    x_np = rng.normal(size=shape) * 1e-2 + 1e4
    x, dy = xp.asarray(x_np), xp.asarray(rng.normal(size=shape))
    gamma, beta = xp.asarray(rng.random((4, c)) + 0.5), xp.asarray(rng.normal(size=(4, c)))
    kw = dict(axis=axis, num_groups=4, partition=partition)
    plain = _agnostic.batch_forward(xp, x, gamma, beta, eps=1e-5, **kw)
    inplace = _agnostic.batch_forward(xp, x, gamma, beta, eps=1e-5, inplace=True, **kw)
    for a, b in zip(plain, inplace):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9)
    _, mean, _, rstd = plain
    grads = [_agnostic.batch_vjp(xp, x, gamma, mean, rstd, dy, inplace=flag, **kw)
             for flag in (False, True)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(x), x_np)


@pytest.mark.parametrize("mode, group", [("single", 2), ("single", "per-sample"), ("set", 1)])
@pytest.mark.parametrize("shape, axis", [((6, 3, 4, 5), 1), ((5, 4, 4, 3), 3)])
def test_in_place_evaluation_modes_equal_the_plain_expression(mode, group, shape, axis):
    """``eval_forward(inplace=True)`` ("single" and "set") equals the plain expression at
    an offset of 1e4 and leaves the input unchanged."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(7)
    x = rng.normal(size=shape) * 1e-2 + 1e4
    x_copy = x.copy()
    c = shape[axis]
    gamma, beta = rng.random((4, c)) + 0.5, rng.normal(size=(4, c))
    g = np.arange(shape[0]) % 4 if group == "per-sample" else group
    kw = dict(axis=axis, mode=mode, group=g, eps=1e-5)
    plain = _agnostic.eval_forward(xp, x, gamma, beta, **kw)
    inplace = _agnostic.eval_forward(xp, x, gamma, beta, inplace=True, **kw)
    np.testing.assert_allclose(inplace, plain, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(x, x_copy)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", [((6, 3, 4, 5), 1), ((5, 4, 4, 3), 3), ((4, 3), 1)])
def test_in_place_running_mode_equals_the_plain_expression(shape, axis, dtype, affine):
    """``running_forward(inplace=True)`` equals the plain expression (a float16 input
    read as it is, the arithmetic in float32) and leaves the input unchanged."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 2 + 3).astype(dtype)
    x_copy = x.copy()
    c = shape[axis]
    pdt = np.float64 if dtype == np.float64 else np.float32
    mean, gamma, beta = (rng.normal(size=(1, c)).astype(pdt) for _ in range(3))
    var = (rng.random((1, c)) + 0.5).astype(pdt)
    params = (gamma, beta) if affine else (None, None)
    plain = _agnostic.running_forward(xp, x, *params, mean, var, axis=axis, eps=1e-5)
    inplace = _agnostic.running_forward(xp, x, *params, mean, var, axis=axis, eps=1e-5,
                                        inplace=True)
    assert inplace.dtype == x.dtype
    tol = 1e-12 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(inplace.astype(np.float64), plain.astype(np.float64),
                               rtol=tol, atol=tol)
    np.testing.assert_array_equal(x, x_copy)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n", [9, 12])
def test_groups_counted_at_run_time_equal_a_static_k(partition, n):
    """K given as a 0-d array (counted at run time, as Ghost BatchNorm's K on TensorFlow's
    None batch axis) takes the namespace's segment sums and gives what the int K gives:
    output, statistics and the VJP of a shared (1, C) row."""
    import types

    import array_api_compat.numpy as np_xp

    from localnorm import _agnostic

    def segment_sum(v, ids, k):
        out = np.zeros((int(k),) + v.shape[1:], v.dtype)
        np.add.at(out, ids, v)
        return out

    xp = types.SimpleNamespace(**vars(np_xp), segment_sum=segment_sum,
                               batch_size=lambda x: np.asarray(x.shape[0]))
    rng = np.random.default_rng(n)
    x, dy = rng.normal(size=(n, 3, 4)) + 5, rng.normal(size=(n, 3, 4))
    gamma, beta = rng.random((1, 3)) + 0.5, rng.normal(size=(1, 3))
    kw = dict(axis=1, partition=partition)
    static = _agnostic.batch_forward(xp, x, gamma, beta, num_groups=3, eps=1e-5, **kw)
    dynamic = _agnostic.batch_forward(xp, x, gamma, beta, num_groups=np.asarray(3), eps=1e-5,
                                      **kw)
    for a, b in zip(static, dynamic):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    _, mean, _, rstd = static
    grads = [_agnostic.batch_vjp(xp, x, gamma, mean, rstd, dy, num_groups=k, **kw)
             for k in (3, np.asarray(3))]
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
def test_running_forward_is_batchnorm_inference_with_one_stored_row(affine):
    """``running_forward`` (Keras's and Flax's "running" mode) is BatchNorm's inference
    with a (1, C) row of statistics and of gamma/beta, any batch size, channels last."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 4, 4, 3)) + 1e3
    mean, var = 1e3 + rng.normal(size=(1, 3)), rng.random((1, 3)) + 0.1
    gamma, beta = (rng.random((1, 3)) + 0.5, rng.normal(size=(1, 3))) if affine else (None, None)
    y = _agnostic.running_forward(xp, x, gamma, beta, mean, var, axis=3, eps=1e-3)
    want = (x - mean[0]) / np.sqrt(var[0] + 1e-3)
    if affine:
        want = want * gamma[0] + beta[0]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
