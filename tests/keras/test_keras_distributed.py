"""JAX backend under ``keras.distribution.DataParallel`` on 4 emulated CPU devices.

The batch is sharded along the batch axis over the devices; with the contiguous partition
and K a multiple of the device count, each device holds whole groups, so a group's
statistics are those of its device's shard and the compiled forward has no cross-device
collective. With the strided partition, or K not a multiple of the device count, groups
span devices: still LocalNorm of the global batch, but XLA adds an all-reduce (the guide
says so). Runs in a subprocess (XLA_FLAGS must be set before JAX starts, and the backend
must be JAX), once, from the JAX backend's run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_helpers import BACKEND, run_python  # noqa: E402
from localnorm import reference  # noqa: E402

pytestmark = pytest.mark.skipif(
    BACKEND != "jax", reason="the DataParallel test runs once, from the KERAS_BACKEND=jax run")

_SCRIPT = r"""
import json, re
import jax, keras, numpy as np
from localnorm.keras import LocalNormalization, predict

devices = jax.devices()
assert len(devices) == 4, devices
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
keras.utils.set_random_seed(0)

inputs = keras.Input((5, 5, 2))
h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
h = LocalNormalization(num_groups=4, name="ln")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
model.compile(keras.optimizers.SGD(0.1),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5, 5, 2)).astype("float32")
y = rng.integers(0, 3, size=64)
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)

ln = model.get_layer("ln")
distribution = keras.distribution.distribution()
xb = keras.distribution.distribute_tensor(x[:16], distribution.get_data_layout((16, 5, 5, 2)))
h = model.get_layer("conv")(xb)
out = jax.jit(lambda t: ln(t, training=True))(h)
conv = np.asarray(h)

COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
collectives = {}
for k, partition in ((4, "contiguous"), (8, "contiguous"), (4, "strided"), (2, "contiguous")):
    layer = LocalNormalization(num_groups=k, partition=partition)
    layer.build(h.shape)
    hlo = jax.jit(lambda t: layer(t, training=True)).lower(h).compile().as_text()
    collectives[f"{k}-{partition}"] = sorted(
        c for c in COLLECTIVES if re.search(rf"\s{c}(-start)?\(", hlo))
print(json.dumps({
    "collectives": collectives,
    "loss": history.history["loss"],
    "gamma_sharding": str(ln.gamma.value.sharding),
    "out_devices": len(out.sharding.device_set),
    "shard_rows": sorted((s.index[0].start or 0, s.index[0].stop) for s in out.addressable_shards),
    "conv": conv.tolist(),
    "out": np.asarray(out).tolist(),
    "gamma": np.asarray(ln.gamma).tolist(),
    "beta": np.asarray(ln.beta).tolist(),
    "voting": predict(model, x[:16], protocol="voting").labels.tolist(),
}))
"""


def test_data_parallel_fit_on_four_devices():
    out = run_python(_SCRIPT, env={
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    })
    result = json.loads(out.strip().splitlines()[-1])
    losses = result["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result["out_devices"] == 4  # the output stays sharded over the devices
    # Each device holds one contiguous group of 4 samples along the batch axis...
    assert [tuple(r) for r in result["shard_rows"]] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    # ...and the (K, C) gamma/beta are replicated.
    assert "P(None, None)" in result["gamma_sharding"]
    # The distributed training forward is LocalNorm of the global batch: with 16 samples
    # over 4 devices and K=4 contiguous groups, each device's 4 samples are one group.
    conv = np.asarray(result["conv"], dtype=np.float64)
    want = reference.local_norm(conv, np.asarray(result["gamma"]), np.asarray(result["beta"]))
    np.testing.assert_allclose(np.asarray(result["out"]), want, atol=2e-5)
    assert len(result["voting"]) == 16
    # Whole groups per device: no cross-device traffic in the compiled forward. Groups
    # that span devices (strided, or K=2 < 4 devices) cost an all-reduce.
    coll = result["collectives"]
    assert coll["4-contiguous"] == [] and coll["8-contiguous"] == [], coll
    assert "all-reduce" in coll["4-strided"] and "all-reduce" in coll["2-contiguous"], coll
