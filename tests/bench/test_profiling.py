"""The profiling variants that discussion.md cites compute what they claim to compute."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from localnorm.benchmarks import profiling  # noqa: E402


def test_closed_form_backward_equals_autodiff_of_the_plain_two_pass():
    k, m, h, c = 2, 3, 4, 5
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((k * m, h, h, c)) * 3 + 7, dtype=jnp.float32)
    dy = jnp.asarray(rng.standard_normal(x.shape), dtype=jnp.float32)
    g = jnp.asarray(rng.standard_normal((k, c)), dtype=jnp.float32)
    b = jnp.asarray(rng.standard_normal((k, c)), dtype=jnp.float32)
    plain, closed = profiling.group_variants(k, m, h, c)
    y1, vjp1 = jax.vjp(plain, g, b, x)
    y2, vjp2 = jax.vjp(closed, g, b, x)
    np.testing.assert_allclose(y2, y1, atol=1e-5)
    for got, want in zip(vjp2(dy), vjp1(dy)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and it is the per-group normalization: group 0 alone, standardized
    xr = np.asarray(x, np.float64).reshape(k, m, h, h, c)[0]
    want0 = (xr - xr.mean((0, 1, 2))) / np.sqrt(xr.var((0, 1, 2)) + 1e-5)
    got0 = (np.asarray(y1).reshape(k, m, h, h, c)[0] - np.asarray(b)[0]) / np.asarray(g)[0]
    np.testing.assert_allclose(got0, want0, rtol=1e-3, atol=1e-3)


def test_single_variants_normalize_each_sample_alike():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 5, 5, 4)) + 50.0, dtype=jnp.float32)
    xs = np.asarray(x, np.float64)
    want = (xs - xs.mean((1, 2), keepdims=True)) / np.sqrt(xs.var((1, 2), keepdims=True)
                                                           + 1e-5)
    variants = profiling._single_variants(jnp, jax)
    assert len(variants) == 3
    for name, fn in variants.items():
        tol = 5e-2 if name.startswith("E[x^2]") else 1e-4  # cancellation at offset 50
        np.testing.assert_allclose(np.asarray(fn(x)), want, atol=tol, err_msg=name)


def test_shifted_sums_are_one_variadic_reduce():
    v = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    s1, s2 = profiling._shifted_sums(jax, v, v[:, :1], (1,))
    d = np.asarray(v) - np.asarray(v)[:, :1]
    np.testing.assert_allclose(s1, d.sum(1))
    np.testing.assert_allclose(s2, (d * d).sum(1))
    jaxpr = jax.make_jaxpr(lambda v: profiling._shifted_sums(jax, v, v[:, :1], (1,)))(v)
    assert [e.primitive.name for e in jaxpr.eqns].count("reduce") == 1
