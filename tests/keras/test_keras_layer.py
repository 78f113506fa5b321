"""LocalNormalization: weights, shapes, modes, mixed precision and bad input.

The layer math against the reference, for every mode, partition, dtype and gradients, is
the conformance suite's job (subject ``keras``); these tests cover the Keras layer around
it.
"""

from __future__ import annotations

import inspect

import array_api_compat.numpy
import numpy as np
import pytest

keras = pytest.importorskip("keras")

import localnorm  # noqa: E402
from keras_helpers import BACKEND, to_numpy  # noqa: E402
from localnorm import _agnostic, reference  # noqa: E402
from localnorm.keras import LocalNormalization  # noqa: E402


def _layer(x_shape, num_groups=4, **kwargs):
    layer = LocalNormalization(num_groups=num_groups, **kwargs)
    layer.build(x_shape)
    rng = np.random.default_rng(1)
    c = layer.gamma.shape[1]
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=(num_groups, c)))
    layer.beta.assign(rng.normal(size=(num_groups, c)))
    return layer


def _ref(layer, x, **kwargs):
    return reference.local_norm(
        x.astype(np.float64), to_numpy(layer.gamma), to_numpy(layer.beta), axis=layer.axis,
        partition=layer.partition, eps=layer.epsilon, **kwargs)


def test_defaults_match_the_shared_api():
    layer = LocalNormalization()
    assert layer.num_groups == 4
    assert layer.epsilon == localnorm.DEFAULT_EPS == 1e-5
    assert layer.axis == -1 and layer.partition == "contiguous"
    assert (layer.mode, layer.group) == ("batch", 0)


@pytest.mark.parametrize("shape, axis", [
    ((8, 5), -1), ((8, 6, 5), -1), ((8, 4, 4, 5), -1), ((8, 2, 3, 3, 5), -1),
    ((8, 5, 4, 4), 1), ((8, 4, 5, 3), 2),
])
def test_weights_are_k_by_c_for_any_rank_and_axis(shape, axis, rng):
    x = rng.normal(size=shape).astype("float32")
    layer = _layer(shape, num_groups=4, axis=axis)
    assert tuple(layer.gamma.shape) == tuple(layer.beta.shape) == (4, 5)
    y = layer(x, training=True)
    np.testing.assert_allclose(to_numpy(y), _ref(layer, x), atol=2e-5)


def test_no_fixed_batch_size_and_ragged_batches(rng):
    layer = _layer((8, 3, 3, 2), num_groups=4)
    for n in (8, 12, 10, 5, 4):
        for partition in localnorm.PARTITIONS:
            layer.partition = partition
            x = rng.normal(size=(n, 3, 3, 2)).astype("float32")
            np.testing.assert_allclose(
                to_numpy(layer(x, training=True)), _ref(layer, x), atol=2e-5,
                err_msg=f"n={n} partition={partition}")


def test_training_selects_batch_mode_whatever_the_eval_mode(rng):
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    layer = _layer(x.shape, num_groups=2, mode="single", group=1)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), _ref(layer, x), atol=2e-5)
    np.testing.assert_allclose(
        to_numpy(layer(x)), _ref(layer, x, mode="single", group=1), atol=2e-5)
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)), _ref(layer, x, mode="single", group=1), atol=2e-5)


@pytest.mark.parametrize("mode, group", [("batch", 0), ("set", 2), ("single", 3),
                                         ("single", [0, 1, 2, 3, 3, 2, 1, 0])])
def test_eval_modes(mode, group, rng):
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    layer = _layer(x.shape, num_groups=4)
    assert layer.set_mode(mode, group) is layer  # set_mode, as the torch and Flax layers
    want = _ref(layer, x, mode=mode, group=np.asarray(group) if isinstance(group, list) else group)
    np.testing.assert_allclose(to_numpy(layer(x)), want, atol=2e-5)


def test_set_eval_mode_is_the_earlier_name_of_set_mode(rng):
    x = rng.normal(size=(8, 3)).astype("float32")
    layer = _layer(x.shape, num_groups=4)
    layer.set_eval_mode("set", 2)
    assert (layer.mode, layer.group) == ("set", 2)
    assert LocalNormalization.set_eval_mode is LocalNormalization.set_mode


def test_without_scale_or_center(rng):
    x = rng.normal(size=(8, 3)).astype("float32") * 3 + 1
    layer = LocalNormalization(num_groups=2, center=False, scale=False)
    y = to_numpy(layer(x, training=True))
    assert layer.weights == []
    want = reference.local_norm(x.astype(np.float64), np.ones((2, 3)), np.zeros((2, 3)))
    np.testing.assert_allclose(y, want, atol=2e-5)


def test_get_config_mirrors_init():
    layer = LocalNormalization(
        num_groups=3, axis=1, epsilon=1e-3, center=False, scale=True,
        gamma_regularizer="l2", beta_constraint="non_neg", gamma_initializer="zeros",
        partition="strided", mode="single", group=[0, 2, 1], name="ln",
    )
    config = layer.get_config()
    init_args = set(inspect.signature(LocalNormalization.__init__).parameters) - {"self", "kwargs"}
    assert init_args <= set(config)
    again = LocalNormalization.from_config(config)
    assert again.get_config() == config
    assert (again.num_groups, again.axis, again.epsilon, again.partition) == (3, 1, 1e-3, "strided")
    assert again.mode == "single" and again.group.tolist() == [0, 2, 1]
    assert isinstance(again.gamma_regularizer, keras.regularizers.L2)


@pytest.mark.parametrize("policy, dtype", [("mixed_float16", "float16"),
                                           ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_statistics_in_float32(policy, dtype, rng):
    # Values around 400 with spread 100: their squares overflow float16 (max 65504), so
    # float16 statistics would give inf/NaN; float32 statistics are fine.
    x = (rng.normal(size=(8, 4, 4, 3)) * 100 + 400).astype("float32")
    layer = LocalNormalization(num_groups=2, dtype=policy)
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    assert keras.backend.standardize_dtype(layer.gamma.dtype) == "float32"
    assert keras.backend.standardize_dtype(layer.gamma.value.dtype) == "float32"
    y = to_numpy(keras.ops.cast(y, "float32"))
    assert np.all(np.isfinite(y))
    x_low = to_numpy(keras.ops.cast(keras.ops.cast(x, dtype), "float32"))
    want = reference.local_norm(x_low.astype(np.float64), np.ones((2, 3)), np.zeros((2, 3)))
    tol = 2e-2 if dtype == "bfloat16" else 4e-3
    np.testing.assert_allclose(y, want, atol=tol * 4)


def test_symbolic_functional_model_keeps_batch_unknown(rng):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, LocalNormalization(num_groups=2)(inputs))
    assert tuple(model.output.shape) == (None, 4, 4, 3)
    x = rng.normal(size=(6, 4, 4, 3)).astype("float32")
    assert to_numpy(model(x)).shape == (6, 4, 4, 3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TensorFlow traces an unknown batch size")
def test_tf_function_with_unknown_batch_size(rng):
    import tensorflow as tf

    layer = _layer((8, 3, 3, 2), num_groups=4)
    for partition in localnorm.PARTITIONS:
        layer.partition = partition
        fn = tf.function(lambda t: layer(t, training=True),
                         input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)])
        for n in (8, 10, 7, 13):
            x = rng.normal(size=(n, 3, 3, 2)).astype("float32")
            np.testing.assert_allclose(fn(x).numpy(), _ref(layer, x), atol=2e-5,
                                       err_msg=f"n={n} partition={partition}")
    # What the trace could not check, the graph checks at run time.
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 4 samples"):
        fn(rng.normal(size=(3, 3, 3, 2)).astype("float32"))
    dense = _layer((8, 2), num_groups=4)
    fn = tf.function(lambda t: dense(t, training=True),
                     input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value|1 value|variance"):
        fn(rng.normal(size=(6, 2)).astype("float32"))  # groups of 2, 2, 1, 1 samples


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TensorFlow traces an unknown batch size")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_graph_refuses_a_group_array_of_another_length(rng, jit_compile):
    """A per-sample group array in a graph traced with an unknown batch size (as
    ``model.export`` and Keras's retrace of a ragged last batch make): a batch of another
    size is refused at run time (under XLA, at compile time), never broadcast to
    len(group) outputs (one sample gave 8) or failed with a raw shape error (5 samples)."""
    import tensorflow as tf

    layer = _layer((8, 3, 3, 2), num_groups=4)
    layer.set_eval_mode("single", [0, 1, 2, 3] * 2)
    fn = tf.function(lambda t: layer(t), jit_compile=jit_compile,
                     input_signature=[tf.TensorSpec([None, 3, 3, 2], tf.float32)])
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    np.testing.assert_allclose(fn(x).numpy(), _ref(layer, x, mode="single",
                                                     group=np.array([0, 1, 2, 3] * 2)),
                               atol=2e-5)
    for n in (1, 5):
        # XLA drops the assertion: its compile error names the shapes instead
        meaning = "not compatible.*8,3,3,2" if jit_compile else "one entry per sample.*len\\(group\\)=8"
        with pytest.raises(tf.errors.InvalidArgumentError, match=meaning):
            fn(x[:n])


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit is JAX-only")
def test_jax_jit_stateless_call(rng):
    import jax

    x = rng.normal(size=(10, 3, 2)).astype("float32")
    layer = _layer(x.shape, num_groups=4, partition="strided")
    params = [v.value for v in layer.trainable_variables]
    fn = jax.jit(lambda p, t: layer.stateless_call(p, [], t, training=True)[0])
    np.testing.assert_allclose(np.asarray(fn(params, x)), _ref(layer, x), atol=2e-5)


# -- bad input: the same errors as the other adapters, Keras dialect -----------------------

@pytest.mark.parametrize("kwargs, named", [
    (dict(num_groups=0), "num_groups=0"),
    (dict(num_groups=2.5), "num_groups=2.5"),
    (dict(epsilon=-1.0), "epsilon=-1.0"),
    (dict(partition="random"), "partition='random'"),
    (dict(mode="running"), "mode='running'"),
    (dict(mode="vote"), "mode='vote'"),
    (dict(group=4), "group=4"),
    (dict(mode="set", group=[0, 1]), "mode='set'"),
    (dict(axis=0), "axis=0"),  # the batch axis, refused before build (it was at build)
    (dict(axis="channels"), "axis='channels'"),
])
def test_bad_arguments_raise_early(kwargs, named):
    with pytest.raises(localnorm.LocalNormError, match=named.replace("(", r"\(")) as info:
        LocalNormalization(**kwargs)
    assert "Fix" in str(info.value)


@pytest.mark.parametrize("shape, axis, named", [
    ((8,), -1, "x.ndim=1"),
    ((8, 3), 0, "axis=0"),
    ((8, 3), 2, "axis=2"),
])
def test_bad_rank_or_axis_at_build(shape, axis, named):
    with pytest.raises(localnorm.LocalNormError, match=named):
        LocalNormalization(axis=axis).build(shape)


def test_unknown_channel_size_is_refused():
    with pytest.raises(localnorm.LocalNormError, match="axis=-1"):
        LocalNormalization().build((None, 4, None))


def test_call_time_errors(rng):
    layer = _layer((8, 3, 3, 2), num_groups=4)
    with pytest.raises(localnorm.LocalNormError, match=r"x.shape\[axis\]=5") as info:
        layer(rng.normal(size=(8, 3, 3, 5)).astype("float32"))
    assert "num_features=2" in str(info.value)
    assert "new LocalNormalization layer" in str(info.value)  # Keras remedy, not num_features=
    with pytest.raises(localnorm.LocalNormError, match="x.ndim=3"):
        layer(rng.normal(size=(8, 3, 2)).astype("float32"))
    with pytest.raises(localnorm.LocalNormError, match=r"x.shape\[0\]=3.*num_groups=4") as info:
        layer(rng.normal(size=(3, 3, 3, 2)).astype("float32"), training=True)
    assert "drop_remainder=True" in str(info.value)  # the tf.data remedy, not DataLoader
    layer.set_eval_mode("single", [0, 1, 2])
    with pytest.raises(localnorm.LocalNormError, match=r"len\(group\)=3"):
        layer(rng.normal(size=(5, 3, 3, 2)).astype("float32"))
    dense = _layer((8, 3), num_groups=2)
    dense.set_eval_mode("single", 0)
    with pytest.raises(localnorm.LocalNormError, match="'single'") as info:
        dense(rng.normal(size=(4, 3)).astype("float32"))
    assert "'set' mode" in str(info.value) and "running" not in str(info.value)


def test_integer_input_is_refused_not_returned_as_integers(rng):
    layer = LocalNormalization(num_groups=2)
    with pytest.raises(TypeError, match="x.dtype=int") as info:
        layer(np.arange(24).reshape(6, 4))
    assert "keras.ops.cast" in str(info.value)
    with pytest.raises(TypeError, match="x.dtype=uint8"):  # refused when the model is built
        LocalNormalization(num_groups=2)(keras.Input((4, 4, 3), dtype="uint8"))


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_an_integer_dtype_policy_is_refused_when_the_layer_is_made(dtype):
    """An integer policy cast the float input to integers, whose refusal then told the
    user to cast the input to float32 (which would not help); on PyTorch it was a raw
    RuntimeError when the weights were made."""
    with pytest.raises(localnorm.LocalNormError, match=f"dtype='{dtype}'.*Fix"):
        LocalNormalization(num_groups=2, dtype=dtype)
    assert LocalNormalization(num_groups=2, dtype="mixed_bfloat16").num_groups == 2


def test_shared_options_are_checked_before_the_dtype_policy():
    # One order in every adapter: the options all layers share (here the groups along
    # the batch axis), then the framework's own (axis, the dtype policy).
    with pytest.raises(localnorm.LocalNormError, match="num_groups=0"):
        LocalNormalization(num_groups=0, dtype="int32")
    with pytest.raises(localnorm.LocalNormError, match="axis=0"):
        LocalNormalization(axis=0, dtype="int32")


def test_partition_is_validated_when_set():
    layer = LocalNormalization(num_groups=2)
    layer.partition = "strided"
    assert layer.partition == "strided" and layer.get_config()["partition"] == "strided"
    with pytest.raises(localnorm.LocalNormError, match="partition='random'"):
        layer.partition = "random"
    assert layer.partition == "strided"


# -- NaN/Inf: refused in eager evaluation, never checked in training or traced calls ------

def test_non_finite_input_is_refused_in_eager_evaluation(rng):
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    x[1, 0, 0, 0], x[6, 2, 1, 1] = np.nan, np.inf
    layer = _layer(x.shape, num_groups=4)
    for mode in ("batch", "single", "set"):
        layer.set_eval_mode(mode, 0)
        with pytest.raises(localnorm.LocalNormError, match="2 non-finite of 144") as info:
            layer(x)
        assert "check_finite=False" in str(info.value)
    # Training does not scan its input (as no BatchNorm does): a NaN/Inf spreads over its
    # channel in its group (samples 0-1 channel 0, samples 6-7 channel 1).
    def poisoned(y):
        return (np.isnan(y[:2, ..., 0]).all() and np.isnan(y[6:, ..., 1]).all()
                and np.isfinite(y[2:6]).all())

    assert poisoned(to_numpy(layer(x, training=True)))
    quiet = _layer(x.shape, num_groups=4, check_finite=False)
    assert quiet.get_config()["check_finite"] is False
    assert LocalNormalization.from_config(quiet.get_config()).check_finite is False
    assert poisoned(to_numpy(quiet(x)))


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit is JAX-only")
def test_concrete_input_captured_by_a_jitted_function_is_checked(rng):
    # An array closed over by a jitted function is concrete: its check runs eagerly (it
    # used to be traced, and reading its truth raised TracerBoolConversionError).
    import jax

    clean = jax.numpy.asarray(rng.normal(size=(8, 3, 2)), "float32")
    layer = _layer(clean.shape, num_groups=4)
    assert jax.jit(lambda s: layer(clean) * s)(2.0).shape == clean.shape
    bad = clean.at[0, 0, 0].set(np.nan)
    with pytest.raises(localnorm.LocalNormError, match="1 non-finite of 48"):
        jax.jit(lambda s: layer(bad) * s)(2.0)


def test_traced_evaluation_calls_are_not_checked(rng):
    x = rng.normal(size=(8, 3, 2)).astype("float32")
    x[0, 0, 0] = np.nan
    layer = _layer(x.shape, num_groups=2)
    params = [v.value for v in layer.trainable_variables]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        y = tf.function(lambda t: layer(t))(x).numpy()
    elif BACKEND == "jax":
        import jax

        y = np.asarray(jax.jit(lambda p, t: layer.stateless_call(p, [], t)[0])(params, x))
    else:
        pytest.skip("torch.compile of a Keras layer is too slow for the default run")
    assert np.isnan(y[:4, :, 0]).all() and np.isfinite(y[4:]).all()


# -- TensorFlow: unknown batch sizes, also under XLA ---------------------------------------

def _tf_model(num_groups=4):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="conv"),
        LocalNormalization(num_groups=num_groups, name="ln"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3),
    ])


def _defined(layer, x, w=None, mode="batch", group=0):
    """The core's defined result for any batch size (groups without samples reach no
    output, their gamma/beta get a zero gradient), in float64: the output and, with an
    output weighting ``w``, the gradients of ``sum(y * w)`` with respect to gamma, beta."""
    xp = array_api_compat.numpy
    g, b = to_numpy(layer.gamma).astype(np.float64), to_numpy(layer.beta).astype(np.float64)
    x = x.astype(np.float64)
    if mode != "batch":
        return _agnostic.eval_forward(xp, x, g, b, axis=layer._axis, mode=mode, group=group,
                                      eps=layer.epsilon)
    kw = dict(axis=layer._axis, num_groups=layer.num_groups, partition=layer.partition)
    y, mean, _, rstd = _agnostic.batch_forward(xp, x, g, b, eps=layer.epsilon, **kw)
    if w is None:
        return y
    _, dgamma, dbeta = _agnostic.batch_vjp(xp, x, g, mean, rstd, w, **kw)
    return y, dgamma, dbeta


def _assert_defined_step(layer, x, w, y, dgamma, dbeta):
    """A compiled training step on 3 samples with K=4: finite, the core's defined values,
    and a zero gradient for the empty group's (the last one's) gamma/beta row."""
    assert all(np.isfinite(t).all() for t in (y, dgamma, dbeta))
    want_y, want_dgamma, want_dbeta = _defined(layer, x, w)
    np.testing.assert_allclose(y, want_y, atol=2e-5)
    np.testing.assert_allclose(dgamma, want_dgamma, atol=1e-4)
    np.testing.assert_allclose(dbeta, want_dbeta, atol=1e-4)
    np.testing.assert_array_equal(dgamma[3], 0.0)
    np.testing.assert_array_equal(dbeta[3], 0.0)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="XLA drops TensorFlow's run-time asserts")
def test_xla_fit_with_a_batch_smaller_than_k_keeps_the_weights_finite(rng):
    """issue 16: fit on 10 samples with batch_size=8 and K=4 ends with a batch of 2 < K.
    XLA cannot raise, so that step has the core's defined result (groups without samples
    contribute nothing, their gamma/beta rows get a zero gradient): finite loss and
    weights, never NaN. Without XLA the same fit raises the message with the fix."""
    x = rng.normal(size=(10, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _tf_model()
    model.compile("sgd", loss, jit_compile=True)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.isfinite(to_numpy(w)).all() for w in model.weights)
    # The last step (samples 8, 9: groups 0 and 1) changed no row of the empty groups:
    # one more epoch of only that batch leaves gamma/beta rows 2 and 3 as they were.
    ln = model.get_layer("ln")
    before = [to_numpy(w).copy() for w in (ln.gamma, ln.beta)]
    model.fit(x[8:], y[8:], batch_size=8, epochs=1, verbose=0, shuffle=False)
    for old, w in zip(before, (ln.gamma, ln.beta)):
        np.testing.assert_array_equal(to_numpy(w)[2:], old[2:])
        assert np.isfinite(to_numpy(w)).all()
    # Without XLA the same fit raises the message with the fix.
    model = _tf_model()
    model.compile("sgd", loss, jit_compile=False)
    with pytest.raises(Exception, match="at least 4 samples") as info:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert "drop_remainder=True" in str(info.value)
    # And so does an eager call on such a batch.
    with pytest.raises(localnorm.LocalNormError, match="at least 4 samples"):
        model.get_layer("ln")(rng.normal(size=(2, 4, 4, 4)).astype("float32"), training=True)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True) is TF-only")
def test_xla_function_with_unknown_batch_size(rng):
    import tensorflow as tf

    layer = _layer((8, 3, 3, 2), num_groups=4)
    fn = tf.function(lambda t: layer(t, training=True), jit_compile=True,
                     input_signature=[tf.TensorSpec([None, 3, 3, 2], tf.float32)])
    x = rng.normal(size=(10, 3, 3, 2)).astype("float32")
    np.testing.assert_allclose(fn(x).numpy(), _ref(layer, x), atol=2e-5)
    # 3 < K samples: the defined result, the same for both partitions.
    for partition in localnorm.PARTITIONS:
        layer.partition = partition
        fn = tf.function(lambda t: layer(t, training=True), jit_compile=True,
                         input_signature=[tf.TensorSpec([None, 3, 3, 2], tf.float32)])
        np.testing.assert_allclose(fn(x[:3]).numpy(), _defined(layer, x[:3]), atol=2e-5)
    # Groups of 2, 2, 1, 1 dense samples: one value per channel in the last two, whose
    # variance is 0 (their output is beta), never NaN.
    dense = _layer((8, 2), num_groups=4)
    fn = tf.function(lambda t: dense(t, training=True), jit_compile=True,
                     input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    got = fn(x[:6, 0, 0]).numpy()
    np.testing.assert_allclose(got, _defined(dense, x[:6, 0, 0]), atol=2e-5)
    np.testing.assert_allclose(got[4:], to_numpy(dense.beta)[2:], atol=1e-6)
    dense.set_eval_mode("set", 1)
    fn = tf.function(lambda t: dense(t), jit_compile=True,
                     input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    np.testing.assert_allclose(fn(x[:1, 0, 0]).numpy(), to_numpy(dense.beta)[1:2], atol=1e-6)
    np.testing.assert_allclose(fn(x[:5, 0, 0]).numpy(),
                               _ref(dense, x[:5, 0, 0], mode="set", group=1), atol=2e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function(jit_compile=True) is TF-only")
def test_xla_gradients_of_a_batch_smaller_than_k(rng):
    """Under XLA with an unknown batch size, 3 samples and K=4: finite output and
    gradients, the core's defined values, and a zero gradient for the empty group's
    gamma/beta row (both partitions: the empty group is the last one)."""
    import tensorflow as tf

    x = rng.normal(size=(3, 3, 3, 2)).astype("float32")
    w = rng.normal(size=x.shape).astype("float32")
    layer = _layer((8, 3, 3, 2), num_groups=4)
    for partition in localnorm.PARTITIONS:
        layer.partition = partition

        @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, 3, 3, 2], tf.float32)])
        def step(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = layer(t, training=True)
                loss = tf.reduce_sum(y * w)
            return (y, *tape.gradient(loss, [t, layer.gamma.value, layer.beta.value]))

        y, dx, dgamma, dbeta = (t.numpy() for t in step(x))
        assert np.isfinite(dx).all()
        _assert_defined_step(layer, x, w, y, dgamma, dbeta)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.export is JAX-only")
def test_jax_export_with_a_symbolic_batch_smaller_than_k(rng):
    """A training step exported with a symbolic batch size cannot raise at run time: 3
    samples with K=4 give the core's defined result, finite, with a zero gradient for the
    empty group's gamma/beta row (both partitions: the empty group is the last one). An
    eager call on such a batch raises."""
    import jax
    import jax.numpy as jnp
    from jax import export

    x = rng.normal(size=(3, 3, 3, 2)).astype("float32")
    w = rng.normal(size=x.shape).astype("float32")
    layer = _layer((8, 3, 3, 2), num_groups=4)
    params = [v.value for v in layer.trainable_variables]
    (b,) = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, 3, 3, 2), jnp.float32)
    for partition in localnorm.PARTITIONS:
        layer.partition = partition

        def step(p, t, w):
            def loss(p):
                return jnp.sum(layer.stateless_call(p, [], t, training=True)[0] * w)

            return layer.stateless_call(p, [], t, training=True)[0], jax.grad(loss)(p)

        exported = export.export(jax.jit(step))(params, spec, spec)
        y, (dgamma, dbeta) = exported.call(params, x, w)
        _assert_defined_step(layer, x, w, *(np.asarray(t) for t in (y, dgamma, dbeta)))
    with pytest.raises(localnorm.LocalNormError, match="at least 4 samples"):
        layer(x, training=True)



@pytest.mark.skipif(BACKEND != "jax", reason="jax.export is JAX-only")
def test_jax_export_refuses_a_group_array_for_a_symbolic_batch():
    """A per-sample group array fits one batch size: exported with a symbolic batch size
    (``model.export`` on JAX, ``jax.export``), where no run-time check can refuse a batch
    of another size, it is refused while tracing with the project's message, not a
    broadcasting TypeError from inside the core. A fixed batch of its length exports."""
    import jax
    import jax.numpy as jnp
    from jax import export

    layer = _layer((8, 3, 3, 2), num_groups=4)
    layer.set_mode("single", group=[0, 1, 2, 3] * 2)
    params = [v.value for v in layer.trainable_variables]
    forward = jax.jit(lambda p, t: layer.stateless_call(p, [], t)[0])
    (b,) = export.symbolic_shape("b")
    with pytest.raises(localnorm.LocalNormError, match=r"len\(group\)=8") as info:
        export.export(forward)(params, jax.ShapeDtypeStruct((b, 3, 3, 2), jnp.float32))
    assert "fixed batch size of 8" in str(info.value)
    x = np.random.default_rng(0).normal(size=(8, 3, 3, 2)).astype("float32")
    exported = export.export(forward)(params, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    np.testing.assert_allclose(np.asarray(exported.call(params, x)),
                               to_numpy(layer(x)), rtol=1e-5, atol=1e-5)



@pytest.mark.skipif(BACKEND != "jax", reason="jax.export is JAX-only")
def test_jax_export_refuses_single_mode_with_one_value_per_channel():
    """'single' mode's statistics are each sample's own, whatever the batch size: on
    dense input (one value per channel) they are undefined, refused by an eager call and,
    now, also when exported with a symbolic batch size (the exported program returned
    beta for every sample)."""
    import jax
    import jax.numpy as jnp
    from jax import export

    layer = _layer((8, 5), num_groups=4)
    layer.set_mode("single", group=1)
    params = [v.value for v in layer.trainable_variables]
    (b,) = export.symbolic_shape("b")
    with pytest.raises(localnorm.LocalNormError, match="1 value"):
        export.export(jax.jit(lambda p, t: layer.stateless_call(p, [], t)[0]))(
            params, jax.ShapeDtypeStruct((b, 5), jnp.float32))

@pytest.mark.skipif(BACKEND != "torch", reason="torch.export is PyTorch-only")
def test_torch_export_refuses_a_group_array_for_a_dynamic_batch():
    """The same on PyTorch (``torch.export`` with a dynamic batch, as Keras's ONNX
    export): refused while tracing, where the exported program used to serve len(group)
    outputs for one sample. A fixed batch of its length exports."""
    import torch

    layer = _layer((8, 3, 3, 2), num_groups=4)
    layer.set_mode("single", group=[0, 1, 2, 3] * 2)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)

    x = torch.randn(8, 3, 3, 2)
    batch = torch.export.Dim("batch", min=2, max=64)
    with pytest.raises(localnorm.LocalNormError, match=r"len\(group\)=8"):
        torch.export.export(Wrapper(), (x,), dynamic_shapes=({0: batch},))
    program = torch.export.export(Wrapper(), (x,)).module()
    torch.testing.assert_close(program(x), layer(x), atol=1e-5, rtol=1e-5)

def _fresh_arrays(x, call):
    """``call()``'s result and how many arrays of x's size it made in storage not seen
    before (views and in-place results reuse theirs; each new one is kept alive, so that
    no later array reuses its address unseen). PyTorch only."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen, self.fresh = {x.untyped_storage().data_ptr()}, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == x.numel() \
                    and out.untyped_storage().data_ptr() not in self.seen:
                self.seen.add(out.untyped_storage().data_ptr())
                self.fresh.append(out)
            return out

    with Count() as count:
        result = call()
    return result, len(count.fresh)


@pytest.mark.skipif(BACKEND != "torch", reason="the forward's moments are eager PyTorch's")
def test_ghost_training_moves_moving_statistics_by_the_forwards_moments():
    """On eager PyTorch a Ghost layer's training call moves its moving statistics by the
    group moments its forward computed (one activation-sized array in all, the output:
    the core squares the deviations in it; computing the moments again made five), to
    the values of the recomputed form."""
    import torch

    from localnorm import _layer
    from localnorm.keras import GhostBatchNormalization

    x = torch.as_tensor(np.random.default_rng(5).normal(size=(8, 5, 6, 3)) * 2 + 3,
                        dtype=torch.float32)
    layer = GhostBatchNormalization(virtual_batch_size=2, momentum=0.9)
    layer.build(x.shape)
    with torch.no_grad():
        _, fresh = _fresh_arrays(x, lambda: layer(x, training=True))
    assert fresh == 1
    mean, var, count = _layer.group_moments(array_api_compat.numpy, x.numpy().astype(np.float64),
                                            3, 4, "strided")
    want = _layer.running_update(array_api_compat.numpy, np.zeros((1, 3)), np.ones((1, 3)),
                                 mean, var, count, 0.1, unbiased=False)
    np.testing.assert_allclose(to_numpy(layer.moving_mean), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.moving_variance), want[1], rtol=1e-5, atol=1e-6)
    with torch.enable_grad():  # a recorded training call moves them alike
        layer(x.requires_grad_(True), training=True)


@pytest.mark.skipif(BACKEND != "torch", reason="in-place evaluation is eager PyTorch's")
@pytest.mark.parametrize("mode, group", [("single", 2), ("single", [0, 1, 2, 3] * 2),
                                         ("set", 1), ("running", 0)])
def test_evaluation_without_autograd_runs_in_place_and_equals_the_recorded_form(mode, group):
    """On PyTorch under ``torch.no_grad`` (``model.predict``, ``localnorm.keras.predict``)
    the evaluation modes run in place: one activation-sized array, the output (for
    "single"/"set" the centered copy, in which the squared deviations are summed, where
    the plain expression writes five), with the values of the form autograd records, x
    unchanged."""
    import torch

    from localnorm.keras import GhostBatchNormalization

    x = torch.as_tensor(np.random.default_rng(4).normal(size=(8, 4, 5, 3)) * 2 + 3,
                        dtype=torch.float32)
    x_copy = x.clone()
    if mode == "running":
        layer = GhostBatchNormalization(virtual_batch_size=2)
        layer.build(x.shape)
        layer.moving_mean.assign(np.full((1, 3), 2.5))
        layer.moving_variance.assign(np.full((1, 3), 4.0))
    else:
        layer = _layer(tuple(x.shape), num_groups=4)
        layer.set_mode(mode, group)
    recorded = to_numpy(layer(x, training=False))

    with torch.no_grad():
        y, fresh = _fresh_arrays(x, lambda: layer(x, training=False))
    assert fresh == 1
    np.testing.assert_allclose(to_numpy(y), recorded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="autograd is PyTorch's")
def test_predict_records_no_autograd_graph():
    """localnorm.keras.predict runs its passes under torch.no_grad, as model.predict:
    nothing is recorded for a derivative nobody takes (and the layers evaluate in place)."""
    import torch

    class GradMode(keras.layers.Layer):
        seen: list = []

        def call(self, x):
            self.seen.append(torch.is_grad_enabled())
            return x

    model = keras.Sequential([keras.Input((4, 4, 3)), LocalNormalization(num_groups=2),
                              GradMode(), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype("float32")
    GradMode.seen.clear()
    for protocol in ("batch", "single", "voting"):
        localnorm.keras.predict(model, x, protocol)
    assert GradMode.seen and not any(GradMode.seen)
    assert torch.is_grad_enabled()  # restored
