"""The per-call rules every adapter's layer shares (:mod:`localnorm._layer`), on NumPy
and on shapes with sizes unknown until run time (None)."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

from localnorm import LocalNormError, _errors, _layer

CHECK = dict(floating=True, dtype="float32", rank_ok=True, rank=">= 2", axis=1,
             num_features=3, mode="batch", num_groups=2, where="Layer",
             dialect=_errors.CORE)


@pytest.mark.parametrize("batch, mode, k, vbs, expected", [
    (8, "batch", 4, None, 4), (8, "single", 4, None, 4),
    (8, "batch", None, 4, 2), (9, "batch", None, 4, 2), (3, "batch", None, 4, 1),
    (8, "set", None, 4, 1), (None, "batch", None, 4, None),
])
def test_call_groups(batch, mode, k, vbs, expected):
    assert _layer.call_groups(batch, mode, k, vbs) == expected


@pytest.mark.parametrize("change, message", [
    (dict(floating=False, dtype="int32"), "non-floating"),
    (dict(rank_ok=False), "expected input of rank"),
    (dict(num_features=4), "channels"),
    (dict(shape=(0, 3)), "empty batch"),
    (dict(shape=(1, 3, 4)), "at least 2 samples"),
    (dict(shape=(None, 3, 4), num_groups=9), None),
    (dict(shape=(1, 3, None)), "at least 2 samples"),
    (dict(shape=(2, 3, 1)), "only 1 value"),
    (dict(shape=(4, 3, 2), mode="single", group=np.zeros(3, np.int64)), "one entry per"),
    (dict(shape=(1, 3, 1), mode="running"), None),
    (dict(shape=(0, 3, 1), mode="running"), "empty batch"),
])
def test_check_call(change, message):
    kw = {**CHECK, "shape": (4, 3, 2), **change}
    shape = kw.pop("shape")
    if message is None:
        _layer.check_call(shape, **kw)
    else:
        with pytest.raises((LocalNormError, TypeError), match=message):
            _layer.check_call(shape, **kw)


def test_eval_setting():
    assert _layer.eval_setting("set", 1, 2, running=False) == ("set", 1)
    mode, group = _layer.eval_setting("single", [0, 1], 2, running=False)
    assert mode == "single" and group.dtype == np.int64 and group.tolist() == [0, 1]
    assert _layer.eval_setting("single", None, 2, running=False, allow_none=True)[1] is None
    assert _layer.eval_setting("running", 0, None, running=True) == ("running", 0)
    with pytest.raises(LocalNormError, match="does not track"):
        _layer.eval_setting("running", 0, 2, running=False)
    with pytest.raises(LocalNormError, match="GhostBatchNorm"):
        _layer.eval_setting("running", 0, 2, running=False, ghost_only="Layer")
    for mode, group in (("vote", 0), ("set", 2), ("set", [0, 1]), ("single", None)):
        with pytest.raises(LocalNormError):
            _layer.eval_setting(mode, group, 2, running=False)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_count_non_finite():
    x = np.ones((3, 4), np.float16)
    assert _layer.count_non_finite(xp, x) == 0
    assert _layer.count_non_finite(xp, np.arange(4)) == 0
    x[0, 1], x[2, 2] = np.nan, -np.inf
    assert _layer.count_non_finite(xp, x) == 2
    # finite values whose float32 sum overflows are counted one by one, and are clean
    big = np.full((4,), 3e38, np.float32)
    assert _layer.count_non_finite(xp, big) == 0
    with pytest.raises(LocalNormError, match="2 non-finite of 12"):
        _layer.refuse_non_finite(xp, x, _errors.CORE)


def test_running_update_per_group_and_shared():
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=(3, 5)), rng.uniform(1, 2, size=(3, 5))
    count = np.array([[4.0], [4.0], [1.0]])  # the last group holds one value: skipped
    rm, rv = np.zeros((3, 5), np.float32), np.ones((3, 5), np.float32)
    new_m, new_v = _layer.running_update(xp, rm, rv, mean, var, count, 0.1, unbiased=True)
    assert new_m.dtype == np.float32 and new_m.shape == (3, 5)
    np.testing.assert_allclose(new_m[:2], 0.1 * mean[:2], rtol=1e-6)
    np.testing.assert_allclose(new_v[:2], 0.9 + 0.1 * var[:2] * 4 / 3, rtol=1e-6)
    np.testing.assert_array_equal(new_m[2], 0.0)
    np.testing.assert_array_equal(new_v[2], 1.0)
    # one shared row: the mean over the groups of their updates (biased variance here)
    shared_m, shared_v = _layer.running_update(
        xp, np.zeros((1, 5)), np.ones((1, 5)), mean[:2], var[:2], count[:2], 0.01,
        unbiased=False)
    np.testing.assert_allclose(shared_m, 0.01 * mean[:2].mean(0, keepdims=True))
    np.testing.assert_allclose(shared_v, 1 + 0.01 * (var[:2].mean(0, keepdims=True) - 1))


def test_conversion_options():
    options = dict(num_groups=None, partition=None, ghost=False, virtual_batch_size=None)
    assert _layer.conversion_options(**options) == (False, 4, "contiguous", None)
    ghost = {**options, "ghost": True}
    assert _layer.conversion_options(**{**ghost, "virtual_batch_size": 8}) == (
        True, None, "strided", 8)
    assert _layer.conversion_options(**{**ghost, "num_groups": 2, "partition": "contiguous"}) \
        == (True, 2, "contiguous", None)
    for change, meaning in ((dict(ghost="yes"), "ghost"),
                            (dict(virtual_batch_size=8), "shared"),
                            (dict(ghost=True), "virtual_batch_size"),
                            (dict(ghost=True, num_groups=2, virtual_batch_size=8), "not both"),
                            (dict(num_groups=0), "num_groups"),
                            (dict(partition="random"), "partition")):
        with pytest.raises(LocalNormError, match=meaning):
            _layer.conversion_options(**{**options, **change})
