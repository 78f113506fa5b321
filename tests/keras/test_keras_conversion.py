"""convert_batchnorm: Sequential, functional and nested models, weights and equality."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import localnorm  # noqa: E402
from keras_helpers import to_numpy  # noqa: E402
from localnorm.keras import LocalNormalization, convert_batchnorm, localnorm_layers  # noqa: E402


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.beta.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, size=c))
            layer.beta.assign(rng.normal(size=c))
            layer.moving_mean.assign(rng.normal(size=c))
    return model


def _sequential():
    return _randomize_bn(keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(6),
        keras.layers.BatchNormalization(epsilon=1e-2, name="bn2"),
        keras.layers.Dense(3),
    ]))


def _functional():
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    a = keras.layers.BatchNormalization(name="bn_a")(h)
    b = keras.layers.BatchNormalization(axis=1, name="bn_b")(h)  # channels elsewhere
    h = keras.layers.Add()([a, b])
    h = keras.layers.GlobalAveragePooling2D()(h)
    return _randomize_bn(keras.Model(inputs, keras.layers.Dense(3)(h)))


def _nested():
    block = keras.Sequential([
        keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
    ], name="block")
    inputs = keras.Input((6, 6, 3))
    h = block(inputs)
    h = keras.layers.BatchNormalization(scale=False)(h)
    h = keras.layers.Flatten()(h)
    return _randomize_bn(keras.Model(inputs, keras.layers.Dense(2)(h)))


BUILDERS = {"sequential": _sequential, "functional": _functional, "nested": _nested}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_one_group_equals_the_original_in_training_mode(kind, rng):
    model = BUILDERS[kind]()
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    converted = convert_batchnorm(model, num_groups=1)
    assert converted is not model
    assert not [l for l in converted._flatten_layers(recursive=True)
                if isinstance(l, keras.layers.BatchNormalization)]
    want = to_numpy(model(x, training=True))
    np.testing.assert_allclose(to_numpy(converted(x)), want, atol=2e-5)
    np.testing.assert_allclose(to_numpy(converted(x, training=True)), want, atol=2e-5)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_groups_get_copies_and_other_weights_are_kept_not_shared(kind):
    model = BUILDERS[kind]()
    bns = [l for l in model._flatten_layers(recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    converted = convert_batchnorm(model, num_groups=3, partition="strided")
    lns = localnorm_layers(converted)
    assert len(lns) == len(bns)
    for bn, ln in zip(bns, lns):
        assert (ln.num_groups, ln.partition, ln.axis, ln.epsilon) == (
            3, "strided", bn.axis, bn.epsilon)
        assert ln.name == bn.name
        if bn.scale:
            np.testing.assert_array_equal(to_numpy(ln.gamma), np.tile(to_numpy(bn.gamma), (3, 1)))
        else:
            assert ln.gamma is None
        np.testing.assert_array_equal(to_numpy(ln.beta), np.tile(to_numpy(bn.beta), (3, 1)))
    others = [w for w in model.weights if "moving" not in w.path]
    assert len(others) == len(converted.weights)
    for old, new in zip(sorted(others, key=lambda w: w.path),
                        sorted(converted.weights, key=lambda w: w.path)):
        assert old is not new
        if len(new.shape) == len(old.shape):  # not a tiled gamma/beta
            np.testing.assert_array_equal(to_numpy(new), to_numpy(old))
    # Training the converted model leaves the original alone.
    before = [to_numpy(w).copy() for w in model.weights]
    converted.weights[0].assign(to_numpy(converted.weights[0]) + 1.0)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_a_single_layer_converts_to_a_layer():
    bn = keras.layers.BatchNormalization(epsilon=1e-4)
    bn.build((None, 5))
    bn.gamma.assign(np.arange(5.0))
    ln = convert_batchnorm(bn, num_groups=2)
    assert isinstance(ln, LocalNormalization) and ln.epsilon == 1e-4
    np.testing.assert_array_equal(to_numpy(ln.gamma), np.tile(np.arange(5.0), (2, 1)))


def test_converted_model_trains_and_keeps_mixed_precision_policy(rng):
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 3, dtype="mixed_float16")(inputs)
    h = keras.layers.BatchNormalization(dtype="mixed_float16")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(h))
    converted = convert_batchnorm(model, num_groups=2)
    ln = localnorm_layers(converted)[0]
    assert ln.dtype_policy.name == "mixed_float16"
    converted.compile("sgd", "mse")
    x = rng.normal(size=(8, 4, 4, 3)).astype("float32")
    history = converted.fit(x, np.zeros((8, 2)), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_errors():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    with pytest.raises(localnorm.LocalNormError, match="Sub"):
        convert_batchnorm(Sub(), 2)
    with pytest.raises(localnorm.LocalNormError, match="num_groups=0"):
        convert_batchnorm(_sequential(), 0)
    with pytest.raises(localnorm.LocalNormError, match="partition='rows'"):
        convert_batchnorm(_sequential(), 2, partition="rows")


class _Block(keras.layers.Layer):
    """A custom layer holding a sublayer it creates in __init__ and builds when called."""

    def __init__(self, inner=None, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner if inner is not None else keras.layers.Dense(4)

    def call(self, x):
        return self.inner(x)


@pytest.mark.parametrize("wrapper", ["time_distributed", "custom"])
def test_a_batchnorm_out_of_reach_is_refused_not_left_in_place(wrapper):
    """A BatchNormalization inside a wrapper or a custom layer cannot be rebuilt; it stayed
    a BatchNormalization (TimeDistributed) or failed in Keras's set_weights (custom)."""
    bn = keras.layers.BatchNormalization()
    if wrapper == "time_distributed":
        model = keras.Sequential([keras.Input((5, 4)), keras.layers.TimeDistributed(bn)])
    else:
        model = keras.Sequential([keras.Input((4,)), _Block(bn, name="block")])
    with pytest.raises(localnorm.LocalNormError, match="cannot reach the BatchNormalization"):
        convert_batchnorm(model, 2)


def test_a_layer_that_cannot_be_rebuilt_with_its_weights_is_named():
    model = keras.Sequential([keras.Input((4,)), _Block(name="block"),
                              keras.layers.BatchNormalization()])
    with pytest.raises(localnorm.LocalNormError, match="'block'.*Received: 2 weights, 0"):
        convert_batchnorm(model, 2)
