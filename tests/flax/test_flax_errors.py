"""The Flax adapter's own messages (``localnorm.flax._errors``) follow the project's
template, and its dialects (NNX, Linen) make the core's messages speak Flax."""

from __future__ import annotations

import pytest

pytest.importorskip("flax")

import jax.numpy as jnp  # noqa: E402

from localnorm import _errors  # noqa: E402
from localnorm.flax import _errors as flax_errors  # noqa: E402


def test_every_message_follows_the_template():
    table = {
        "unbound_axis_name": [("data", "LocalNorm")],
        "sharded_partition": [("strided",)],
        "sharded_groups": [(3, 4, "data")],
        "sharded_ragged": [(5, 2, 4, "data")],
        "sharded_group_array": [(7, 4, 4, "data")],
        "sharded_virtual_batch": [(3, 2, 6, 4, "data", "GhostBatchNorm")],
        "symbolic_group_array": [(8, "b")],
        "traced_group": [(jnp.zeros((), jnp.int32), "set"),
                         (jnp.zeros((), jnp.int32), "batch")],
        "bad_key_generator": [(jnp.zeros((2, 2), jnp.uint32),)],
        "not_nnx_module": [(object(),)],
        "bad_dtype": [("dtype", "int32"), ("param_dtype", "foo")],
        "bad_axis_name": [(5,)],
        "symbolic_virtual_batch": [("GhostBatchNorm", "b", 4)],
    }
    builders = _errors.builders(flax_errors)
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    for name, calls in table.items():
        for args in calls:
            text = str(builders[name](*args))
            assert not _errors.template_problems(text), (name, text)


@pytest.mark.parametrize("dialect", ["FLAX", "FLAX_LINEN"])
def test_the_core_messages_in_the_flax_dialects(dialect):
    d = getattr(flax_errors, dialect)
    assert "epsilon=-1" in str(_errors.bad_eps(-1, d))
    assert "DataLoader" not in str(_errors.too_few_samples(2, 4, d))
    assert "'running'" not in str(_errors.single_value_statistics("single", 1, (2, 3), d))
    assert "jnp.float32" in str(_errors.not_floating("int32", d))
    for text in (_errors.bad_eps(-1, d), _errors.too_few_samples(2, 4, d),
                 _errors.bad_rank(3, "4", dialect=d), _errors.bad_channels(5, 3, dialect=d),
                 _errors.single_value_statistics("batch", 1, (4, 3), d),
                 _errors.not_finite("x", 3, 24, dialect=d)):
        assert not _errors.template_problems(str(text)), str(text)
    linen = "layer.init" in str(_errors.bad_channels(5, 3, dialect=d))
    assert linen == (dialect == "FLAX_LINEN")
