"""model.fit on this process's backend, on CPU and (where the backend sees one) GPU."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_helpers import BACKEND, to_numpy  # noqa: E402
from localnorm.keras import LocalNormalization, predict  # noqa: E402


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    x[np.arange(n), 2 * y, :, 0] += 3.0  # a learnable class signal: a bright row
    return x, y


def _model(num_groups=4):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(8, 3, padding="same"),
        LocalNormalization(num_groups=num_groups, name="ln"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])


def test_fit_learns_and_groups_get_their_own_parameters():
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.Adam(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # 96 samples in batches of 20: the last batch (16) is ragged.
    history = model.fit(x, y, batch_size=20, epochs=10, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    gamma = to_numpy(model.get_layer("ln").gamma)
    assert gamma.shape == (4, 8)
    assert np.ptp(gamma, axis=0).max() > 1e-3  # each group along the batch axis learned its own
    assert predict(model, x, protocol="voting").labels.shape == (96,)


def test_fit_with_batches_smaller_than_the_groups_explains_the_fix():
    x, y = _data(n=12)
    model = _model(num_groups=4)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # 12 samples in batches of 5: the last batch holds 2 < 4 samples. (TensorFlow may
    # trace that batch with an unknown size: then the check runs in the graph.)
    with pytest.raises(Exception, match=r"at least 4 samples") as info:
        model.fit(x, y, batch_size=5, epochs=1, verbose=0, shuffle=False)
    assert "Fix" in str(info.value)


def _backend_sees_gpu() -> bool:
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if BACKEND == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _backend_sees_gpu(), reason=f"the {BACKEND} backend sees no GPU")
def test_fit_runs_on_the_gpu():
    x, y = _data()
    model = _model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    out = model(x[:8])
    device = str(out.device).lower()
    assert "gpu" in device or "cuda" in device
