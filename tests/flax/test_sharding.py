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

import localnorm.flax as lf  # noqa: E402
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


def sharded(layer, out_specs=P("data"), extra_in=()):
    graphdef, state = nnx.split(layer)
    fwd = jax.shard_map(lambda s, x, *a: nnx.merge(graphdef, s)(x, *a), mesh=mesh(),
                        in_specs=(P(), P("data"), *extra_in), out_specs=out_specs)
    return jax.jit(fwd), state


@pytest.mark.parametrize("shape,offset", [((16, 4, 3), 2.0), ((8, 3), 2.0),
                                          ((16, 4, 3), 1e3)])
def test_set_mode_under_shard_map_is_the_whole_batch(shape, offset):
    """'set' mode: the set is the global batch, its moments summed over the mesh axis (the
    one collective, in evaluation only); equal to the single-device layer, also for data
    with a large offset (the same two passes as the single-device layer)."""
    x = jax.random.normal(jax.random.key(4), shape) * 3 + offset
    x = x + jnp.arange(shape[0], dtype=x.dtype).reshape(-1, *[1] * (len(shape) - 1))
    single, shard = layers(4)
    for layer in (single, shard):
        layer.eval()
        layer.set_mode("set", 2)
    forward, state = sharded(shard)
    np.testing.assert_allclose(forward(state, x), single(x), rtol=1e-5, atol=1e-5)
    assert collectives(forward.lower(state, x).compile().as_text()) == ["all-reduce"]


def test_set_mode_gradients_under_shard_map():
    x = jax.random.normal(jax.random.key(5), (16, 4, 3))
    ct = jax.random.normal(jax.random.key(6), x.shape)
    single, shard = layers(4)
    for layer in (single, shard):
        layer.eval()
        layer.set_mode("set", 1)
    g1, s1 = nnx.split(single)
    g2, s2 = nnx.split(shard)
    loss = jax.shard_map(
        lambda s, x, ct: jax.lax.psum(jnp.sum(nnx.merge(g2, s)(x) * ct), "data"),
        mesh=mesh(), in_specs=(P(), P("data"), P("data")), out_specs=P())
    gs, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(s2, x, ct)
    ws, wx = jax.grad(lambda s, x: jnp.sum(nnx.merge(g1, s)(x) * ct), argnums=(0, 1))(s1, x)
    np.testing.assert_allclose(gx, wx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gs["scale"][...], ws["scale"][...], rtol=1e-4, atol=1e-4)


def test_single_mode_per_sample_groups_of_the_global_batch():
    """A per-sample group array covering the global batch (replicated with the state) is
    sliced to each device's shard; one of the local length is used as it is."""
    x = jax.random.normal(jax.random.key(7), (16, 5, 3))
    groups = np.random.default_rng(0).integers(0, 4, 16)
    single, shard = layers(4)
    for layer in (single, shard):
        layer.eval()
        layer.set_mode("single", groups)
    want = single(x)
    forward, state = sharded(shard)
    np.testing.assert_allclose(forward(state, x), want, rtol=1e-5, atol=1e-5)
    # Local length: the groups are sharded like x (a (16,) array split over 4 devices).
    shard.set_mode("set", 0)
    graphdef, state = nnx.split(shard)

    def local(s, x, g):
        model = nnx.merge(graphdef, s)
        model.set_mode("single", g)
        return model(x)

    forward = jax.jit(jax.shard_map(local, mesh=mesh(), in_specs=(P(), P("data"), P("data")),
                                    out_specs=P("data")))
    np.testing.assert_allclose(forward(state, x, jnp.asarray(groups)), want, rtol=1e-5,
                               atol=1e-5)
    shard.set_mode("single", groups[:7])
    forward, state = sharded(shard)
    with pytest.raises(LocalNormError, match="len\\(group\\)=7"):
        forward(state, x)


def test_axis_name_outside_shard_map_is_a_clear_error():
    _, shard = layers(4)
    x = jnp.ones((8, 3)) * jnp.arange(8.0)[:, None]
    for call in (lambda: shard(x), lambda: nnx.jit(lambda m, x: m(x))(shard, x)):
        with pytest.raises(LocalNormError) as info:
            call()
        text = str(info.value)
        assert "axis_name='data'" in text and "shard_map" in text and "predict" in text


@pytest.mark.parametrize("num_groups,batch", [(8, 20), (8, 12)])
def test_local_batch_must_hold_whole_groups(num_groups, batch):
    """N=20, K=8 on 4 devices: 5 samples per device for 2 groups would be grouped 3+2,
    unlike the single-device layer's groups; refused at trace time."""
    _, shard = layers(num_groups)
    forward, state = sharded(shard)
    x = jax.random.normal(jax.random.key(8), (batch, 3))
    with pytest.raises(LocalNormError) as info:
        forward(state, x)
    local = batch // 4
    assert f"x.shape[0]={local}" in str(info.value)
    assert f"num_groups={num_groups}" in str(info.value)


@pytest.mark.parametrize("groups", [dict(virtual_batch_size=2), dict(num_groups=8)])
def test_ghost_batchnorm_under_shard_map_equals_single_device(groups):
    """Ghost BatchNorm (running statistics) with axis_name, N=16 on 4 devices: 8 virtual
    batches of 2, two per device. K from virtual_batch_size was counted on the local
    shard (4 // 2 = 2, then 2 / 4 devices: one group of 4 per device, another output),
    and the running update grouped each shard by the global K (groups of 1 sample: no
    update at all on (N, C) input) and differed per device. Now the outputs and the
    running statistics (the same on every device) are the single-device layer's."""
    x = jax.random.normal(jax.random.key(3), (16, 3)) * jnp.arange(1.0, 17.0)[:, None]
    options = dict(partition="contiguous", momentum=0.5, **groups)
    single = lf.GhostBatchNorm(3, rngs=nnx.Rngs(0), **options)
    shard = lf.GhostBatchNorm(3, axis_name="data", rngs=nnx.Rngs(0), **options)
    graph, state = nnx.split(shard)

    def step(state, x):
        layer = nnx.merge(graph, state)
        return layer(x), nnx.state(layer, nnx.BatchStat)

    y, stats = jax.jit(jax.shard_map(step, mesh=mesh(), in_specs=(P(), P("data")),
                                     out_specs=(P("data"), P())))(state, x)
    np.testing.assert_allclose(y, single(x), atol=1e-5)
    assert float(jnp.abs(single.mean[...]).max()) > 0.1
    np.testing.assert_allclose(stats["mean"][...], single.mean[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"][...], single.var[...], rtol=1e-5)

    linen = ll.GhostBatchNorm(axis_name="data", **options)
    variables = ll.GhostBatchNorm(**options).init(jax.random.key(0), x)
    y, updates = jax.jit(jax.shard_map(
        lambda v, x: linen.apply(v, x, mutable=["batch_stats"]), mesh=mesh(),
        in_specs=(P(), P("data")), out_specs=(P("data"), P())))(variables, x)
    want, want_updates = ll.GhostBatchNorm(**options).apply(variables, x,
                                                             mutable=["batch_stats"])
    np.testing.assert_allclose(y, want, atol=1e-5)
    for name in ("mean", "var"):
        np.testing.assert_allclose(updates["batch_stats"][name],
                                   want_updates["batch_stats"][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("virtual_batch_size,batch", [(2, 12), (5, 44)])
def test_a_virtual_batch_that_cannot_be_sharded_says_so_in_its_terms(virtual_batch_size,
                                                                      batch):
    """K counted from virtual_batch_size on the global batch must split into whole groups
    per device: N=12, v=2 gives K=6 on 4 devices; N=44, v=5 gives K=8, two groups per
    device of 11 samples. The refusal spoke of a num_groups the user never gave ('use
    num_groups = 4'); it now names the virtual batch size and the global batch to use."""
    x = jax.random.normal(jax.random.key(9), (batch, 3))
    options = dict(virtual_batch_size=virtual_batch_size, partition="contiguous")
    shard = lf.GhostBatchNorm(3, axis_name="data", rngs=nnx.Rngs(0), **options)
    forward, state = sharded(shard)
    linen = ll.GhostBatchNorm(axis_name="data", **options)
    variables = ll.GhostBatchNorm(**options).init(jax.random.key(0), x)
    linen_forward = jax.jit(jax.shard_map(
        lambda v, x: linen.apply(v, x, mutable=["batch_stats"]), mesh=mesh(),
        in_specs=(P(), P("data")), out_specs=(P("data"), P())))
    for call in (lambda: forward(state, x), lambda: linen_forward(variables, x)):
        with pytest.raises(LocalNormError) as info:
            call()
        text = str(info.value)
        assert f"virtual_batch_size={virtual_batch_size}" in text
        assert f"global x.shape[0]={batch}" in text
        assert f"multiple of 4 * virtual_batch_size = {4 * virtual_batch_size}" in text
    # the global batch the message asks for shards
    x = jax.random.normal(jax.random.key(9), (8 * virtual_batch_size, 3))
    assert forward(state, x).shape == x.shape
