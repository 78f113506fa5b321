"""Shared fixtures of the Keras adapter tests.

Keras fixes its backend per process: this suite runs once per ``KERAS_BACKEND``
(tensorflow, jax, torch), see ``.ci/test``. Tests that need another backend start a
subprocess.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts (and leaves Keras) with the default float32 policy."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
