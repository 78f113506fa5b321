"""Ghost BatchNorm for Flax: the NNX GhostBatchNorm preset (shared scale/bias, groups
from a virtual batch size, running mean/var as nnx.BatchStat), against tf-keras's
``virtual_batch_size`` algorithm; the Linen layer's shared_affine; conversion."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
from flax import nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import localnorm.flax as lf  # noqa: E402
from conformance import tfkeras_reference as tfk  # noqa: E402
from localnorm import LocalNormError, reference  # noqa: E402
from localnorm.flax import linen as ll  # noqa: E402


def test_preset_state_and_defaults():
    layer = lf.GhostBatchNorm(3, virtual_batch_size=4, rngs=nnx.Rngs(0))
    assert isinstance(layer, lf.LocalNorm)
    assert layer.scale.shape == layer.mean.shape == layer.var.shape == (1, 3)
    assert isinstance(layer.mean, nnx.BatchStat)
    assert (layer.mode, layer.partition, layer.momentum) == ("running", "strided", 0.99)


def test_migration_from_tf_keras_virtual_batch_size():
    """Three jitted SGD steps on scale/bias against tf-keras's algorithm
    (conformance/tfkeras_reference.py): the same outputs, gradients and running
    statistics (Flax's momentum and biased variance are Keras's), then inference on a
    batch of 5 with the running statistics."""
    rng = np.random.default_rng(0)
    v, c, lr = 4, 3, 0.5
    layer = lf.GhostBatchNorm(c, virtual_batch_size=v, momentum=0.9, epsilon=1e-3,
                              rngs=nnx.Rngs(0))

    @nnx.jit
    def step(layer, x, ct):
        def loss(layer):
            y = layer(x)
            return jnp.sum(y * ct), y
        (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(layer)
        return y, grads

    gamma, beta, mm, mv = np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)
    with jax.enable_x64(True):
        for i in range(3):
            x = rng.normal(size=(8, 2, 2, c)) * 2 + i
            ct = rng.normal(size=x.shape)
            y_ref, mm, mv, (_, dg, db) = tfk.train_step(
                x, gamma, beta, mm, mv, virtual_batch_size=v, momentum=0.9, epsilon=1e-3,
                cotangent=ct)
            y, grads = step(layer, jnp.asarray(x, jnp.float32), jnp.asarray(ct, jnp.float32))
            np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(np.asarray(grads.scale[...])[0], dg, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(np.asarray(grads.bias[...])[0], db, rtol=1e-4, atol=1e-3)
            layer.scale[...] = layer.scale[...] - lr * grads.scale[...]
            layer.bias[...] = layer.bias[...] - lr * grads.bias[...]
            gamma, beta = gamma - lr * dg, beta - lr * db
    np.testing.assert_allclose(np.asarray(layer.mean[...])[0], mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.var[...])[0], mv, rtol=1e-5, atol=1e-6)
    layer.eval()
    x5 = rng.normal(size=(5, 2, 2, c))
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x5, jnp.float32))),
                               tfk.infer(x5, gamma, beta, mm, mv, epsilon=1e-3),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [3, 10])
def test_ragged_batches_count_their_groups(n):
    x = np.random.default_rng(n).normal(size=(n, 2, 3))
    layer = lf.GhostBatchNorm(3, virtual_batch_size=4, rngs=nnx.Rngs(0))
    want = reference.local_norm(x, np.ones((1, 3)), np.zeros((1, 3)),
                                num_groups=max(1, n // 4), partition="strided")
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x, jnp.float32))), want,
                               rtol=1e-4, atol=1e-4)


def test_state_round_trip_and_mismatched_rows():
    layer = lf.GhostBatchNorm(3, num_groups=2, rngs=nnx.Rngs(0))
    layer(jnp.ones((4, 3)) * jnp.arange(4.0)[:, None])
    state = nnx.state(layer)
    other = lf.GhostBatchNorm(3, num_groups=2, rngs=nnx.Rngs(1))
    nnx.update(other, state)
    layer.eval(), other.eval()
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(np.asarray(other(x)), np.asarray(layer(x)))
    per_group = lf.LocalNorm(3, num_groups=2, rngs=nnx.Rngs(0))
    nnx.update(per_group, nnx.state(layer, nnx.Param))
    with pytest.raises(LocalNormError, match="shared") as err:
        per_group(jnp.ones((4, 3)) * jnp.arange(4.0)[:, None])
    assert "(1, 3)" in str(err.value)


def test_linen_shared_affine_and_virtual_batch_size():
    x = np.random.default_rng(0).normal(size=(10, 3))
    layer = ll.LocalNorm(num_groups=None, virtual_batch_size=4, shared_affine=True)
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["scale"].shape == (1, 3)
    want = reference.local_norm(x, np.ones((1, 3)), np.zeros((1, 3)), num_groups=2)
    np.testing.assert_allclose(np.asarray(layer.apply(variables, x)), want, rtol=1e-4,
                               atol=1e-4)


def test_linen_preset_equals_the_nnx_preset_and_keeps_batch_stats():
    """Three training calls of the Linen preset (``mutable=["batch_stats"]``) and of the
    NNX one: the same outputs and running statistics, then the same inference on one
    sample; ``init`` leaves the statistics at 0 and 1, as nn.BatchNorm's."""
    rng = np.random.default_rng(0)
    linen = ll.GhostBatchNorm(virtual_batch_size=4, momentum=0.9)
    nnx_layer = lf.GhostBatchNorm(3, virtual_batch_size=4, momentum=0.9, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(10, 2, 3)) * 2 + 1, jnp.float32)
    variables = linen.init(jax.random.key(0), x)
    assert variables["batch_stats"]["mean"].shape == (1, 3)
    np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)
    step = jax.jit(lambda v, x: linen.apply(v, x, mutable=["batch_stats"]))
    for i in range(3):
        y, updates = step(variables, x + i)
        variables = {**variables, **updates}
        np.testing.assert_allclose(np.asarray(y), np.asarray(nnx_layer(x + i)), rtol=1e-6,
                                   atol=1e-6)
    for name in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(variables["batch_stats"][name]),
                                   np.asarray(getattr(nnx_layer, name)[...]), rtol=1e-6)
    nnx_layer.eval()
    one = x[:1] * 3
    np.testing.assert_allclose(np.asarray(linen.apply(variables, one, deterministic=True)),
                               np.asarray(nnx_layer(one)), rtol=1e-6, atol=1e-6)
    # without running statistics the preset evaluates in "batch" mode
    batch = ll.GhostBatchNorm(virtual_batch_size=4, track_running_stats=False)
    plain = batch.init(jax.random.key(0), x)
    assert "batch_stats" not in plain
    want = reference.local_norm(np.asarray(x, np.float64), np.ones((1, 3)), np.zeros((1, 3)),
                                num_groups=2, partition="strided")
    np.testing.assert_allclose(np.asarray(batch.apply(plain, x, deterministic=True)), want,
                               rtol=1e-4, atol=1e-4)


def test_linen_running_needs_tracking_and_the_shared_row():
    x = jnp.ones((4, 3)) * jnp.arange(4.0)[:, None]
    layer = ll.LocalNorm(num_groups=2)
    variables = layer.init(jax.random.key(0), x)
    with pytest.raises(LocalNormError, match="track_running_stats=True"):
        layer.apply(variables, x, deterministic=True, mode="running")
    with pytest.raises(LocalNormError, match="shared_affine=True"):
        ll.LocalNorm(num_groups=2, track_running_stats=True)
    ghost = ll.GhostBatchNorm(num_groups=2)
    saved = ghost.init(jax.random.key(0), x)
    wide = {**saved, "batch_stats": {"mean": jnp.zeros((1, 4)), "var": jnp.ones((1, 4))}}
    with pytest.raises(LocalNormError, match="channel"):
        ghost.apply(wide, x, deterministic=True)


def test_convert_batchnorm_into_ghost_keeps_evaluation():
    class Net(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
            self.bn = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.bn(self.lin(x))

    net = Net()
    net(jax.random.normal(jax.random.key(0), (16, 3)))
    net.eval()
    x = jax.random.normal(jax.random.key(1), (5, 3))
    before = net(x)
    lf.convert_batchnorm(net, ghost=True, virtual_batch_size=4)
    assert isinstance(net.bn, lf.GhostBatchNorm)
    np.testing.assert_allclose(np.asarray(net(x)), np.asarray(before), rtol=1e-6, atol=1e-6)


def test_running_needs_tracking_and_the_shared_row():
    with pytest.raises(LocalNormError, match="track_running_stats"):
        lf.LocalNorm(3, rngs=nnx.Rngs(0)).set_mode("running")
    with pytest.raises(LocalNormError, match="shared_affine=True"):
        lf.LocalNorm(3, track_running_stats=True, rngs=nnx.Rngs(0))
