"""The Keras adapter's own messages (``localnorm.keras._errors``) follow the project's
template, and its dialect makes the core's messages speak Keras."""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

from localnorm import _errors  # noqa: E402
from localnorm.keras import _errors as keras_errors  # noqa: E402


def test_every_message_follows_the_template():
    table = {
        "unknown_channels": [(-1, (None, None))],
        "cannot_convert": [("MyModel",)],
        "mask_unsupported": [("LocalNormalization",)],
        "batchnorm_out_of_reach": [("time_distributed", "TimeDistributed")],
        "cannot_copy": [("block", "Block", 4, 0)],
        "not_floating_policy": [("LocalNormalization", "int32")],
        "group_array_unknown_batch": [(8, "b")],
        "virtual_batch_unknown_size": [("GhostBatchNormalization", 32)],
    }
    builders = _errors.builders(keras_errors)
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    for name, calls in table.items():
        for args in calls:
            text = str(builders[name](*args))
            assert not _errors.template_problems(text), (name, text)


def test_the_core_messages_in_the_keras_dialect():
    """A fix names the argument and idiom a Keras user types (``epsilon=``, a dataset's
    ``drop_remainder``, ``keras.ops.cast``), never PyTorch's."""
    d = keras_errors.KERAS
    assert "epsilon=-1" in str(_errors.bad_eps(-1, d))
    assert "drop_remainder=True" in str(_errors.too_few_samples(2, 4, d))
    assert "LocalNorm2d" not in str(_errors.bad_rank(3, "4", dialect=d))
    assert "'running'" not in str(_errors.single_value_statistics("single", 1, (2, 3), d))
    assert "num_features=5" not in str(_errors.bad_channels(5, 3, "C", dialect=d))
    assert "keras.ops.cast" in str(_errors.not_floating("int32", d))
    for text in (_errors.bad_eps(-1, d), _errors.too_few_samples(2, 4, d),
                 _errors.bad_rank(3, "4", dialect=d), _errors.bad_channels(5, 3, dialect=d),
                 _errors.single_value_statistics("batch", 1, (4, 3), d),
                 _errors.not_finite("x", 3, 24, dialect=d)):
        assert not _errors.template_problems(str(text)), str(text)
