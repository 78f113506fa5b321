"""The per-call rules every adapter's layer shares (:mod:`localnorm._layer`), on NumPy
and on shapes with sizes unknown until run time (None)."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

import localnorm
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
    # 'single' mode's statistics do not depend on the batch size: checked without it
    (dict(shape=(None, 3, 1), mode="single"), "only 1 value"),
    (dict(shape=(None, 3, 2), mode="single"), None),
    (dict(shape=(None, 3, None), mode="single"), None),
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


def test_convert_options():
    assert _layer.convert_options(None, None, False, None) == (False, 4, "contiguous", None)
    assert _layer.convert_options(2, "strided", False, None) == (False, 2, "strided", None)
    assert _layer.convert_options(None, None, True, 32) == (True, None, "strided", 32)
    assert _layer.convert_options(3, "contiguous", True, None) == (True, 3, "contiguous", None)
    refused = [
        ((None, None, False, 32), "shared"),      # a virtual batch size needs a shared row
        ((None, None, True, None), "virtual_batch_size"),  # ghost: K or a virtual batch
        ((2, None, True, 32), "num_groups"),      # ghost: not both
        ((4, "diagonal", False, None), "partition"),
        ((4, None, "yes", None), "ghost"),
        ((0, None, False, None), "num_groups"),
    ]
    for args, word in refused:
        with pytest.raises(LocalNormError, match=word):
            _layer.convert_options(*args)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_group_moments_feed_running_update(partition):
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(7, 2, 3)).astype(np.float16)  # ragged: 7 samples, K=3
    mean, var, count = _layer.group_moments(xp, x, 2, 3, partition)
    assert mean.dtype == var.dtype == np.float32 and mean.shape == var.shape == (3, 3)
    index = np.asarray(localnorm.group_index(7, 3, partition))
    members = [np.flatnonzero(index == g) for g in range(3)]
    np.testing.assert_array_equal(count[:, 0], [2 * len(m) for m in members])
    for g, rows in enumerate(members):
        values = x[rows].astype(np.float64).transpose(2, 0, 1).reshape(3, -1)
        np.testing.assert_allclose(mean[g], values.mean(1), rtol=1e-5)
        np.testing.assert_allclose(var[g], values.var(1), rtol=1e-4)
    _, _, count = _layer.group_moments(xp, x[:2], 2, 3, partition)
    assert count[:, 0].tolist() == [2, 2, 0]  # a group without samples counts no values


@pytest.mark.parametrize("n, partition", [(8, "contiguous"), (9, "strided"), (3, "contiguous")])
def test_group_counts_are_group_moments_counts(n, partition):
    """group_counts gives the counts group_moments gives with the moments (0 for a group
    without samples), for a forward that computed the moments itself."""
    x = np.random.default_rng(n).normal(size=(n, 3, 2, 5))
    want = _layer.group_moments(xp, x, 1, 4, partition)[2]
    np.testing.assert_array_equal(_layer.group_counts(xp, x, 1, 4, partition), want)
