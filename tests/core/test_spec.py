"""The spec's rules on groups along the batch axis: sizes, membership under both
partitions, ragged batches, and the small validators adapters share."""

from __future__ import annotations

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, _spec, group_index, group_sizes, reference


@pytest.mark.parametrize(
    "n, k, sizes",
    [(8, 4, [2, 2, 2, 2]), (10, 4, [3, 3, 2, 2]), (4, 4, [1, 1, 1, 1]), (5, 1, [5]),
     (7, 3, [3, 2, 2]), (6, 4, [2, 2, 1, 1])],
)
def test_group_sizes(n, k, sizes):
    got = group_sizes(n, k)
    assert got.tolist() == sizes
    assert got.sum() == n and got.dtype == np.int64
    assert got.tolist() == [len(a) for a in np.array_split(np.arange(n), k)]


def test_group_index_contiguous_is_the_papers():
    # N = K * m: sample n is in group n // m.
    assert group_index(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert group_index(12, 3, "contiguous").tolist() == [i // 4 for i in range(12)]


def test_group_index_ragged_contiguous():
    # 10 samples, 4 groups: sizes 3, 3, 2, 2, runs in order.
    assert group_index(10, 4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]


def test_group_index_strided():
    assert group_index(10, 4, "strided").tolist() == [n % 4 for n in range(10)]
    # Strided sizes equal group_sizes too (the first r groups get one more).
    assert np.bincount(group_index(10, 4, "strided")).tolist() == group_sizes(10, 4).tolist()


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n, k", [(1, 1), (4, 4), (9, 4), (13, 5), (64, 4)])
def test_group_index_covers_every_group(partition, n, k):
    gi = group_index(n, k, partition)
    assert gi.shape == (n,) and gi.dtype == np.int64
    assert np.bincount(gi, minlength=k).tolist() == group_sizes(n, k).tolist()


def test_group_index_unknown_partition():
    with pytest.raises(LocalNormError, match="partition='blocks'"):
        group_index(8, 2, "blocks")


@pytest.mark.parametrize("k", [0, -1, 1.5, "4", True, None])
def test_check_num_groups(k):
    with pytest.raises(LocalNormError) as info:
        _spec.check_num_groups(k)
    assert f"num_groups={k!r}" in str(info.value) and "batch axis" in str(info.value)


def test_check_num_groups_accepts_numpy_ints():
    assert _spec.check_num_groups(np.int64(3)) == 3


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n", [9, 10, 11])
def test_ragged_batch_groups_use_their_own_statistics(partition, n):
    """A ragged last batch works: each group (sizes from group_sizes) is normalized with
    its own statistics and its own gamma_k/beta_k."""
    k, c = 4, 3
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, c, 5)) * 3 + 1
    gamma, beta = rng.normal(size=(k, c)), rng.normal(size=(k, c))
    y = localnorm.local_norm(x, gamma, beta, axis=1, partition=partition)
    gi = group_index(n, k, partition)
    for g in range(k):
        xs = x[gi == g]
        mean = xs.mean(axis=(0, 2), keepdims=True)
        var = xs.var(axis=(0, 2), keepdims=True)
        want = (xs - mean) / np.sqrt(var + 1e-5) * gamma[g][None, :, None] + beta[g][None, :, None]
        np.testing.assert_allclose(y[gi == g], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        y, reference.local_norm(x, gamma, beta, axis=1, partition=partition), atol=1e-12)


def test_partitions_agree_when_k_is_one():
    x = np.random.default_rng(0).normal(size=(7, 2, 3))
    g, b = np.full((1, 2), 2.0), np.full((1, 2), 0.5)
    np.testing.assert_allclose(
        localnorm.local_norm(x, g, b, axis=1, partition="strided"),
        localnorm.local_norm(x, g, b, axis=1, partition="contiguous"), atol=1e-14)


def test_strided_equals_contiguous_on_the_permuted_batch():
    """strided on x == contiguous on x reordered so each group's samples are adjacent."""
    n, k = 12, 3
    x = np.random.default_rng(1).normal(size=(n, 4, 2))
    g, b = np.random.default_rng(2).normal(size=(2, k, 4))
    order = np.argsort(group_index(n, k, "strided"), kind="stable")
    ys = localnorm.local_norm(x, g, b, axis=1, partition="strided")
    yc = localnorm.local_norm(x[order], g, b, axis=1, partition="contiguous")
    np.testing.assert_allclose(ys[order], yc, atol=1e-13)


def test_statistics_sets_of_the_reference():
    sets = reference.statistics_sets(5, 2, mode="batch")
    assert [s.tolist() for s, _ in sets] == [[0, 1, 2], [3, 4]]
    assert [r.tolist() for _, r in sets] == [[0, 0, 0], [1, 1]]
    single = reference.statistics_sets(3, 2, mode="single", group=np.array([1, 0, 1]))
    assert [(s.tolist(), r.tolist()) for s, r in single] == [([0], [1]), ([1], [0]), ([2], [1])]
    (samples, rows), = reference.statistics_sets(3, 4, mode="set", group=2)
    assert samples.tolist() == [0, 1, 2] and rows.tolist() == [2, 2, 2]


def test_defaults():
    assert localnorm.DEFAULT_EPS == 1e-5
    assert localnorm.MODES == ("batch", "single", "set")
    assert localnorm.PARTITIONS == ("contiguous", "strided")
    assert localnorm.PROTOCOLS == ("batch", "single", "single-voting", "voting")


def test_default_axis_is_last():
    x = np.random.default_rng(0).normal(size=(4, 5, 3))
    g, b = np.ones((2, 3)), np.zeros((2, 3))
    np.testing.assert_array_equal(localnorm.local_norm(x, g, b),
                                  localnorm.local_norm(x, g, b, axis=2))
    np.testing.assert_array_equal(localnorm.local_norm(x, g, b),
                                  localnorm.local_norm(x, g, b, axis=-1))


def test_group_ignored_in_batch_mode():
    x = np.random.default_rng(0).normal(size=(4, 3))
    g, b = np.random.default_rng(1).normal(size=(2, 2, 3))
    np.testing.assert_array_equal(localnorm.local_norm(x, g, b, group=0),
                                  localnorm.local_norm(x, g, b, group=1))


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n, k", [(4, 4), (5, 4), (7, 4), (8, 4), (9, 4), (10, 3), (13, 5),
                                  (11, 1), (1025, 4)])
def test_group_blocks_hold_the_groups_in_order(partition, n, k):
    """The reshaped views the array-API path reduces (no matmul, no per-group loop):
    one block for an even batch, two for a ragged one, together exactly the groups of
    group_index, in order."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    x = np.repeat(np.arange(n, dtype=np.float64)[:, None], 2, axis=1)  # value = sample index
    blocks = _agnostic.group_blocks(xp, x, k, partition)
    assert len(blocks) == (1 if n % k == 0 else 2)
    members = []
    for block, member_axis in blocks:
        ids = np.moveaxis(np.asarray(block)[..., 0], member_axis, 1)  # (groups, members)
        members += [row.astype(int).tolist() for row in ids]
    gi = group_index(n, k, partition)
    assert members == [np.flatnonzero(gi == g).tolist() for g in range(k)]


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_group_moments_of_a_ragged_batch(partition):
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(3)
    x = rng.normal(size=(11, 3, 4)) * 2 + 7
    groups = _agnostic.Groups(xp, x, 1, 4, partition, xp.float64)
    mean, var = _agnostic.group_moments(xp, x, groups)
    gi = group_index(11, 4, partition)
    assert mean.shape == var.shape == (4, 3)
    for g in range(4):
        np.testing.assert_allclose(mean[g], x[gi == g].mean(axis=(0, 2)), rtol=1e-14)
        np.testing.assert_allclose(var[g], x[gi == g].var(axis=(0, 2)), rtol=1e-13)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_groups_without_samples_are_finite_and_get_zero_gradient(partition, n):
    """The spec's rule for a batch smaller than K where a compiled program cannot raise:
    a group with no samples has statistics 0, reaches no output, and its gamma_k/beta_k
    get a zero gradient; the other groups are normalized as usual."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    k, c = 4, 3
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, c, 5)) * 3 + 1
    gamma, beta = rng.normal(size=(k, c)), rng.normal(size=(k, c))
    kw = dict(axis=1, num_groups=k, partition=partition)
    y, mean, var, rstd = _agnostic.batch_forward(xp, x, gamma, beta, eps=1e-5, **kw)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(rstd))
    gi = group_index(n, k, partition)
    for i in range(n):  # each sample is alone in its group: normalized over its values
        g = gi[i]
        ref = (x[i] - x[i].mean(axis=1, keepdims=True)) / np.sqrt(
            x[i].var(axis=1, keepdims=True) + 1e-5) * gamma[g][:, None] + beta[g][:, None]
        np.testing.assert_allclose(y[i], ref, rtol=1e-10, atol=1e-12)
    dy = rng.normal(size=x.shape)
    dx, dgamma, dbeta = _agnostic.batch_vjp(xp, x, gamma, mean, rstd, dy, **kw)
    empty = np.setdiff1d(np.arange(k), gi)
    assert np.all(np.isfinite(dx)) and np.all(dgamma[empty] == 0) and np.all(dbeta[empty] == 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fusing_moments_are_the_same_values(dtype):
    """``fusing=True`` (a third expression for the correction's deviations, for XLA) is
    the same algorithm: bit for bit the default's moments where nothing fuses (NumPy),
    in each mode."""
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(10, 3, 4, 5)) * 1e-2 + 300).astype(dtype)
    gamma, beta = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    for g, w in zip(_agnostic.sample_moments(xp, x, 3, fusing=True),
                    _agnostic.sample_moments(xp, x, 3)):
        np.testing.assert_array_equal(g, w)
    kw = dict(axis=3, num_groups=4, partition="strided", eps=1e-5)
    for a, b in zip(_agnostic.batch_forward(xp, x, gamma, beta, fusing=True, **kw),
                    _agnostic.batch_forward(xp, x, gamma, beta, **kw)):
        np.testing.assert_array_equal(a, b)
    for mode in ("single", "set"):
        np.testing.assert_array_equal(
            _agnostic.eval_forward(xp, x, gamma, beta, axis=3, mode=mode, group=1, eps=1e-5,
                                   fusing=True),
            _agnostic.eval_forward(xp, x, gamma, beta, axis=3, mode=mode, group=1, eps=1e-5))


def test_layer_group_is_one_rule_for_every_adapter():
    """``_spec.layer_group``: what the adapters' ``set_mode``/``set_eval_mode`` accept as a
    group along the batch axis, and what they refuse, with the same messages."""
    import numpy as np
    import pytest

    from localnorm import LocalNormError, _spec

    assert _spec.layer_group(2, 4, "set") == 2
    assert _spec.layer_group(np.array(3), 4, "set") == 3
    assert _spec.layer_group(None, 4, "single", allow_none=True) is None
    per_sample = _spec.layer_group([0, 3, 1], 4, "single")
    assert per_sample.dtype == np.int64 and per_sample.tolist() == [0, 3, 1]
    assert _spec.layer_group(np.array([2, 2], np.int32), 4, "single").tolist() == [2, 2]
    refused = [(None, "set", "group"), (4, "set", "group"), (True, "set", "group"),
               (1.0, "set", "group"), (np.array(1.5), "set", "group"),
               ([0, 4], "single", "group"), ([0.0, 1.0], "single", "group"),
               (np.array([True, False]), "single", "group"), ([0, 1], "set", "'single'"),
               (np.zeros((2, 1), int), "single", "1-D")]
    for group, mode, said in refused:
        with pytest.raises(LocalNormError, match=said):
            _spec.layer_group(group, 4, mode)
    with pytest.raises(LocalNormError, match="group=None"):
        _spec.layer_group(7, 4, "single", allow_none=True)
