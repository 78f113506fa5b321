"""Hostile input to the Flax adapter found by the audit after the refactors of issue 13:
each case gave a raw traceback or a silently wrong value; now a LocalNormError that says
what was received and how to fix it (or the right value)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import localnorm.flax as lf  # noqa: E402
from localnorm import LocalNormError  # noqa: E402
from localnorm.flax import linen as ll  # noqa: E402

X = jax.random.normal(jax.random.key(0), (8, 3, 3, 4))


def nnx_layer(**kw):
    return lf.LocalNorm(4, rngs=nnx.Rngs(0), **kw)


def test_the_nnx_call_reads_deterministic_only_as_a_bool():
    """The string 'False' is truthy: it evaluated the layer where training was asked."""
    layer = nnx_layer()
    for bad in ("False", 1, 1.0):
        with pytest.raises(LocalNormError, match="deterministic"):
            layer(X, deterministic=bad)
    layer.deterministic = "False"  # an assignment, not model.eval()
    with pytest.raises(LocalNormError, match="Received: deterministic='False'"):
        layer(X)
    layer.deterministic = np.bool_(False)
    np.testing.assert_allclose(layer(X), nnx_layer()(X))


def test_a_traced_scalar_group_is_refused_with_the_way_out():
    """An int group picks a row of scale/bias at trace time; a traced one raised JAX's
    ConcretizationTypeError from inside int()."""
    @nnx.jit
    def nnx_call(layer, g):
        layer.set_mode("set", g)
        return layer(X)

    with pytest.raises(LocalNormError, match="traced") as err:
        nnx_call(nnx_layer(deterministic=True), jnp.array(1))
    assert "jnp.full" in str(err.value)

    linen = ll.LocalNorm()
    variables = linen.init(jax.random.key(0), X)
    with pytest.raises(LocalNormError, match="traced"):
        jax.jit(lambda g: linen.apply(variables, X, deterministic=True, mode="single",
                                      group=g))(jnp.array(2))
    # the way out the message gives: a per-sample array, traced data
    y = jax.jit(lambda g: linen.apply(variables, X, deterministic=True, mode="single",
                                      group=g))(jnp.full((8,), 2))
    np.testing.assert_allclose(y, linen.apply(variables, X, deterministic=True,
                                              mode="single", group=2), atol=1e-6)
    # a bad mode is still reported as the mode
    with pytest.raises(LocalNormError, match="mode"):
        jax.jit(lambda g: linen.apply(variables, X, deterministic=True, mode="nope",
                                      group=g))(jnp.array(0))
    # in "batch" mode the group is unused: the message says so (it said "picks the row")
    with pytest.raises(LocalNormError, match="not used") as err:
        jax.jit(lambda g: linen.apply(variables, X, deterministic=True, mode="batch",
                                      group=g))(jnp.array(0))
    assert "picks the row" not in str(err.value)


class Net(nnx.Module):
    def __init__(self):
        self.norm = nnx_layer()
        self.head = nnx.Linear(4, 3, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.head(self.norm(x).mean(axis=(1, 2)))


def test_predict_refuses_a_non_bool_jit_and_arrays_that_are_not_one_key():
    model = Net()
    with pytest.raises(LocalNormError, match="Received: jit='no'"):
        lf.predict(model, X, jit="no")
    with pytest.raises(LocalNormError, match="jit"):
        lf.predict(model, X, jit=0)
    # a batch of keys, an int array, a float array: raw JAX errors before
    for bad in (jax.random.split(jax.random.key(0), 2), jnp.array(3), jnp.array(1.5),
                jax.random.split(jax.random.PRNGKey(0), 3)):
        with pytest.raises(LocalNormError, match="Received: generator with shape"):
            lf.predict(model, X, protocol="single", generator=bad)
    # one key, new-style or legacy, draws the groups of the seed the key gives
    for key in (jax.random.key(3), jax.random.PRNGKey(3)):
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        np.testing.assert_array_equal(
            lf.predict(model, X, protocol="single", generator=key).scores,
            lf.predict(model, X, protocol="single", generator=seed).scores)


def test_convert_batchnorm_refuses_what_is_not_an_nnx_model():
    """Both reached nnx.iter_children: 'Expected a graph node, got BatchNorm'."""
    with pytest.raises(LocalNormError, match="flax.linen Module") as err:
        lf.convert_batchnorm(nn.BatchNorm())
    assert "localnorm.flax.linen.LocalNorm" in str(err.value)
    with pytest.raises(LocalNormError, match="Received: type\\(model\\)=object"):
        lf.convert_batchnorm(object())


@pytest.mark.parametrize("name,value", [("dtype", jnp.int32), ("dtype", jnp.complex64),
                                        ("dtype", "foo"), ("param_dtype", jnp.int32),
                                        ("param_dtype", bool), ("param_dtype", "foo")])
def test_dtype_options_are_real_floating(name, value):
    """dtype=int32 silently truncated the output to integers, complex64 made it complex;
    param_dtype=int32 built untrainable parameters; 'foo' was a raw TypeError."""
    with pytest.raises(LocalNormError, match=f"Received: {name}="):
        nnx_layer(**{name: value})
    with pytest.raises(LocalNormError, match=f"Received: {name}="):
        ll.LocalNorm(**{name: value})


def test_floating_dtype_options_still_work():
    y = nnx_layer(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)(X)
    assert y.dtype == jnp.bfloat16
    linen = ll.LocalNorm(dtype="float16")
    assert linen.apply(linen.init(jax.random.key(0), X), X).dtype == jnp.float16


def test_axis_name_is_a_mesh_axis_name():
    """axis_name=5 reached jax.lax.axis_size, which read it as a positional axis: 'axis 5
    is out of bounds for array of dimension 0'."""
    for bad in (5, ("data", 1), ()):
        with pytest.raises(LocalNormError, match="axis_name"):
            nnx_layer(axis_name=bad)
        with pytest.raises(LocalNormError, match="axis_name"):
            ll.LocalNorm(axis_name=bad)
    assert nnx_layer(axis_name=("data", "model")).axis_name == ("data", "model")


def export(fn, shape):
    batch, = jax.export.symbolic_shape("b")
    return jax.export.export(jax.jit(fn))(jax.ShapeDtypeStruct((batch, *shape), jnp.float32))


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_training_exports_with_a_symbolic_batch(partition):
    """docs/spec.md ("Batches smaller than K"): a JAX program exported with a symbolic
    batch size cannot refuse N < K, so its result is defined and finite. The training
    ("batch" mode) export raised InconclusiveDimensionOperation ('b' < '4') in the
    checks, then an AttributeError in the group layout."""
    layer = nnx_layer(partition=partition)
    layer.scale[...] = 1 + jnp.arange(16.0).reshape(4, 4) / 8
    exported = export(lambda x: layer(x), X.shape[1:])
    x9 = jnp.concatenate([X, X[:1] * 2])
    for x in (X, x9):  # even and ragged: the eager layer's output
        np.testing.assert_allclose(exported.call(x), layer(x), rtol=1e-5, atol=1e-5)
    # N=2 < K=4: two groups of one sample each (spatial values), two empty groups
    x2 = X[:2]
    # (either partition puts samples 0 and 1 in groups 0 and 1)
    single = nnx_layer(deterministic=True).set_mode("single", np.array([0, 1]))
    single.scale[...] = layer.scale[...]
    np.testing.assert_allclose(exported.call(x2), single(x2), rtol=1e-5, atol=1e-5)
    # and the gradient through the exported-shape program stays finite
    dense = nnx_layer()
    grads = jax.grad(lambda x: jnp.sum(dense(x) ** 2))
    g = jax.export.export(jax.jit(grads))(jax.ShapeDtypeStruct(
        (jax.export.symbolic_shape("b")[0], 4), jnp.float32)).call(jnp.ones((3, 4)))
    assert bool(jnp.isfinite(g).all())


@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_a_virtual_batch_size_exports_with_a_symbolic_batch(partition):
    """Ghost BatchNorm training exported with a symbolic batch size counts K = max(1,
    N // virtual_batch_size) groups along the batch axis when it runs (it was refused):
    one program gives the eager layer's output, input and parameter gradients and running
    statistics for batches of one sample, ragged and even (NNX), and Linen's training
    apply with mutable batch_stats exports too."""
    ghost = lf.GhostBatchNorm(4, virtual_batch_size=2, partition=partition,
                              rngs=nnx.Rngs(0))
    ghost.scale[...] = 1 + jnp.arange(4.0)[None] / 4
    graphdef, state = nnx.split(ghost)

    def step(state, x):
        def loss(model, x):
            y = model(x)
            return jnp.sum(y * jnp.arange(y.size).reshape(y.shape) / y.size), y
        model = nnx.merge(graphdef, state)
        (_, y), grads = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(model, x)
        return y, grads, nnx.state(model)

    exported = jax.export.export(jax.jit(step))(
        state, jax.ShapeDtypeStruct((jax.export.symbolic_shape("b")[0], *X.shape[1:]),
                                    jnp.float32))
    for n in (1, 5, 8):
        x = jax.random.normal(jax.random.key(n), (n, *X.shape[1:])) * 2 + 0.5
        got, want = exported.call(state, x), step(copy.deepcopy(state), x)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)

    linen = ll.GhostBatchNorm(virtual_batch_size=2, partition=partition)
    variables = linen.init(jax.random.key(0), X)
    train = jax.jit(lambda v, x: linen.apply(v, x, mutable=["batch_stats"]))
    batch, = jax.export.symbolic_shape("b")
    exported = jax.export.export(train)(variables, jax.ShapeDtypeStruct((batch, *X.shape[1:]),
                                                                         jnp.float32))
    x9 = jnp.concatenate([X, X[:1] * 2])
    for got, want in zip(jax.tree.leaves(exported.call(variables, x9)),
                         jax.tree.leaves(train(variables, x9))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_nnx_mode_attribute_is_checked_at_the_call():
    layer = nnx_layer(deterministic=True)
    layer.mode = "sets"  # an assignment, not set_mode: it ran the layer in no mode
    with pytest.raises(LocalNormError, match="Received: mode='sets'"):
        layer(X)
    layer.deterministic = False  # training ignores the evaluation mode
    assert layer(X).shape == X.shape


@pytest.mark.parametrize("mode", ["train", "batch", "single", "set"])
def test_exports_with_symbolic_spatial_sizes(mode):
    """A fully convolutional model exported with symbolic height and width (as well as
    batch): the value counts of the means are symbolic too. It raised an AttributeError
    from inside the core ('jax.numpy' has no attribute 'dim_size'); now one program gives
    the eager layer's output, input gradient and running statistics for every size."""
    layer = lf.GhostBatchNorm(4, num_groups=4, partition="contiguous", rngs=nnx.Rngs(0))
    layer.scale[...] = 1 + jnp.arange(4.0)[None] / 4
    if mode != "train":
        layer.eval()
        layer.set_mode(mode, 0)
    graphdef, state = nnx.split(layer)

    def step(state, x):
        def loss(model, x):
            y = model(x)
            return jnp.sum(y * jnp.arange(y.size).reshape(y.shape) / y.size), y
        model = nnx.merge(graphdef, state)
        (_, y), dx = nnx.value_and_grad(loss, argnums=1, has_aux=True)(model, x)
        return y, dx, nnx.state(model)

    dims = jax.export.symbolic_shape("b, h, w")
    exported = jax.export.export(jax.jit(step))(state, jax.ShapeDtypeStruct((*dims, 4),
                                                                             jnp.float32))
    for shape in ((8, 3, 5, 4), (9, 2, 1, 4)):  # even and ragged, 15 and 2 values each
        x = jax.random.normal(jax.random.key(len(shape) + shape[0]), shape) * 2 + 0.5
        got, want = exported.call(state, x), step(copy.deepcopy(state), x)
        for got, want in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_stored_group_array_with_a_symbolic_batch_is_refused_with_the_way_out():
    """A per-sample group array of fixed length cannot fit a symbolic batch: it raised
    JAX's broadcasting TypeError from inside the core. The way out the message gives, the
    groups as an argument of the symbolic batch's length, exports."""
    layer = nnx_layer(deterministic=True)
    layer.scale[...] = 1 + jnp.arange(16.0).reshape(4, 4) / 8
    layer.set_mode("single", np.arange(8) % 4)
    with pytest.raises(LocalNormError, match="symbolic") as err:
        export(lambda x: layer(x), X.shape[1:])
    assert "len(group)=8" in str(err.value) and "argument" in str(err.value)
    linen = ll.LocalNorm()
    variables = linen.init(jax.random.key(0), X)
    with pytest.raises(LocalNormError, match="symbolic"):
        export(lambda x: linen.apply(variables, x, deterministic=True, mode="single",
                                     group=jnp.arange(8) % 4), X.shape[1:])

    graphdef, state = nnx.split(layer)

    def single(state, x, group):
        model = nnx.merge(graphdef, state)
        lf.set_eval_mode(model, "single", group)
        return model(x)

    batch, = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(single))(
        state, jax.ShapeDtypeStruct((batch, *X.shape[1:]), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32))
    group = jnp.array([3, 1, 0, 2, 2])
    np.testing.assert_allclose(exported.call(state, X[:5], group),
                               single(state, X[:5], group), rtol=1e-6, atol=1e-6)
