"""Helpers of the Keras adapter tests (imported by the test modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import keras

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[2]


def to_numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def run_python(code: str, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    """Run ``code`` in a fresh Python process (its own Keras backend); return stdout.
    A failure raises with the child's output, so a broken subprocess test explains
    itself."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=ROOT, capture_output=True,
        text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc.stdout
