"""Ghost BatchNorm for Keras 3 (GhostBatchNormalization): training against tf-keras's
``BatchNormalization(virtual_batch_size=...)`` algorithm on this process's backend,
inference with any batch size, `.keras` round trips, conversion and option errors."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_helpers import BACKEND, to_numpy  # noqa: E402
from conformance import tfkeras_reference as tfk  # noqa: E402
from localnorm import LocalNormError, reference  # noqa: E402
from localnorm.keras import (  # noqa: E402
    GhostBatchNormalization, LocalNormalization, convert_batchnorm, set_eval_mode)


def _model(layer, shape=(3, 3, 2)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def _dot_loss(y_true, y_pred):
    """sum(y * cotangent) per sample; Keras averages it over the batch."""
    return keras.ops.sum(y_true * y_pred, axis=tuple(range(1, len(y_pred.shape))))


def test_migration_from_tf_keras_virtual_batch_size():
    """Three ``model.fit`` steps (SGD on gamma/beta) with GhostBatchNormalization and with
    tf-keras's algorithm (conformance/tfkeras_reference.py): the same gamma/beta after
    each step (so the same gradients), the same moving statistics, the same training
    output and the same inference on a batch of 5, which tf-keras could not take."""
    rng = np.random.default_rng(0)
    v, c, lr, n = 4, 2, 0.5, 8
    layer = GhostBatchNormalization(virtual_batch_size=v, momentum=0.9, name="gbn")
    model = _model(layer)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=_dot_loss)
    gamma, beta, mm, mv = np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)
    for step in range(3):
        x = (rng.normal(size=(n, 3, 3, c)) * 2 + step).astype("float32")
        ct = rng.normal(size=x.shape).astype("float32")
        _, mm, mv, (_, dg, db) = tfk.train_step(
            x, gamma, beta, mm, mv, virtual_batch_size=v, momentum=0.9, epsilon=1e-3,
            cotangent=ct / n)
        gamma, beta = gamma - lr * dg, beta - lr * db
        model.fit(x, ct, batch_size=n, epochs=1, shuffle=False, verbose=0)
        np.testing.assert_allclose(to_numpy(layer.gamma)[0], gamma, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(to_numpy(layer.beta)[0], beta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.moving_mean)[0], mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.moving_variance)[0], mv, rtol=1e-5, atol=1e-6)
    x5 = rng.normal(size=(5, 3, 3, c)).astype("float32")
    np.testing.assert_allclose(model.predict(x5, verbose=0),
                               tfk.infer(x5, gamma, beta, mm, mv, epsilon=1e-3),
                               rtol=1e-4, atol=1e-5)
    y = to_numpy(layer(x, training=True))
    y_ref, *_ = tfk.train_step(x, gamma, beta, mm, mv, virtual_batch_size=v, momentum=0.9,
                               epsilon=1e-3)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [3, 10])
def test_ragged_batches_train_and_count_their_groups(n):
    """Batches tf-keras refused (not a multiple of the virtual batch size) train:
    K = max(1, N // 4) groups, the reference's output."""
    rng = np.random.default_rng(n)
    layer = GhostBatchNormalization(virtual_batch_size=4)
    x = rng.normal(size=(n, 5, 3)).astype("float32")
    y = to_numpy(layer(x, training=True))
    want = reference.local_norm(x.astype(np.float64), np.ones((1, 3)), np.zeros((1, 3)),
                                num_groups=max(1, n // 4), partition="strided", eps=1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_fit_on_a_ragged_last_batch_and_predict_any_size():
    rng = np.random.default_rng(1)
    model = _model(GhostBatchNormalization(virtual_batch_size=4), shape=(3,))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), batch_size=8, verbose=0)
    assert model.predict(rng.normal(size=(1, 3)), verbose=0).shape == (1, 3)


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    model = _model(GhostBatchNormalization(virtual_batch_size=2, name="gbn"), shape=(3,))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 3)), batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    layer = loaded.get_layer("gbn")
    assert type(layer) is GhostBatchNormalization
    assert (layer.virtual_batch_size, layer.mode, layer.shared_affine) == (2, "running", True)
    x = rng.normal(size=(3, 3))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_per_group_weights_do_not_load_into_the_shared_layer(tmp_path):
    per_group = _model(LocalNormalization(num_groups=2), shape=(3,))
    per_group.save_weights(tmp_path / "w.weights.h5")
    shared = _model(LocalNormalization(num_groups=2, shared_affine=True), shape=(3,))
    # Keras re-raises a layer's loading error as a ValueError that quotes its message.
    with pytest.raises(ValueError, match="shared_affine=True") as err:
        shared.load_weights(tmp_path / "w.weights.h5")
    assert "(2, 3)" in str(err.value)


def test_convert_batchnorm_into_ghost_keeps_inference():
    rng = np.random.default_rng(3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(4)(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(16, 3)), rng.normal(size=(16, 4)), batch_size=8, verbose=0)
    x = rng.normal(size=(5, 3))
    ghost = convert_batchnorm(model, ghost=True, virtual_batch_size=4)
    layer = [lay for lay in ghost.layers if isinstance(lay, GhostBatchNormalization)][0]
    assert layer.partition == "strided"
    np.testing.assert_allclose(ghost.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_running_mode_and_options_are_checked():
    with pytest.raises(LocalNormError, match="track_running_stats"):
        set_eval_mode(_model(LocalNormalization(num_groups=2), shape=(3,)), "running")
    with pytest.raises(LocalNormError, match="shared_affine=True"):
        LocalNormalization(num_groups=2, track_running_stats=True)
    with pytest.raises(LocalNormError, match="virtual_batch_size"):
        GhostBatchNormalization()
    with pytest.raises(LocalNormError, match="momentum"):
        GhostBatchNormalization(virtual_batch_size=4, momentum=1.5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a None batch axis is TensorFlow's")
@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_run_time_group_count_on_tensorflow_equals_the_reference(partition):
    """model.fit on TensorFlow traces a None batch axis: K = max(1, N // v) is counted at
    run time there (run-time segments). Output and gamma/beta gradients on ragged
    batches equal the reference's."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    layer = GhostBatchNormalization(virtual_batch_size=4, partition=partition, epsilon=1e-3)
    layer.build((None, 3, 2))
    layer.gamma.assign(rng.normal(size=(1, 2)).astype("float32"))
    layer.beta.assign(rng.normal(size=(1, 2)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, 3, 2), tf.float32)] * 2)
    def run(x, ct):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * ct)
        return (y,) + tuple(tape.gradient(loss, [layer.gamma, layer.beta]))

    g, b = to_numpy(layer.gamma).astype(np.float64), to_numpy(layer.beta).astype(np.float64)
    for n in (3, 10, 13):
        x = (rng.normal(size=(n, 3, 2)) * 2 + 1).astype("float32")
        ct = rng.normal(size=x.shape).astype("float32")
        y, dg, db = (to_numpy(t) for t in run(x, ct))
        kw = dict(num_groups=max(1, n // 4), partition=partition, eps=1e-3)
        np.testing.assert_allclose(y, reference.local_norm(x.astype(np.float64), g, b, **kw),
                                   rtol=1e-4, atol=1e-4)
        _, rdg, rdb = reference.local_norm_vjp(x.astype(np.float64), g, b, ct, **kw)
        np.testing.assert_allclose(dg, rdg, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(db, rdb, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a None batch axis is TensorFlow's")
def test_run_time_group_count_refuses_groups_of_one_value_on_tensorflow():
    """With a None batch axis the one-value check measures the groups counted at run
    time: virtual batches of one sample of dense input have one value per channel, which
    an eager call refuses; the graph returned beta for every sample. Groups of two pass."""
    import tensorflow as tf

    x = np.random.default_rng(5).normal(size=(6, 3)).astype("float32")
    spec = [tf.TensorSpec((None, 3), tf.float32)]
    one = GhostBatchNormalization(virtual_batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="1 value|fewer than 2"):
        tf.function(lambda t: one(t, training=True), input_signature=spec)(x)
    two = GhostBatchNormalization(virtual_batch_size=2)
    y = tf.function(lambda t: two(t, training=True), input_signature=spec)(x)
    np.testing.assert_allclose(to_numpy(y), to_numpy(two(x, training=True)), atol=1e-5)

def test_frozen_ghost_runs_in_inference_as_batchnorm():
    """``trainable=False`` (a frozen base model): Keras's BatchNormalization then runs in
    inference also in training; so does Ghost BatchNorm, and a frozen BatchNormalization
    converted with ``ghost=True`` keeps training as the original did."""
    rng = np.random.default_rng(5)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.5)(
        keras.layers.Dense(4)(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(16, 3)), rng.normal(size=(16, 4)), batch_size=8, verbose=0)
    model.trainable = False
    ghost = convert_batchnorm(model, ghost=True, virtual_batch_size=4)
    layer = [lay for lay in ghost.layers if isinstance(lay, GhostBatchNormalization)][0]
    assert not layer.trainable
    moving = to_numpy(layer.moving_mean).copy()
    x = (rng.normal(size=(8, 3)) * 3 + 2).astype("float32")
    np.testing.assert_allclose(to_numpy(ghost(x, training=True)), to_numpy(model(x, training=True)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(ghost(x, training=True)), to_numpy(ghost(x)), rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(layer.moving_mean), moving)
    # Unfrozen again, training uses the virtual batches' statistics and moves the state.
    layer.trainable = True
    ghost(x, training=True)
    assert not np.allclose(to_numpy(layer.moving_mean), moving)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.export is JAX-only")
@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_jax_export_counts_virtual_batches_of_a_symbolic_batch(partition):
    """A training step exported with a symbolic batch size counts K = max(1, N //
    virtual_batch_size) groups along the batch axis when it runs: one program gives the
    eager step's output, gradients and moving statistics for even, ragged and one-sample
    batches (it was refused; TensorFlow graphs always counted them at run time)."""
    import jax
    import jax.numpy as jnp
    from jax import export

    layer = GhostBatchNormalization(virtual_batch_size=2, partition=partition)
    layer.build((None, 3, 4))
    layer.gamma.assign(1 + np.arange(4.0, dtype="float32")[None] / 4)
    params = [v.value for v in layer.trainable_variables]
    moving = [v.value for v in layer.non_trainable_variables]

    def step(p, m, x):
        def loss(p):
            y = layer.stateless_call(p, m, x, training=True)[0]
            return jnp.sum(y * jnp.arange(y.size).reshape(y.shape) / y.size)

        y, m = layer.stateless_call(p, m, x, training=True)
        return y, jax.grad(loss)(p), m

    (b,) = export.symbolic_shape("b")
    exported = export.export(jax.jit(step))(params, moving,
                                            jax.ShapeDtypeStruct((b, 3, 4), jnp.float32))
    for n in (1, 5, 8):
        x = np.random.default_rng(n).normal(size=(n, 3, 4)).astype("float32")
        for got, want in zip(jax.tree.leaves(exported.call(params, moving, x)),
                             jax.tree.leaves(jax.jit(step)(params, moving, x))):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                                       atol=1e-6)
