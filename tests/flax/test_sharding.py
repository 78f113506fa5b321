"""Group-per-device data parallelism: each device's shard of the batch is one group (or a
fixed set of groups), no statistics cross devices, and the result equals the
single-device layer on the whole batch (contiguous partition). Needs 4 devices: .ci/test
and tests/flax/conftest.py set XLA_FLAGS=--xla_force_host_platform_device_count=4."""

from __future__ import annotations

import numpy as np
import pytest
from flax_models import params, set_params

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from localnorm import LocalNormError  # noqa: E402
from localnorm.flax import LocalNorm  # noqa: E402
from localnorm.flax import linen as ll  # noqa: E402

pytestmark = pytest.mark.skipif(
    jax.device_count() < 4,
    reason="needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4 before jax starts",
)

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def mesh():
    return Mesh(np.array(jax.devices()[:4]), ("data",))


def collectives(compiled_text: str) -> list[str]:
    return [op for op in COLLECTIVES if op in compiled_text]


def layers(k: int, **kw):
    gamma, beta = params(k, 3, seed=k)
    single = LocalNorm(3, num_groups=k, rngs=nnx.Rngs(0), **kw)
    sharded = LocalNorm(3, num_groups=k, axis_name="data", rngs=nnx.Rngs(0), **kw)
    for layer in (single, sharded):
        set_params(layer, gamma, beta)
    return single, sharded


@pytest.mark.parametrize("num_groups", [4, 8])  # one, then two groups per device
def test_shard_map_forward_and_grads_equal_single_device(num_groups):
    x = jax.random.normal(jax.random.key(0), (16, 4, 4, 3)) * 2 + 1
    ct = jax.random.normal(jax.random.key(1), x.shape)
    single, sharded = layers(num_groups)
    g1, s1 = nnx.split(single)
    g2, s2 = nnx.split(sharded)

    def local_loss(state, x, ct):
        return jnp.sum(nnx.merge(g2, state)(x) * ct)

    forward = jax.jit(jax.shard_map(lambda s, x: nnx.merge(g2, s)(x), mesh=mesh(),
                                    in_specs=(P(), P("data")), out_specs=P("data")))
    np.testing.assert_allclose(forward(s2, x), single(x), atol=1e-5)
    assert collectives(forward.lower(s2, x).compile().as_text()) == []

    # Gradients combined as usual: the loss is summed over devices.
    loss = jax.shard_map(lambda s, x, ct: jax.lax.psum(local_loss(s, x, ct), "data"),
                         mesh=mesh(), in_specs=(P(), P("data"), P("data")), out_specs=P())
    gs, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(s2, x, ct)
    ws, wx = jax.grad(lambda s, x: jnp.sum(nnx.merge(g1, s)(x) * ct), argnums=(0, 1))(s1, x)
    np.testing.assert_allclose(gx, wx, rtol=1e-4, atol=1e-4)
    for name in ("scale", "bias"):
        np.testing.assert_allclose(gs[name][...], ws[name][...], rtol=1e-4, atol=1e-4)


def test_linen_axis_name_in_shard_map():
    x = jax.random.normal(jax.random.key(2), (8, 5, 3))
    single = ll.LocalNorm(num_groups=4)
    sharded = ll.LocalNorm(num_groups=4, axis_name="data")
    variables = single.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda p: p + jnp.arange(4.0)[:, None], variables)
    forward = jax.shard_map(lambda v, x: sharded.apply(v, x), mesh=mesh(),
                            in_specs=(P(), P("data")), out_specs=P("data"))
    np.testing.assert_allclose(jax.jit(forward)(variables, x), single.apply(variables, x),
                               atol=1e-5)


def test_jit_with_batch_sharded_input_needs_no_collective():
    """Without shard_map: jit on a batch sharded over devices, groups aligned to shards."""
    x = jax.random.normal(jax.random.key(3), (16, 4, 4, 3))
    single, _ = layers(4)
    graphdef, state = nnx.split(single)
    xs = jax.device_put(x, NamedSharding(mesh(), P("data")))
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    y = forward(state, xs)
    np.testing.assert_allclose(y, single(x), atol=1e-5)
    assert y.sharding.spec == P("data")
    assert collectives(forward.lower(state, xs).compile().as_text()) == []


def test_sharding_errors():
    x = jnp.ones((8, 3)) * jnp.arange(8.0)[:, None]
    _, strided = layers(4, partition="strided")
    _, two = layers(2)
    for layer, named in ((strided, "partition='strided'"), (two, "num_groups=2")):
        graphdef, state = nnx.split(layer)
        forward = jax.shard_map(lambda s, x: nnx.merge(graphdef, s)(x), mesh=mesh(),
                                in_specs=(P(), P("data")), out_specs=P("data"))
        with pytest.raises(LocalNormError) as info:
            forward(state, x)
        assert named in str(info.value)
