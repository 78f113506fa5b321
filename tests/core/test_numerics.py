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
