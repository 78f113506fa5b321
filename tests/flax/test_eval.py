"""Model-level API of localnorm.flax: the evaluation switch, predict under the four
protocols (checked against direct passes through the model), convert_batchnorm."""

from __future__ import annotations

import numpy as np
import pytest
from flax_models import SmallCNN, images, localnorm_cnn

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

import localnorm  # noqa: E402
import localnorm.flax as lf  # noqa: E402
from localnorm import LocalNormError  # noqa: E402


def outputs(model, x, mode, group=0):
    """The model's output in evaluation with every LocalNorm layer in mode/group."""
    model.eval()
    with lf.eval_mode(model, mode, group):
        return np.asarray(model(x))


@pytest.fixture(scope="module")
def model():
    return localnorm_cnn(num_groups=4)


# -- evaluation switch --------------------------------------------------------------------


def test_set_eval_mode_and_context_manager_restore(model):
    layers = lf.localnorm_layers(model)
    assert len(layers) == 2
    lf.set_eval_mode(model, "set", 2)
    assert all((l.mode, l.group) == ("set", 2) for l in layers)
    with lf.eval_mode(model, "single", np.array([0, 1, 3])) as same:
        assert same is model
        assert all(l.mode == "single" and l.group.tolist() == [0, 1, 3] for l in layers)
    assert all((l.mode, l.group) == ("set", 2) for l in layers)
    with pytest.raises(RuntimeError), lf.eval_mode(model, "batch"):
        raise RuntimeError("boom")
    assert all(l.mode == "set" for l in layers)
    lf.set_eval_mode(model, "batch")


def test_set_eval_mode_is_all_or_nothing(model):
    lf.set_eval_mode(model, "set", 1)
    with pytest.raises(LocalNormError, match="group=9"):
        lf.set_eval_mode(model, "set", 9)
    with pytest.raises(LocalNormError, match="stateless"):
        lf.set_eval_mode(model, "running")
    assert all((l.mode, l.group) == ("set", 1) for l in lf.localnorm_layers(model))
    lf.set_eval_mode(model, "batch")


def test_model_without_localnorm_layers():
    with pytest.raises(LocalNormError, match="SmallCNN"):
        lf.set_eval_mode(SmallCNN(rngs=nnx.Rngs(0)), "set")
    with pytest.raises(LocalNormError, match="LocalNorm"):
        lf.predict(SmallCNN(rngs=nnx.Rngs(0)), images(8))


# -- predict ------------------------------------------------------------------------------


def test_predict_batch(model):
    x = images(12)
    pred = lf.predict(model, x, protocol="batch", batch_size=8)
    want = np.concatenate([outputs(model, x[:8], "batch"), outputs(model, x[8:], "batch")])
    np.testing.assert_allclose(pred.scores, want, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, want.argmax(-1))
    assert pred.agreement is None
    assert isinstance(pred, localnorm.Prediction)


def test_predict_single_given_and_random_groups(model):
    x = images(8, seed=1)
    pred = lf.predict(model, x, protocol="single", group=2)
    np.testing.assert_allclose(pred.scores, outputs(model, x, "single", 2), atol=1e-5)
    drawn = np.random.default_rng(5).integers(0, 4, 8)
    seeded = lf.predict(model, x, protocol="single", generator=5)
    np.testing.assert_allclose(seeded.scores, outputs(model, x, "single", drawn), atol=1e-5)
    again = lf.predict(model, x, protocol="single", generator=np.random.default_rng(5))
    np.testing.assert_array_equal(again.scores, seeded.scores)
    key = jax.random.key(3)
    from_key = lf.predict(model, x, protocol="single", generator=key)
    # One scheme in every adapter: a key becomes the NumPy seed it draws.
    key_seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    key_groups = np.random.default_rng(key_seed).integers(0, 4, 8)
    np.testing.assert_allclose(from_key.scores, outputs(model, x, "single", key_groups),
                               atol=1e-5)
    with pytest.raises(LocalNormError, match="str"):
        lf.predict(model, x, protocol="single", generator="seed")


@pytest.mark.parametrize("vote", ["hard", "soft"])
def test_predict_single_voting(model, vote):
    x = images(6, seed=2)
    pred = lf.predict(model, x, protocol="single-voting", vote=vote, batch_size=8)
    per_group = np.stack([outputs(model, x, "single", k) for k in range(4)])
    want = localnorm.vote(per_group, vote, from_logits=True)
    np.testing.assert_allclose(pred.scores, want.scores, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, want.labels)
    np.testing.assert_allclose(pred.agreement, want.agreement)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_predict_voting_equals_set_mode_passes(partition):
    model = localnorm_cnn(num_groups=4, seed=partition == "strided")
    for layer in lf.localnorm_layers(model):
        layer.partition = partition
    x = images(8, seed=3)
    pred = lf.predict(model, x, protocol="voting", set_size=4)
    per_group = np.stack([
        np.concatenate([outputs(model, x[s:s + 4], "set", k) for s in (0, 4)])
        for k in range(4)
    ])
    want = localnorm.vote(per_group, "hard", from_logits=True)
    np.testing.assert_allclose(pred.scores, want.scores, atol=1e-6)
    np.testing.assert_array_equal(pred.labels, want.labels)
    np.testing.assert_allclose(pred.agreement, want.agreement)


def test_predict_restores_train_flags_and_modes():
    class WithDropout(nnx.Module):
        def __init__(self):
            self.net = localnorm_cnn(2)
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.drop(self.net(x))

    model = WithDropout()
    model.train()
    lf.set_eval_mode(model, "set", 1)
    lf.predict(model, images(8), protocol="voting")
    assert model.drop.deterministic is False
    assert all(not l.deterministic and (l.mode, l.group) == ("set", 1)
               for l in lf.localnorm_layers(model))


def test_predict_refuses_layers_that_disagree():
    model = localnorm_cnn(4)
    model.block.layers[1] = lf.LocalNorm(8, num_groups=2, rngs=nnx.Rngs(0))
    with pytest.raises(LocalNormError, match="num_groups"):
        lf.predict(model, images(8))


# -- convert_batchnorm -------------------------------------------------------------------


def test_convert_batchnorm_replaces_every_batchnorm_and_tiles_parameters():
    model = SmallCNN(rngs=nnx.Rngs(0))
    model.bn1.scale[...] = jnp.arange(1.0, 9.0)
    model.block.layers[1].bias[...] = jnp.arange(8.0)
    bn_scale = np.asarray(model.bn1.scale[...])
    out = lf.convert_batchnorm(model, num_groups=3, partition="strided")
    assert out is model
    assert not [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    layers = lf.localnorm_layers(model)
    assert len(layers) == 2
    assert all((l.num_groups, l.partition, l.epsilon) == (3, "strided", 1e-5) for l in layers)
    np.testing.assert_array_equal(model.bn1.scale[...], np.tile(bn_scale, (3, 1)))
    np.testing.assert_array_equal(model.block.layers[1].bias[...], np.tile(np.arange(8.0), (3, 1)))


def test_convert_batchnorm_keeps_shared_layers_shared():
    class Shared(nnx.Module):
        def __init__(self):
            bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
            self.a = bn
            self.b = bn
            self.seq = nnx.Sequential(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), bn)
            self.other = nnx.BatchNorm(3, rngs=nnx.Rngs(1))

    model = lf.convert_batchnorm(Shared(), 2)
    assert isinstance(model.a, lf.LocalNorm)
    assert model.a is model.b is model.seq.layers[1]
    assert isinstance(model.other, lf.LocalNorm) and model.other is not model.a
    assert not [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert len(lf.localnorm_layers(model)) == 2


@pytest.mark.parametrize("ghost", [False, True])
def test_convert_batchnorm_of_layers_stacked_for_nnx_scan(ghost):
    """BatchNorm layers built under nnx.vmap (stacked for nnx.scan) have (L, C) leaves:
    they were tiled into (L * K, C) parameters, refused at the call as a checkpoint of
    another group count; now each stacked layer's row goes to its K groups along the batch
    axis, (L, K, C), and the scan gives the converted layers' output one by one."""
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return nnx.BatchNorm(4, rngs=rngs)

    stack = create(nnx.Rngs(0))
    stack.scale[...] = 1 + jnp.arange(12.0).reshape(3, 4) / 10
    stack.mean[...] = jnp.arange(12.0).reshape(3, 4) / 10
    converted = lf.convert_batchnorm(stack, num_groups=2, ghost=ghost)
    rows = 1 if ghost else 2
    assert converted.scale.shape == (3, rows, 4)
    np.testing.assert_array_equal(converted.scale[...][:, -1], stack.scale[...])
    if ghost:
        np.testing.assert_array_equal(converted.mean[...][:, 0], stack.mean[...])
    x = jax.random.normal(jax.random.key(0), (8, 4))
    scan = nnx.scan(lambda layer, x: layer(x), in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    graphdef, state = nnx.split(converted)
    want = x
    for i in range(3):
        want = nnx.merge(graphdef, jax.tree.map(lambda v: v[i], state))(want)
    np.testing.assert_allclose(scan(converted, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [3, 8])
def test_per_sample_groups_on_layers_stacked_for_nnx_scan(n):
    """A per-sample group array set on LocalNorm layers stacked for nnx.scan was state of
    the stack, so the scan sliced it per layer: with N equal to the number of layers
    (3) layer i silently gave every sample group i's scale/bias, otherwise the scan
    raised ('different leading axis sizes'). The stack now keeps the groups once per
    layer: set_eval_mode and predict give the layers' output one by one, also under a scan
    that broadcasts the state other than the parameters."""
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return lf.LocalNorm(4, rngs=rngs)

    readout = jax.random.normal(jax.random.key(7), (3, 3, 4))

    class Stacked(nnx.Module):
        def __init__(self):
            self.stack = create(nnx.Rngs(0))
            self.stack.scale[...] = 1 + jax.random.uniform(jax.random.key(1),
                                                           self.stack.scale.shape)

        def __call__(self, x):
            scan = nnx.scan(lambda layer, x: layer(x), in_axes=(0, nnx.Carry),
                            out_axes=nnx.Carry)
            return (scan(self.stack, x) * readout).sum(axis=(1, 2))

    model = Stacked()
    graphdef, state = nnx.split(model.stack)
    layers = [nnx.merge(graphdef, jax.tree.map(lambda v: v[i], state)) for i in range(3)]
    x = jax.random.normal(jax.random.key(n), (n, 3, 3, 4))
    groups = (np.arange(n) * 3 + 1) % 4
    want = x
    for layer in layers:
        layer.eval()
        want = layer.set_mode("single", groups)(want)
    want = (want * readout).sum(axis=(1, 2))
    np.testing.assert_allclose(lf.predict(model, x, protocol="single", group=groups).scores,
                               want, rtol=1e-5, atol=1e-5)
    model.eval()
    lf.set_eval_mode(model, "single", groups)
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5)
    assert lf.predict(model, x, protocol="single", generator=0).scores.shape == (n, 4)
    # a scan that slices only the parameters and broadcasts the rest of the state
    broadcast = nnx.scan(lambda layer, x: layer(x), out_axes=nnx.Carry,
                         in_axes=(nnx.StateAxes({nnx.Param: 0, ...: None}), nnx.Carry))
    np.testing.assert_allclose((broadcast(model.stack, x) * readout).sum(axis=(1, 2)), want,
                               rtol=1e-5, atol=1e-5)


def test_convert_batchnorm_refuses_several_channel_axes_up_front():
    class Two(nnx.Module):
        def __init__(self):
            self.good = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
            self.bad = nnx.BatchNorm(3, axis=(1, 2), rngs=nnx.Rngs(0))

    model = Two()
    with pytest.raises(LocalNormError, match=r"axis=\(1, 2\)"):
        lf.convert_batchnorm(model, 2)
    assert isinstance(model.good, nnx.BatchNorm)  # nothing changed


def test_one_group_is_batchnorm_in_training():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    bn.scale[...] = jnp.asarray([0.5, 1.0, 2.0])
    bn.bias[...] = jnp.asarray([0.1, -0.2, 0.3])
    x = images(8)
    want = bn(x)  # training: batch statistics
    layer = lf.convert_batchnorm(bn, num_groups=1)
    assert isinstance(layer, lf.LocalNorm) and not layer.deterministic
    np.testing.assert_allclose(layer(x), want, atol=1e-5)


def test_convert_batchnorm_in_containers_keeps_eval_state():
    class Holder(nnx.Module):
        def __init__(self):
            self.items = nnx.List([nnx.BatchNorm(2, rngs=nnx.Rngs(0))])
            self.named = nnx.Dict({"a": nnx.BatchNorm(2, use_running_average=True,
                                                      rngs=nnx.Rngs(0))})

    holder = lf.convert_batchnorm(Holder(), 2)
    assert isinstance(holder.items[0], lf.LocalNorm) and not holder.items[0].deterministic
    assert isinstance(holder.named["a"], lf.LocalNorm) and holder.named["a"].deterministic
    with pytest.raises(LocalNormError, match="num_groups=0"):
        lf.convert_batchnorm(Holder(), 0)


def test_predict_eager_equals_jit_and_refuses_non_finite(model):
    x = images(8, seed=4)
    jitted = lf.predict(model, x, protocol="voting", vote="soft")
    eager = lf.predict(model, x, protocol="voting", vote="soft", jit=False)
    np.testing.assert_allclose(jitted.scores, eager.scores, atol=1e-5)
    bad = x.at[3, 0, 0, 0].set(jnp.nan)
    for jit in (True, False):
        with pytest.raises(LocalNormError, match="1 non-finite of 864"):
            lf.predict(model, bad, jit=jit)
        # check_finite=False: not checked, by predict nor by the (eager) layers; the NaN
        # poisons its group's statistics, so all of that group's scores are NaN.
        pred = lf.predict(model, bad, protocol="batch", jit=jit, check_finite=False)
        finite = np.isfinite(np.asarray(pred.scores)).all(axis=1)
        np.testing.assert_array_equal(finite, [True] * 2 + [False] * 2 + [True] * 4)  # group 1
    assert all(l.check_finite for l in lf.localnorm_layers(model))  # restored


#: How often _Traced ran its Python code: under nnx.jit, once per trace (compilation).
_TRACES = [0]


class _Traced(nnx.Module):
    """Counts how often nnx.jit traces the model (a counter outside the module, so the
    count is no part of the model's state)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        _TRACES[0] += 1
        return self.net(x)


def test_predict_compiles_once_whatever_the_number_of_chunks():
    """Per-sample groups are traced data: the random SINGLE groups of a new chunk reuse
    the compiled model instead of recompiling it."""
    model = _Traced(localnorm_cnn(4))
    x = images(40, seed=5)
    kw = dict(protocol="single", batch_size=8)
    lf.predict(model, x[:8], generator=0, **kw)           # compiles for chunks of 8
    traces = _TRACES[0]
    assert traces >= 1
    pred = lf.predict(model, x, generator=1, **kw)        # 5 chunks, new random groups
    assert _TRACES[0] == traces
    groups = np.random.default_rng(1).integers(0, 4, 40)
    np.testing.assert_allclose(pred.scores, outputs(model, x, "single", groups), atol=1e-5)


def test_predict_runs_sharded_layers_on_one_device():
    """Layers built for shard_map (axis_name) evaluate in predict as on one device."""
    plain = localnorm_cnn(4)
    sharded = localnorm_cnn(4)
    for layer in lf.localnorm_layers(sharded):
        layer.axis_name = "data"
    x = images(16, seed=6)
    for protocol in ("batch", "voting", "single-voting"):
        want = lf.predict(plain, x, protocol=protocol, batch_size=8)
        got = lf.predict(sharded, x, protocol=protocol, batch_size=8)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    assert all(l.axis_name == "data" for l in lf.localnorm_layers(sharded))
