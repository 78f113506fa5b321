"""`.keras` save/load: weights, config and evaluation settings, also across backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_helpers import BACKEND, run_python, to_numpy  # noqa: E402
from localnorm import reference  # noqa: E402
from localnorm.keras import LocalNormalization, set_eval_mode  # noqa: E402

#: Each backend's run loads a model saved by the next one (tensorflow -> jax -> torch).
OTHER = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[BACKEND]


def _model():
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(5, 3, padding="same", name="conv")(inputs)
    h = LocalNormalization(num_groups=2, partition="strided", name="ln")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_round_trip_keeps_weights_config_and_eval_setting(tmp_path, rng):
    model = _model()
    ln = model.get_layer("ln")
    ln.gamma.assign(rng.uniform(0.5, 1.5, size=(2, 5)))
    ln.beta.assign(rng.normal(size=(2, 5)))
    set_eval_mode(model, "single", group=1)
    x = rng.normal(size=(6, 4, 4, 3)).astype("float32")
    want = to_numpy(model(x))

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    ln2 = loaded.get_layer("ln")
    assert isinstance(ln2, LocalNormalization)
    assert ln2.get_config() == ln.get_config()
    assert (ln2.mode, ln2.group, ln2.partition) == ("single", 1, "strided")
    np.testing.assert_array_equal(to_numpy(ln2.gamma), to_numpy(ln.gamma))
    np.testing.assert_allclose(to_numpy(loaded(x)), want, atol=1e-6)
    np.testing.assert_allclose(to_numpy(loaded(x, training=True)),
                               to_numpy(model(x, training=True)), atol=1e-6)


def test_per_sample_group_array_survives_saving(tmp_path, rng):
    model = keras.Sequential([keras.Input((3, 2)), LocalNormalization(num_groups=3)])
    set_eval_mode(model, "single", np.array([2, 0, 1, 1]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].group.tolist() == [2, 0, 1, 1]
    x = rng.normal(size=(4, 3, 2)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


_SAVE_IN_OTHER_BACKEND = """
import numpy as np, keras, sys
from localnorm.keras import LocalNormalization, set_eval_mode
inputs = keras.Input((4, 4, 3))
h = keras.layers.Conv2D(5, 3, padding="same", name="conv")(inputs)
h = LocalNormalization(num_groups=2, partition="strided", name="ln")(h)
model = keras.Model(inputs, h)
rng = np.random.default_rng(3)
ln = model.get_layer("ln")
ln.gamma.assign(rng.uniform(0.5, 1.5, size=(2, 5)))
ln.beta.assign(rng.normal(size=(2, 5)))
set_eval_mode(model, "set", group=1)
model.save(sys.argv[1] if len(sys.argv) > 1 else {path!r})
print(keras.backend.backend())
"""


def test_load_a_model_saved_under_another_backend(tmp_path, rng):
    path = tmp_path / "other.keras"
    out = run_python(_SAVE_IN_OTHER_BACKEND.format(path=str(path)), env={"KERAS_BACKEND": OTHER})
    assert out.strip().endswith(OTHER)
    loaded = keras.saving.load_model(path)
    ln = loaded.get_layer("ln")
    assert (ln.mode, ln.group, ln.partition, ln.num_groups) == ("set", 1, "strided", 2)
    x = rng.normal(size=(6, 4, 4, 3)).astype("float32")
    h = to_numpy(loaded.get_layer("conv")(x))
    gamma, beta = to_numpy(ln.gamma), to_numpy(ln.beta)
    np.testing.assert_allclose(
        to_numpy(loaded(x)),
        reference.local_norm(h.astype(np.float64), gamma, beta, mode="set", group=1),
        atol=2e-5)
    np.testing.assert_allclose(
        to_numpy(loaded(x, training=True)),
        reference.local_norm(h.astype(np.float64), gamma, beta, partition="strided"),
        atol=2e-5)


def test_registered_name_is_in_the_saved_config(tmp_path):
    model = keras.Sequential([keras.Input((3,)), LocalNormalization(num_groups=2)])
    config = json.loads(model.to_json())
    layer = config["config"]["layers"][-1]
    assert layer["registered_name"] == "localnorm>LocalNormalization"
    assert keras.saving.get_registered_object("localnorm>LocalNormalization") is LocalNormalization


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_a_checkpoint_with_another_group_count_is_refused_clearly(tmp_path, suffix):
    def model(num_groups):
        return keras.Sequential([keras.Input((3, 3, 5)), LocalNormalization(num_groups, name="ln")])

    path = tmp_path / f"k2{suffix}"
    saved = model(2)
    saved.get_layer("ln").gamma.assign(np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 5)))
    saved.save(path) if suffix == ".keras" else saved.save_weights(path)
    target = model(4)
    # Keras wraps what a layer raises while loading in its own ValueError; ours is the
    # message it carries.
    with pytest.raises(ValueError, match=r"checkpoint's gamma has shape \(2, 5\)") as info:
        target.load_weights(path)
    message = str(info.value)
    assert "(4, 5)" in message and "num_groups" in message and "Fix" in message
    same = model(2)
    same.load_weights(path)  # the same group count loads
    np.testing.assert_array_equal(to_numpy(same.get_layer("ln").gamma),
                                  to_numpy(saved.get_layer("ln").gamma))


def test_export_keeps_the_batch_size_open_and_refuses_a_too_small_batch(tmp_path, rng):
    """``model.export``: a TF SavedModel (TensorFlow, JAX backends) or ONNX (PyTorch
    backend; Keras 3.15's SavedModel export fails on it for any model). The exported
    batch size is unknown: ragged batches are right, a batch with fewer samples than
    groups raises (TensorFlow graph) or has the spec's defined finite result (JAX and
    ONNX programs cannot raise): the one sample, alone in group 0, normalized with its own
    statistics; group 1 has no samples and reaches no output."""
    model = keras.Sequential([keras.Input((4, 4, 3)), LocalNormalization(num_groups=2)])
    x = rng.normal(size=(6, 4, 4, 3)).astype("float32")
    model(x)
    if BACKEND == "torch":
        ort = pytest.importorskip("onnxruntime")
        model.export(tmp_path / "m.onnx", format="onnx", verbose=False)
        session = ort.InferenceSession(str(tmp_path / "m.onnx"))
        name = session.get_inputs()[0].name

        def serve(t):
            return session.run(None, {name: t})[0]
    else:
        tf = pytest.importorskip("tensorflow")
        model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
        served = tf.saved_model.load(str(tmp_path / "saved"))

        def serve(t):
            return served.serve(t).numpy()
    for n in (6, 5):  # 3 + 3, and 3 + 2 (ragged)
        np.testing.assert_allclose(serve(x[:n]), to_numpy(model(x[:n])), atol=1e-5)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 samples"):
            serve(x[:1])
    else:
        one = x[:1].astype(np.float64)
        mean = one.mean(axis=(0, 1, 2), keepdims=True)
        var = one.var(axis=(0, 1, 2), keepdims=True)
        want = (one - mean) / np.sqrt(var + 1e-5)  # gamma 1, beta 0 (the initializers)
        np.testing.assert_allclose(serve(x[:1]), want, atol=1e-4)


def test_a_file_saved_before_the_modules_were_renamed_still_loads():
    """Files saved by earlier versions name the layer's module ``localnorm.keras.layers``
    (now ``localnorm.keras._layers``); Keras finds the class by its registered name."""
    config = keras.saving.serialize_keras_object(LocalNormalization(num_groups=3, mode="set"))
    assert config["registered_name"] == "localnorm>LocalNormalization"
    config["module"] = "localnorm.keras.layers"
    layer = keras.saving.deserialize_keras_object(config)
    assert isinstance(layer, LocalNormalization)
    assert (layer.num_groups, layer.mode) == (3, "set")
