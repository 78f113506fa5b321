"""set_eval_mode / eval_mode, and predict's protocol plumbing against the core.

predict() must equal :func:`localnorm.protocols.run_protocol` driven by a NumPy forward
built from :func:`localnorm.reference.local_norm` and the model's other weights, for every
protocol and vote: the layer math is the conformance suite's job, this checks the
plumbing (modes, groups, tiling, chunking, voting) around it.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import localnorm  # noqa: E402
from keras_helpers import to_numpy  # noqa: E402
from localnorm import reference  # noqa: E402
from localnorm.protocols import draw_groups, run_protocol  # noqa: E402
from localnorm.keras import (  # noqa: E402
    LocalNormalization,
    eval_mode,
    localnorm_layers,
    predict,
    set_eval_mode,
)

K = 4


def _model(partition="contiguous", num_groups=K):
    rng = np.random.default_rng(5)
    model = keras.Sequential([
        keras.Input((3, 3, 2)),
        LocalNormalization(num_groups=num_groups, partition=partition, name="ln"),
        keras.layers.Flatten(),
        keras.layers.Dense(5, name="head"),
    ])
    ln = model.get_layer("ln")
    ln.gamma.assign(rng.uniform(0.2, 2.0, size=(num_groups, 2)))
    ln.beta.assign(rng.normal(size=(num_groups, 2)))
    return model


def _numpy_forward(model):
    """The model in NumPy float64: reference LocalNorm, then the dense head."""
    ln, head = model.get_layer("ln"), model.get_layer("head")
    gamma, beta = to_numpy(ln.gamma), to_numpy(ln.beta)
    kernel, bias = (to_numpy(w).astype(np.float64) for w in head.weights)

    def forward(x, mode, group):
        y = reference.local_norm(np.asarray(x, np.float64), gamma, beta, mode=mode,
                                 group=group, partition=ln.partition, eps=ln.epsilon)
        return y.reshape(len(y), -1) @ kernel + bias

    return forward


@pytest.mark.parametrize("partition", localnorm.PARTITIONS)
@pytest.mark.parametrize("protocol, vote, kwargs", [
    ("batch", "hard", {}),
    ("batch", "hard", dict(batch_size=8)),
    ("single", "hard", dict(group=2)),
    ("single", "hard", dict(group=np.arange(14) % K)),
    ("single-voting", "hard", {}),
    ("single-voting", "soft", dict(batch_size=12)),
    ("voting", "hard", {}),
    ("voting", "soft", dict(set_size=3)),
])
def test_predict_equals_run_protocol_on_the_reference(protocol, vote, kwargs, partition, rng):
    model = _model(partition)
    x = rng.normal(size=(14, 3, 3, 2)).astype("float32")
    got = predict(model, x, protocol=protocol, vote=vote, **kwargs)
    want = run_protocol(_numpy_forward(model), x.astype(np.float64), protocol=protocol,
                        num_groups=K, vote=vote, partition=partition, **kwargs)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    np.testing.assert_array_equal(got.labels, want.labels)
    if want.agreement is None:
        assert got.agreement is None
    else:
        np.testing.assert_allclose(got.agreement, want.agreement)
    assert all(layer.mode == "batch" for layer in localnorm_layers(model))  # restored


def test_single_with_random_groups_is_seeded(rng):
    model = _model()
    x = rng.normal(size=(10, 3, 3, 2)).astype("float32")
    a = predict(model, x, protocol="single", generator=7)
    b = predict(model, x, protocol="single", generator=np.random.default_rng(7))
    np.testing.assert_array_equal(a.scores, b.scores)
    groups = draw_groups(10, K, 7)
    want = predict(model, x, protocol="single", group=groups)
    np.testing.assert_array_equal(a.scores, want.scores)


def test_predict_takes_backend_tensors(rng):
    model = _model()
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    got = predict(model, keras.ops.convert_to_tensor(x), protocol="voting")
    np.testing.assert_array_equal(got.labels, predict(model, x, protocol="voting").labels)


def test_eval_mode_sets_and_restores_every_layer_of_nested_models(rng):
    inner = keras.Sequential([keras.Input((4,)), LocalNormalization(num_groups=2)])
    outer = keras.Sequential([keras.Input((4,)), inner, LocalNormalization(num_groups=2)])
    layers = localnorm_layers(outer)
    assert len(layers) == 2
    set_eval_mode(outer, "set", 1)
    with eval_mode(outer, "single", group=[0, 1, 1]):
        assert [(ln.mode, ln.group.tolist()) for ln in layers] == [("single", [0, 1, 1])] * 2
    assert [(ln.mode, ln.group) for ln in layers] == [("set", 1)] * 2
    with pytest.raises(RuntimeError):
        with eval_mode(outer, "batch"):
            raise RuntimeError("boom")
    assert [(ln.mode, ln.group) for ln in layers] == [("set", 1)] * 2


def test_set_eval_mode_reaches_a_compiled_predict(rng):
    model = _model()
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    forward = _numpy_forward(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(x, "batch", 0), atol=1e-4)
    set_eval_mode(model, "set", 3)  # the traced predict step must not be reused
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(x, "set", 3), atol=1e-4)
    model.compile(loss="mse")
    with eval_mode(model, "single", 2):
        loss = model.evaluate(x, forward(x, "single", 2), verbose=0)
    assert loss < 1e-8


def _nested():
    """outer(x) = head(inner(x)), the LocalNorm layer inside ``inner``."""
    rng = np.random.default_rng(2)
    inner = keras.Sequential([keras.Input((3, 3, 2)), LocalNormalization(num_groups=K, name="ln")],
                             name="inner")
    outer = keras.Sequential([keras.Input((3, 3, 2)), inner, keras.layers.Flatten(),
                              keras.layers.Dense(5, name="head")], name="outer")
    ln = inner.get_layer("ln")
    ln.gamma.assign(rng.uniform(0.2, 2.0, size=(K, 2)))
    ln.beta.assign(rng.normal(size=(K, 2)))
    return outer, inner, ln


def _eager(model, x):
    return to_numpy(model(x, training=False))


def test_a_mode_change_reaches_every_compiled_function_that_traced_the_layer(rng):
    outer, inner, ln = _nested()
    outer.compile(loss="mse")
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    before = outer.predict(x, verbose=0)  # compiled (TF, JAX) with mode "batch"
    np.testing.assert_allclose(before, _eager(outer, x), atol=1e-5)
    # The inner model is passed: the outer model's compiled predict must not be reused.
    set_eval_mode(inner, "set", 3)
    after = outer.predict(x, verbose=0)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, _eager(outer, x), atol=1e-5)
    assert outer.evaluate(x, _eager(outer, x), verbose=0) < 1e-8
    # The layer's own method reaches both models' compiled predict and evaluate.
    ln.set_eval_mode("single", 1)
    want = _eager(outer, x)
    np.testing.assert_allclose(outer.predict(x, verbose=0), want, atol=1e-5)
    assert outer.evaluate(x, want, verbose=0) < 1e-8
    np.testing.assert_allclose(inner.predict(x, verbose=0), _eager(inner, x), atol=1e-5)
    # eval_mode on the inner model, compiled inside and after the block.
    with eval_mode(inner, "batch"):
        np.testing.assert_allclose(outer.predict(x, verbose=0), before, atol=1e-5)
    np.testing.assert_allclose(outer.predict(x, verbose=0), want, atol=1e-5)


def test_a_partition_change_reaches_a_compiled_train_step(rng):
    outer, inner, ln = _nested()
    outer.compile(keras.optimizers.SGD(0.0), loss="mse")  # lr 0: weights stay put
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    x[::2] += 3.0  # even samples shifted: contiguous and strided groups differ
    target = np.zeros((8, 5), "float32")
    contiguous = outer.evaluate(x, target, verbose=0)
    outer.train_on_batch(x, target)  # traces the train step with the contiguous partition
    ln.partition = "strided"
    loss = float(np.asarray(outer.train_on_batch(x, target)).ravel()[0])
    want = np.mean((to_numpy(outer(x, training=True)) - target) ** 2)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    assert abs(loss - contiguous) > 1e-3


def test_predict_leaves_compiled_predict_functions_alone(rng):
    model = _model()
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    first = model.predict(x, verbose=0)
    compiled = model.predict_function
    predict(model, x, protocol="voting")  # eager passes in other modes, then restored
    assert model.predict_function is compiled
    np.testing.assert_array_equal(model.predict(x, verbose=0), first)


def test_predict_checks_the_input_for_nan_once(rng):
    model = _model()
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    x[3, 1, 1, 0] = np.nan
    with pytest.raises(localnorm.LocalNormError, match="1 non-finite of 144") as info:
        predict(model, x, protocol="voting")
    assert "check_finite=False" in str(info.value)
    # check_finite=False: no check up front and none in the layers' eager passes.
    scores = predict(model, x, protocol="single", group=0, check_finite=False).scores
    assert np.isnan(scores[3]).all() and np.isfinite(np.delete(scores, 3, axis=0)).all()
    tokens = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 3),
                               LocalNormalization(num_groups=2), keras.layers.Flatten()])
    ids = rng.integers(0, 10, size=(4, 6)).astype("int32")
    assert predict(tokens, ids, protocol="voting").labels.shape == (4,)  # integer x: fine


def test_errors_name_the_problem(rng):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(localnorm.LocalNormError, match="set_eval_mode.*no LocalNorm"):
        set_eval_mode(plain, "single")
    with pytest.raises(localnorm.LocalNormError, match="predict.*no LocalNorm"):
        predict(plain, np.zeros((4, 4)))
    model = _model()
    with pytest.raises(localnorm.LocalNormError, match="group=4"):
        set_eval_mode(model, "set", 4)
    with pytest.raises(localnorm.LocalNormError, match="mode='running'"):
        set_eval_mode(model, "running")
    with pytest.raises(localnorm.LocalNormError, match="protocol='vote'"):
        predict(model, np.zeros((8, 3, 3, 2)), protocol="vote")
    with pytest.raises(localnorm.LocalNormError, match=r"len\(group\)=3"):
        predict(model, np.zeros((8, 3, 3, 2)), protocol="single", group=[0, 1, 2])
    mixed = keras.Sequential([keras.Input((4,)), LocalNormalization(num_groups=2),
                              LocalNormalization(num_groups=4)])
    with pytest.raises(localnorm.LocalNormError, match="num_groups"):
        predict(mixed, np.zeros((8, 4)))
    assert localnorm_layers(mixed)[0].mode == "batch"  # a refused setting changes nothing
    with pytest.raises(localnorm.LocalNormError, match="group=3"):
        set_eval_mode(mixed, "set", 3)  # valid for the second layer, not the first
    assert [ln.mode for ln in localnorm_layers(mixed)] == ["batch", "batch"]


@pytest.mark.parametrize("x", [None, {"images": np.zeros((8, 3, 3, 2))}, 1.5],
                         ids=["none", "dict", "scalar"])
def test_predict_refuses_what_is_not_an_array_of_images(x):
    """What ``model.predict`` would take but an array is not (a dict, a scalar, None)
    gets the project's message, not an IndexError from ``x.shape[0]``."""
    with pytest.raises(TypeError, match="must be an array.*Received: type\\(x\\)"):
        predict(_model(), x)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="needs tf.data")
def test_predict_refuses_a_dataset():
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((8, 3, 3, 2), "float32")).batch(4)
    with pytest.raises(TypeError, match="must be an array.*Dataset"):
        predict(_model(), dataset)


def _functional_nested():
    """The same network as :func:`_nested` with a functional outer model, built from the
    symbolic outputs of the already built inner model (no Sequential build around it)."""
    outer, inner, ln = _nested()
    x = keras.Input((3, 3, 2))
    y = keras.layers.Dense(5, name="head2")(keras.layers.Flatten()(inner(x)))
    return keras.Model(x, y, name="functional_outer"), inner, ln


@pytest.mark.parametrize("build", [_nested, _functional_nested])
def test_a_layer_change_reaches_a_compiled_predict_of_a_model_passed_before(build, rng):
    """A model given to any localnorm.keras function is known to hold its layers: a
    later change through the layer itself drops its compiled functions (on every
    backend, also where Keras's trainer names no model while it traces)."""
    outer, inner, ln = build()
    localnorm_layers(outer)
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    before = outer.predict(x, verbose=0)
    ln.set_eval_mode("set", 2)
    after = outer.predict(x, verbose=0)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, _eager(outer, x), atol=1e-5)


def test_a_layer_change_reaches_a_functional_model_compiled_by_keras_alone(rng):
    """A functional model that localnorm.keras never saw, compiled by ``predict`` alone
    (on JAX, Keras's trainer names no model while it traces), after a change made on the
    inner model and then on the layer itself."""
    outer, inner, ln = _functional_nested()
    x = rng.normal(size=(8, 3, 3, 2)).astype("float32")
    before = outer.predict(x, verbose=0)
    set_eval_mode(inner, "set", 2)
    after = outer.predict(x, verbose=0)
    assert not np.allclose(after, before, atol=1e-3)
    ln.set_eval_mode("single", 1)
    again = outer.predict(x, verbose=0)
    assert not np.allclose(again, after, atol=1e-3)
    np.testing.assert_allclose(again, _eager(outer, x), atol=1e-5)
