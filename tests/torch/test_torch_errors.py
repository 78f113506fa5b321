"""The PyTorch adapter's own messages (``localnorm.torch._errors``) follow the project's
template, and its dialect makes the core's messages speak PyTorch."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from localnorm import _errors  # noqa: E402
from localnorm.torch import _errors as torch_errors  # noqa: E402


def test_every_message_follows_the_template():
    table = {
        "not_distributed": [("set_group_per_rank",)],
        "lazy_batchnorm": [("LazyBatchNorm2d",)],
        "not_a_module": [("convert_batchnorm", "resnet18")],
        "bad_process_rank": [(-1,), ("1",)],
        "bad_layer_generator": [("set_mode", 0)],
        "not_a_tensor": [("LocalNorm2d", [1.0])],
        "not_scriptable": [("LocalNorm2d",)],
        "unmapped_running_stats": [("GhostBatchNorm2d",)],
    }
    builders = _errors.builders(torch_errors)
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    for name, calls in table.items():
        for args in calls:
            text = str(builders[name](*args))
            assert not _errors.template_problems(text), (name, text)


def test_the_core_messages_in_the_torch_dialect():
    """A fix names the argument and idiom a PyTorch user types, and every core message
    still follows the template in this dialect."""
    d = torch_errors.TORCH
    assert "eps=-1" in str(_errors.bad_eps(-1, d))
    assert "drop_last=True" in str(_errors.too_few_samples(2, 4, d))
    assert "LocalNorm2d" in str(_errors.bad_rank(3, "4", dialect=d))
    assert "'running'" in str(_errors.single_value_statistics("single", 1, (2, 3), d))
    assert "num_features=5" in str(_errors.bad_channels(5, 3, dialect=d))
    assert "x.float()" in str(_errors.not_floating("int32", d))
    for text in (_errors.bad_eps(-1, d), _errors.eps_underflows(1e-50, 1e-38, d),
                 _errors.too_few_samples(2, 4, d), _errors.bad_rank(3, "4", dialect=d),
                 _errors.single_value_statistics("batch", 1, (4, 3), d),
                 _errors.bad_channels(5, 3, dialect=d), _errors.not_floating("int32", d),
                 _errors.not_finite("x", 3, 24, dialect=d)):
        assert not _errors.template_problems(str(text)), str(text)
