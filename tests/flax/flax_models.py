"""Models and helpers shared by the flax adapter tests (a unique module name: pytest puts
this folder on sys.path, and other suites have their own helpers)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

import localnorm.flax as lf  # noqa: E402


class SmallCNN(nnx.Module):
    """conv -> BatchNorm -> relu -> conv -> BatchNorm -> mean pool -> linear (NHWC)."""

    def __init__(self, classes: int = 5, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, rngs=rngs)
        self.block = nnx.Sequential(nnx.Conv(8, 8, (3, 3), rngs=rngs), nnx.BatchNorm(8, rngs=rngs))
        self.head = nnx.Linear(8, classes, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = nnx.relu(self.block(h))
        return self.head(h.mean(axis=(1, 2)))


def localnorm_cnn(num_groups: int = 4, seed: int = 0) -> SmallCNN:
    """SmallCNN converted to LocalNorm, with distinct random scale/bias per group (so the
    group choice matters in every test)."""
    model = lf.convert_batchnorm(SmallCNN(rngs=nnx.Rngs(seed)), num_groups)
    keys = iter(jax.random.split(jax.random.key(seed + 1), 16))
    for layer in lf.localnorm_layers(model):
        shape = layer.scale.shape
        layer.scale[...] = 1 + 0.5 * jax.random.normal(next(keys), shape)
        layer.bias[...] = 0.5 * jax.random.normal(next(keys), shape)
    return model


def images(n: int, seed: int = 0, size: int = 6):
    return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def params(k: int, c: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(1, 0.5, (k, c)), rng.normal(0, 0.5, (k, c))


def set_params(layer, gamma, beta) -> None:
    layer.scale[...] = jnp.asarray(gamma, layer.scale.dtype)
    layer.bias[...] = jnp.asarray(beta, layer.bias.dtype)
