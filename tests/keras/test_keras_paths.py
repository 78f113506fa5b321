"""The layer's closed-form derivative against the backend's own autodiff.

``_functional.local_norm`` (what the layer calls) gives ``"batch"`` mode the core's closed-form
derivative per group along the batch axis (``keras.ops.custom_gradient`` on TensorFlow,
a ``jax.custom_jvp`` on JAX, a ``torch.autograd.Function`` on eager PyTorch). ``plain`` is the core's same
forward pass on the same namespace, differentiated by the backend. Both must agree on the
output, the first derivatives (which the conformance suite also checks against the NumPy
reference) and the second derivatives (a gradient penalty differentiates the backward
pass, which the conformance suite does not), for every layout the layer accepts, even
and ragged batches.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_helpers import BACKEND  # noqa: E402
from localnorm import _agnostic  # noqa: E402
from localnorm.keras import _functional  # noqa: E402

#: (x shape, channel axis, K): channels_last and channels_first images, sequences,
#: volumes, dense features, a channel axis in the middle.
LAYOUTS = [
    ((8, 4, 4, 3), 3, 4),
    ((8, 3, 4, 4), 1, 2),
    ((6, 5, 3), 2, 3),
    ((4, 2, 3, 3, 2), 4, 2),
    ((8, 3), 1, 4),
    ((8, 4, 3, 5), 2, 2),
]


def _kwargs(axis, k, partition, mode="batch", group=0):
    return dict(num_groups=k, axis=axis, mode=mode, group=group, partition=partition,
                eps=1e-3)


def fast(x, g, b, **kw):
    return _functional.local_norm(x, g, b, **kw)


def plain(x, g, b, *, mode, group, **kw):
    assert mode == "batch"
    t = keras.ops.convert_to_tensor
    return _agnostic.batch_forward(_functional.namespace(), t(x), t(g), t(b), **kw)[0]


def _derivatives(fn, x, g, b, w):
    """``fn``'s output, the gradients of ``sum(fn(x, g, b) * w)`` with respect to x, g, b,
    and the gradients of the penalty ``sum(dx**2)`` with respect to x and g (the second
    derivatives), by the backend's own autodiff."""
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def loss(x, g, b):
            return jnp.sum(fn(x, g, b) * w)

        first = jax.grad(loss, argnums=(0, 1, 2))(x, g, b)
        second = jax.grad(lambda x, g: jnp.sum(jax.grad(loss)(x, g, b) ** 2),
                          argnums=(0, 1))(x, g)
        return [np.asarray(t) for t in (fn(x, g, b), *first, *second)]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt, gt, bt = (tf.constant(t) for t in (x, g, b))
        with tf.GradientTape() as outer:
            outer.watch([xt, gt])
            with tf.GradientTape() as inner:
                inner.watch([xt, gt, bt])
                y = fn(xt, gt, bt)
                loss = tf.reduce_sum(y * w)
            first = inner.gradient(loss, [xt, gt, bt])
            penalty = tf.reduce_sum(first[0] ** 2)
        second = outer.gradient(penalty, [xt, gt])
        # The plain path's gamma/beta gradients of a ragged batch are IndexedSlices.
        return [tf.convert_to_tensor(t).numpy() for t in (y, *first, *second)]
    import torch

    xt, gt, bt = (torch.tensor(t, requires_grad=True) for t in (x, g, b))
    y = fn(xt, gt, bt)
    first = torch.autograd.grad((y * torch.tensor(w)).sum(), (xt, gt, bt), create_graph=True)
    second = torch.autograd.grad((first[0] ** 2).sum(), (xt, gt))
    return [t.detach().numpy() for t in (y, *first, *second)]


def _data(shape, axis, k, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[axis]
    x = (rng.normal(size=shape) * 2.0 + 3.0).astype("float32")
    g = rng.uniform(0.5, 1.5, size=(k, c)).astype("float32")
    b = rng.normal(size=(k, c)).astype("float32")
    w = rng.normal(size=shape).astype("float32")
    return x, g, b, w


NAMES = ("y", "dx", "dgamma", "dbeta", "d(penalty)/dx", "d(penalty)/dgamma")


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("shape, axis, k", LAYOUTS)
def test_batch_mode_fast_path_matches_plain_autodiff(shape, axis, k, partition):
    x, g, b, w = _data(shape, axis, k)
    kw = _kwargs(axis, k, partition)
    if BACKEND == "torch":
        import torch

        xt = torch.tensor(x)
        assert not _functional.is_traced(xt)
        assert fast(xt, torch.tensor(g), torch.tensor(b), **kw).is_contiguous()
    got = _derivatives(lambda *a: fast(*a, **kw), x, g, b, w)
    want = _derivatives(lambda *a: plain(*a, **kw), x, g, b, w)
    for name, u, v in zip(NAMES, got, want):
        scale = max(float(np.max(np.abs(v))), 1.0)
        np.testing.assert_allclose(u, v, rtol=0, atol=2e-5 * scale, err_msg=name)


def test_ragged_batches_match_plain_autodiff():
    """N not a multiple of K: groups of unequal size (the core's two views per batch)."""
    x, g, b, w = _data((10, 3, 3, 2), 3, 4)
    for partition in ("contiguous", "strided"):
        kw = _kwargs(3, 4, partition)
        got = _derivatives(lambda *a: fast(*a, **kw), x, g, b, w)
        want = _derivatives(lambda *a: plain(*a, **kw), x, g, b, w)
        for name, u, v in zip(NAMES, got, want):
            scale = max(float(np.max(np.abs(v))), 1.0)
            np.testing.assert_allclose(u, v, rtol=0, atol=2e-5 * scale,
                                       err_msg=f"{name} {partition}")


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's low-precision dtypes")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_eager_low_precision_keeps_the_dtype(dtype):
    import torch

    x, g, b, _ = _data((8, 4, 4, 3), 3, 4)
    xt = torch.tensor(x).to(getattr(torch, dtype))
    kw = _kwargs(3, 4, "strided")
    got = fast(xt, torch.tensor(g), torch.tensor(b), **kw)
    want = plain(xt, torch.tensor(g), torch.tensor(b), **kw)
    assert got.dtype == xt.dtype
    np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0,
                               atol=2e-2 if dtype == "bfloat16" else 4e-3)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jvp is JAX's forward mode")
@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("shape, axis, k", [((8, 4, 4, 3), 3, 4), ((10, 3, 3, 2), 3, 4),
                                            ((8, 3), 1, 4)])
def test_jax_forward_mode_matches_plain_autodiff(shape, axis, k, partition):
    """On JAX the closed-form derivative is a ``jax.custom_jvp`` rule, so forward mode
    (``jax.jvp``, what ``jax.jacfwd`` uses) works in training and
    agrees with JAX differentiating the core's forward; a custom VJP (``keras.ops.
    custom_gradient``) refuses ``jax.jvp``. Even and ragged batches, (K, C) and shared
    (1, C) gamma/beta (Ghost BatchNorm)."""
    import jax

    x, g, b, _ = _data(shape, axis, k)
    kw = _kwargs(axis, k, partition)
    rng = np.random.default_rng(1)
    for rows in (k, 1):
        params = (x, g[:rows], b[:rows])
        tangents = tuple(rng.normal(size=p.shape).astype("float32") for p in params)
        y, dy = jax.jvp(lambda *a: fast(*a, **kw), params, tangents)
        y0, dy0 = jax.jvp(lambda *a: plain(*a, **kw), params, tangents)
        np.testing.assert_allclose(np.asarray(y), np.asarray(y0), rtol=0, atol=1e-5)
        scale = max(float(np.max(np.abs(np.asarray(dy0)))), 1.0)
        np.testing.assert_allclose(np.asarray(dy), np.asarray(dy0), rtol=0,
                                   atol=2e-5 * scale, err_msg=f"gamma rows {rows}")


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jvp is JAX's forward mode")
def test_jax_forward_mode_through_the_layer_in_training():
    """``jax.jvp`` through a Ghost BatchNorm layer's ``stateless_call(...,
    training=True)``: the tangent of y agrees with finite differences of the layer, and
    the moving statistics still move by the groups' moments (the update is not
    differentiated)."""
    import jax
    import jax.numpy as jnp

    from localnorm.keras import GhostBatchNormalization

    x, *_ = _data((8, 4, 4, 3), 3, 4)
    layer = GhostBatchNormalization(num_groups=4)
    layer.build(x.shape)
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def f(x):
        return layer.stateless_call(tv, ntv, x, training=True)

    dx = np.random.default_rng(2).normal(size=x.shape).astype("float32")
    (y, moved), (dy, _) = jax.jvp(f, (jnp.asarray(x),), (jnp.asarray(dx),))
    np.testing.assert_allclose(np.asarray(y), np.asarray(f(x)[0]), rtol=0, atol=1e-6)
    h = 1e-2
    fd = (np.asarray(f(x + h * dx)[0], "float64") - np.asarray(f(x - h * dx)[0], "float64")) / (2 * h)
    np.testing.assert_allclose(np.asarray(dy), fd, rtol=0, atol=2e-3)
    mean = x.reshape(-1, 3).mean(axis=0)  # the K groups' mean of their means (equal sizes)
    want = 0.99 * np.asarray(ntv[0]) + 0.01 * mean  # momentum 0.99, Keras's default
    np.testing.assert_allclose(np.asarray(moved[0]), want, rtol=0, atol=1e-5)
