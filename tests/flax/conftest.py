"""The flax suite runs with 4 CPU devices for the sharding tests. .ci/test sets
XLA_FLAGS=--xla_force_host_platform_device_count=4; a plain ``pytest tests/flax`` gets the
same here, as long as nothing imported jax before this file (the flag is read when jax
starts). float64 tests use ``jax.enable_x64(True)`` scoped to the test, never the global
flag."""

import os
import sys

_FLAG = "--xla_force_host_platform_device_count=4"
if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
