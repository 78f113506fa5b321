"""The Flax layers: NNX ``localnorm.flax.LocalNorm`` and Linen
``localnorm.flax.linen.LocalNorm`` against the NumPy reference, the train/eval idiom,
dtypes, jax transforms, and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flax_models import params, set_params

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402

from localnorm import LocalNormError, reference  # noqa: E402
from localnorm.flax import LocalNorm  # noqa: E402
from localnorm.flax import linen as ll  # noqa: E402


def nnx_layer(c, k=4, **kw):
    return LocalNorm(c, num_groups=k, rngs=nnx.Rngs(0), **kw)


# -- construction -----------------------------------------------------------------------


def test_defaults_parameters_and_no_batch_stats():
    layer = LocalNorm(16, rngs=nnx.Rngs(0))
    assert (layer.num_groups, layer.epsilon, layer.axis) == (4, 1e-5, -1)
    assert layer.partition == "contiguous"
    assert (layer.deterministic, layer.mode, layer.group) == (False, "batch", 0)
    assert layer.scale.shape == layer.bias.shape == (4, 16)
    assert layer.scale.dtype == jnp.float32
    np.testing.assert_array_equal(layer.scale[...], np.ones((4, 16)))
    np.testing.assert_array_equal(layer.bias[...], np.zeros((4, 16)))
    assert len(jax.tree.leaves(nnx.state(layer, nnx.BatchStat))) == 0
    assert set(nnx.state(layer, nnx.Param).keys()) == {"scale", "bias"}


def test_linen_has_only_params():
    x = jnp.ones((8, 3)) + jnp.arange(8.0)[:, None]
    variables = ll.LocalNorm().init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    assert variables["params"]["scale"].shape == (4, 3)
    ll.LocalNorm().apply(variables, x)  # no mutable= needed


def test_no_scale_no_bias():
    layer = nnx_layer(3, use_scale=False, use_bias=False)
    assert layer.scale is None and layer.bias is None
    x = np.random.default_rng(0).normal(size=(8, 3))
    want = reference.local_norm(x, np.ones((4, 3)), np.zeros((4, 3)))
    np.testing.assert_allclose(layer(jnp.asarray(x, jnp.float32)), want, atol=2e-5)


# -- math against the reference, NNX and Linen identical ---------------------------------


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("mode,group", [("batch", 0), ("single", 3), ("single", "per-sample"),
                                        ("set", 1)])
@pytest.mark.parametrize("axis", [-1, 1])
def test_eval_modes_match_reference_and_linen(mode, group, partition, axis):
    n, k = 10, 4  # a ragged batch: groups of 3, 3, 2, 2
    rng = np.random.default_rng(1)
    shape = (n, 5, 2, 3) if axis == -1 else (n, 3, 5, 2)
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    gamma, beta = params(k, 3)
    if group == "per-sample":
        group = rng.integers(0, k, n)
    layer = nnx_layer(3, k, axis=axis, partition=partition)
    set_params(layer, gamma, beta)
    layer.eval()
    layer.set_mode(mode, group)
    y = np.asarray(layer(jnp.asarray(x)))
    want = reference.local_norm(x, gamma, beta, axis=axis, mode=mode, group=group,
                                partition=partition)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    lin = ll.LocalNorm(num_groups=k, axis=axis, partition=partition, deterministic=True)
    variables = {"params": {"scale": layer.scale[...], "bias": layer.bias[...]}}
    y_linen = lin.apply(variables, jnp.asarray(x), mode=mode, group=group)
    np.testing.assert_array_equal(np.asarray(y_linen), y)


def test_training_is_batch_mode_whatever_the_eval_mode():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 4, 4, 3)), jnp.float32)
    layer = nnx_layer(3, 2)
    set_params(layer, *params(2, 3))
    train = layer(x)
    layer.set_mode("set", 1)
    np.testing.assert_array_equal(layer(x), train)          # still training
    layer.eval()
    assert not np.allclose(layer(x), train)                   # "set" in evaluation
    np.testing.assert_array_equal(layer(x, deterministic=False), train)  # call override
    layer.train()
    assert layer.deterministic is False
    np.testing.assert_array_equal(layer(x), train)


def test_model_train_eval_and_view_flip_deterministic():
    class Block(nnx.Module):
        def __init__(self):
            self.norm = nnx_layer(3, 2)
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))

    block = Block()
    block.eval()
    assert block.norm.deterministic and block.drop.deterministic
    block.train()
    assert not block.norm.deterministic
    view = nnx.view(block, deterministic=True)
    assert view.norm.deterministic and not block.norm.deterministic


# -- dtypes -------------------------------------------------------------------------------


def test_bfloat16_input_float32_statistics():
    rng = np.random.default_rng(3)
    # A large offset: bfloat16 statistics would lose the spread entirely.
    x32 = (100 + rng.normal(size=(8, 4, 4, 3))).astype(ml_dtypes.bfloat16).astype(np.float32)
    layer = nnx_layer(3, 2)
    set_params(layer, *params(2, 3))
    y16 = layer(jnp.asarray(x32, jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    assert layer.scale.dtype == jnp.float32
    y32 = layer(jnp.asarray(x32))
    # bfloat16 output is the float32 computation rounded once.
    np.testing.assert_array_equal(np.asarray(y16, np.float32),
                                  np.asarray(y32.astype(jnp.bfloat16), np.float32))
    want = reference.local_norm(x32, *params(2, 3))
    np.testing.assert_allclose(np.asarray(y16, np.float32), want, rtol=2e-2, atol=2e-2)


def test_dtype_is_the_result_dtype():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(8, 3)), jnp.bfloat16)
    up = nnx_layer(3, 2, dtype=jnp.float32)(x)
    assert up.dtype == jnp.float32
    np.testing.assert_array_equal(up, nnx_layer(3, 2)(x.astype(jnp.float32)))
    assert nnx_layer(3, 2, dtype=jnp.bfloat16)(x.astype(jnp.float32)).dtype == jnp.bfloat16


def test_float64_under_x64():
    with jax.enable_x64(True):
        x = np.random.default_rng(5).normal(size=(8, 3, 2))
        gamma, beta = params(4, 2)
        layer = nnx_layer(2, param_dtype=jnp.float64)
        set_params(layer, gamma, beta)
        y = layer(jnp.asarray(x))
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, reference.local_norm(x, gamma, beta), rtol=1e-12,
                                   atol=1e-12)


# -- transforms ---------------------------------------------------------------------------


def test_jit_and_nnx_jit_equal_eager():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(12, 4, 3)), jnp.float32)
    layer = nnx_layer(3, 4)
    set_params(layer, *params(4, 3))
    layer.eval()
    layer.set_mode("single", np.arange(12) % 4)
    eager = layer(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), eager, atol=1e-6)
    graphdef, state = nnx.split(layer)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    np.testing.assert_allclose(jitted(state, x), eager, atol=1e-6)


def test_grad_matches_reference_vjp():
    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(10, 3, 4))
        gamma, beta = params(4, 4)
        ct = rng.normal(size=x.shape)
        layer = nnx_layer(4, param_dtype=jnp.float64)
        set_params(layer, gamma, beta)
        graphdef, state = nnx.split(layer)

        def loss(state, x):
            return jnp.sum(nnx.merge(graphdef, state)(x) * ct)

        gs, gx = jax.grad(loss, argnums=(0, 1))(state, jnp.asarray(x))
        dx, dg, db = reference.local_norm_vjp(x, gamma, beta, ct)
        np.testing.assert_allclose(gx, dx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gs["scale"][...], dg, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gs["bias"][...], db, rtol=1e-10, atol=1e-10)


def test_nnx_grad_of_a_model():
    layer = nnx_layer(3, 2)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(8, 3)), jnp.float32)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2 * jnp.arange(3.0)))(layer)
    assert grads["scale"][...].shape == (2, 3)
    assert np.all(np.isfinite(grads["scale"][...]))
    assert np.abs(np.asarray(grads["scale"][...])).max() > 0


def test_vmap_over_independent_batches():
    xs = jnp.asarray(np.random.default_rng(9).normal(size=(3, 8, 4, 2)), jnp.float32)
    layer = nnx_layer(2, 2)
    set_params(layer, *params(2, 2))
    graphdef, state = nnx.split(layer)
    out = jax.vmap(lambda x: nnx.merge(graphdef, state)(x))(xs)
    for i in range(3):
        np.testing.assert_allclose(out[i], layer(xs[i]), atol=1e-6)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,named", [
    ({"num_features": 0}, "num_features=0"),
    ({"num_features": True}, "num_features=True"),
    ({"num_groups": 0}, "num_groups=0"),
    ({"epsilon": -1.0}, "epsilon=-1.0"),
    ({"partition": "interleaved"}, "partition='interleaved'"),
    ({"mode": "bogus"}, "mode='bogus'"),
    ({"mode": "running"}, "mode='running'"),
    ({"mode": "set", "group": 7}, "group=7"),
    ({"mode": "set", "group": [0, 1]}, "mode='set'"),
    ({"mode": "single", "group": [0, 4]}, "[0, 3]"),
    ({"axis": 0}, "axis=0"),
    ({"axis": (1, 2)}, "axis=(1, 2)"),
    ({"axis": 1.0}, "axis=1.0"),
])
def test_construction_errors_name_the_value(kwargs, named):
    kw = {"num_features": 3, **kwargs}
    with pytest.raises(LocalNormError) as info:
        LocalNorm(kw.pop("num_features"), rngs=nnx.Rngs(0), **kw)
    assert named in str(info.value)
    assert "Fix" in str(info.value)


@pytest.mark.parametrize("kwargs,named", [
    ({"epsilon": 0.0}, "epsilon=0.0"),
    ({"num_groups": 0}, "num_groups=0"),
    ({"axis": 0}, "axis=0"),
    ({"mode": "running"}, "stateless"),
    ({"partition": "x"}, "partition='x'"),
])
def test_linen_construction_errors(kwargs, named):
    with pytest.raises(LocalNormError, match=re.escape(named)):
        ll.LocalNorm(**kwargs)


@pytest.mark.parametrize("axis", [(1,), [1], (-2,)])
def test_one_element_axis_tuple_is_its_int_in_both_apis(axis):
    # nnx.BatchNorm and nn.BatchNorm take axis=(1,); the Linen layer accepted it when made
    # and then refused it at its first call.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3, 5)), jnp.float32)
    layer = ll.LocalNorm(num_groups=2, axis=axis)
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["scale"].shape == (2, 3)
    expected = reference.local_norm(np.asarray(x), np.ones((2, 3)), np.zeros((2, 3)), axis=1)
    np.testing.assert_allclose(layer.apply(variables, x), expected, atol=1e-5)
    np.testing.assert_allclose(nnx_layer(3, 2, axis=axis)(x), expected, atol=1e-5)


def test_running_mode_says_stateless():
    with pytest.raises(LocalNormError, match="stateless"):
        nnx_layer(3).set_mode("running")
    with pytest.raises(LocalNormError, match="stateless"):
        ll.LocalNorm().apply({}, jnp.ones((8, 3)), mode="running")


@pytest.mark.parametrize("shape,named", [
    ((8, 5), "x.shape[axis]=5"),     # wrong channel count
    ((3, 3), "x.shape[0]=3"),        # fewer samples than the 4 groups
    ((4, 3), "1 value(s)"),          # one sample per group of a dense layer
    ((3,), "x.ndim=1"),
])
def test_input_errors(shape, named):
    ramp = jnp.arange(shape[0], dtype=jnp.float32).reshape(-1, *[1] * (len(shape) - 1))
    with pytest.raises(LocalNormError) as info:
        nnx_layer(3)(jnp.ones(shape) * ramp)
    assert named in str(info.value)


def test_errors_speak_flax():
    """Remedies a Flax user can type: no torch DataLoader, no 'running' mode, jnp casts."""
    with pytest.raises(LocalNormError) as info:
        nnx_layer(3)(jnp.ones((3, 3)) * jnp.arange(3.0)[:, None])
    text = str(info.value)
    assert "drop the last, short batch" in text and "DataLoader" not in text
    with pytest.raises(LocalNormError) as info:
        nnx_layer(3)(jnp.ones((8, 5)))
    assert "num_features=5" in str(info.value)
    layer = nnx_layer(3)
    layer.eval()
    layer.set_mode("single")
    with pytest.raises(LocalNormError) as info:
        layer(jnp.ones((8, 3)))
    assert "'set' mode instead" in str(info.value) and "'running'" not in str(info.value)
    for call in (lambda: nnx_layer(3)(jnp.ones((8, 3), jnp.int32)),
                 lambda: ll.LocalNorm().init(jax.random.key(0), jnp.ones((8, 3), jnp.int32))):
        with pytest.raises(TypeError) as info:
            call()
        assert "int32" in str(info.value) and "x.astype(jnp.float32)" in str(info.value)
    with pytest.raises(LocalNormError, match="x.ndim=1") as info:
        ll.LocalNorm().init(jax.random.key(0), jnp.ones((8,)))
    assert "DataLoader" not in str(info.value) and "LocalNorm2d" not in str(info.value)


def _nan_input():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    x[2, 1], x[5, 0] = np.nan, np.inf
    return jnp.asarray(x)


def test_non_finite_refused_in_eager_evaluation_only():
    x = _nan_input()
    layer = nnx_layer(3)
    y = layer(x)  # training: not checked (no BatchNorm scans its input), NaN propagates
    assert not np.all(np.isfinite(np.asarray(y)))
    layer.eval()
    with pytest.raises(LocalNormError, match="2 non-finite of 24") as info:
        layer(x)
    assert "check_finite=False" in str(info.value)
    assert not np.all(np.isfinite(np.asarray(layer(x, deterministic=False))))
    # Under jit the values are unknown: nothing is checked, nothing raises.
    jitted = nnx.jit(lambda m, x: m(x))(layer, x)
    assert jitted.shape == x.shape
    unchecked = nnx_layer(3, check_finite=False)
    unchecked.eval()
    assert unchecked.check_finite is False and unchecked(x).shape == x.shape


def test_concrete_input_captured_by_a_jitted_function_is_checked():
    # An array closed over by a jitted function is concrete: its check runs eagerly
    # (it used to be traced, and reading its truth raised TracerBoolConversionError).
    layer = nnx_layer(3)
    layer.eval()
    clean = jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32)
    assert jax.jit(lambda s: layer(clean) * s)(2.0).shape == (8, 3)
    x = _nan_input()
    with pytest.raises(LocalNormError, match="2 non-finite of 24"):
        jax.jit(lambda s: layer(x) * s)(2.0)


def test_linen_non_finite_refused_in_eager_evaluation_only():
    x = _nan_input()
    variables = ll.LocalNorm().init(jax.random.key(0), x)
    ll.LocalNorm().apply(variables, x)  # training: not checked
    with pytest.raises(LocalNormError, match="non-finite"):
        ll.LocalNorm().apply(variables, x, deterministic=True)
    ll.LocalNorm(check_finite=False).apply(variables, x, deterministic=True)
    jax.jit(lambda v, x: ll.LocalNorm().apply(v, x, deterministic=True))(variables, x)


def test_per_sample_group_length_checked():
    layer = nnx_layer(3)
    layer.eval()
    layer.set_mode("single", [0, 1, 2])
    with pytest.raises(LocalNormError, match="x.shape\\[0\\]=8"):
        layer(jnp.ones((8, 2, 3)) * jnp.arange(2.0)[:, None])


def test_linen_wrong_channels_is_a_localnorm_error():
    lin = ll.LocalNorm(num_groups=2)
    variables = lin.init(jax.random.key(0), jnp.ones((8, 3)) * jnp.arange(8.0)[:, None])
    with pytest.raises(LocalNormError, match="x.shape\\[axis\\]=4") as info:
        lin.apply(variables, jnp.ones((8, 4)))
    assert "layer.init" in str(info.value)  # Linen's remedy: new variables


@pytest.mark.parametrize("other", [dict(num_features=3, num_groups=8),
                                   dict(num_features=5, num_groups=4)])
def test_nnx_update_with_another_checkpoint_shape_is_refused(other):
    """nnx.update copies values whatever their shape; the layer refuses parameters that
    are not (num_groups, num_features), before they could be used with the wrong K."""
    layer = nnx_layer(3, 4)
    checkpoint = nnx.state(LocalNorm(rngs=nnx.Rngs(1), **other))
    nnx.update(layer, checkpoint)
    x = jnp.ones((8, 3)) * jnp.arange(8.0)[:, None]
    for call in (lambda: layer(x), lambda: nnx.jit(lambda m, x: m(x))(layer, x)):
        with pytest.raises(LocalNormError) as info:
            call()
        text = str(info.value)
        assert f"({other['num_groups']}, {other['num_features']})" in text and "(4, 3)" in text
        assert "num_groups" in text


def test_nnx_state_round_trip_with_the_same_shape():
    source = nnx_layer(3, 4)
    set_params(source, *params(4, 3))
    target = nnx_layer(3, 4)
    nnx.update(target, nnx.state(source))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
    np.testing.assert_array_equal(target(x), source(x))


def test_docstring_examples_run():
    import doctest

    from localnorm.flax import _layers as _nnx

    for module in (_nnx, ll):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
