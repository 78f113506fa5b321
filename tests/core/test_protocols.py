"""run_protocol on a tiny hand-written NumPy "model" (LocalNorm over the batch, then a
fixed linear map) for the four protocols, including the equivalences that make them
cheap: "single" in one pass == N one-image passes; VOTING on a set == "batch" mode on
the set tiled K times == K "set"-mode passes (both partitions)."""

from __future__ import annotations

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, Prediction, vote
from localnorm.protocols import chunks, draw_groups, run_protocol

K, C, S, CLASSES = 3, 2, 5, 4


class TinyModel:
    """x (N, C, S) -> local_norm(axis=1) -> flatten -> @ W: (N, CLASSES) logits."""

    def __init__(self, partition="contiguous", seed=0):
        rng = np.random.default_rng(seed)
        self.gamma = rng.normal(size=(K, C)) + 1.5
        self.beta = rng.normal(size=(K, C))
        self.w = rng.normal(size=(C * S, CLASSES))
        self.partition = partition
        self.calls = []

    def __call__(self, x, mode, group):
        self.calls.append((x.shape[0], mode, group if np.isscalar(group) else np.asarray(group)))
        y = localnorm.local_norm(x, self.gamma, self.beta, axis=1, mode=mode, group=group,
                                 partition=self.partition)
        return y.reshape(x.shape[0], -1) @ self.w


@pytest.fixture
def x():
    return np.random.default_rng(42).normal(size=(12, C, S)) * 2 + 0.5


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_batch_protocol_is_batch_mode(x):
    m = TinyModel()
    p = run_protocol(m, x, protocol="batch", num_groups=K)
    assert isinstance(p, Prediction) and p.agreement is None
    np.testing.assert_allclose(p.scores, m(x, "batch", 0))
    assert p.labels.tolist() == p.scores.argmax(-1).tolist()


def test_batch_protocol_chunks_and_merges_a_short_tail(x):
    m = TinyModel()
    p = run_protocol(m, x[:11], protocol="batch", num_groups=K, batch_size=4)
    # chunks of 4: [0,4), [4,8), [8,11): the last has 3 >= K samples and stays.
    assert [c[0] for c in m.calls] == [4, 4, 3]
    want = np.concatenate([m(x[s:e], "batch", 0) for s, e in [(0, 4), (4, 8), (8, 11)]])
    np.testing.assert_allclose(p.scores, want)
    m.calls.clear()
    run_protocol(m, x[:10], protocol="batch", num_groups=K, batch_size=4)
    assert [c[0] for c in m.calls] == [4, 6]  # a tail of 2 < K is merged


def test_batch_protocol_refuses_a_batch_size_below_k(x):
    """A chunk of fewer than K images cannot fill the K groups: the batch_size is refused,
    not silently raised to K (as it was)."""
    m = TinyModel()
    with pytest.raises(LocalNormError) as info:
        run_protocol(m, x, protocol="batch", num_groups=K, batch_size=K - 1)
    assert f"batch_size={K - 1}" in str(info.value) and f"batch_size >= {K}" in str(info.value)
    assert m.calls == []
    run_protocol(m, x[:2 * K], protocol="batch", num_groups=K, batch_size=K)
    assert [c[0] for c in m.calls] == [K, K]


def test_batch_protocol_needs_k_images(x):
    with pytest.raises(LocalNormError) as info:
        run_protocol(TinyModel(), x[:2], protocol="batch", num_groups=K)
    assert "x.shape[0]=2" in str(info.value) and "3" in str(info.value)


def test_chunks():
    assert chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunks(10, 4, min_size=3) == [(0, 4), (4, 10)]
    assert chunks(3, 10) == [(0, 3)]
    assert chunks(0, 4) == []


@pytest.mark.parametrize("call, needle", [
    (lambda: chunks(5, 0), "size=0"), (lambda: chunks(5, 2.5), "size=2.5"),
    (lambda: chunks(5, None), "size=None"), (lambda: chunks(5, 2, min_size=0), "min_size=0"),
    (lambda: chunks(-1, 2), "n=-1"), (lambda: chunks(5.0, 2), "n=5.0"),
    (lambda: draw_groups(4, 0, seed=0), "num_groups=0"),
    (lambda: draw_groups(-1, 2, seed=0), "n=-1"), (lambda: draw_groups(4, 2.0), "num_groups=2.0"),
])
def test_public_helpers_refuse_bad_sizes(call, needle):
    """chunks and draw_groups name a bad size (before: chunks turned a size below 1 into
    1 silently and returned no chunks for a negative n; draw_groups raised NumPy's
    "high <= 0")."""
    with pytest.raises(LocalNormError, match=needle) as info:
        call()
    assert "Received:" in str(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize("group", [0, 2])
def test_single_one_pass_equals_one_image_passes(x, group):
    m = TinyModel()
    p = run_protocol(m, x, protocol="single", num_groups=K, group=group)
    one_by_one = np.concatenate([m(x[i : i + 1], "single", group) for i in range(len(x))])
    np.testing.assert_allclose(p.scores, one_by_one, atol=1e-12)
    assert p.agreement is None


def test_single_with_per_image_groups(x):
    m = TinyModel()
    groups = draw_groups(len(x), K, seed=7)
    p = run_protocol(m, x, protocol="single", num_groups=K, group=groups, batch_size=5)
    one_by_one = np.concatenate(
        [m(x[i : i + 1], "single", int(groups[i])) for i in range(len(x))])
    np.testing.assert_allclose(p.scores, one_by_one, atol=1e-12)


def test_single_needs_a_group(x):
    with pytest.raises(LocalNormError, match="group=None"):
        run_protocol(TinyModel(), x, protocol="single", num_groups=K, group=None)


def test_draw_groups_seedable():
    a, b = draw_groups(100, K, seed=3), draw_groups(100, K, seed=3)
    assert np.array_equal(a, b) and a.dtype == np.int64
    assert set(np.unique(a)) == set(range(K))
    assert not np.array_equal(a, draw_groups(100, K, seed=4))
    rng = np.random.default_rng(5)
    assert np.array_equal(draw_groups(10, K, rng), draw_groups(10, K, np.random.default_rng(5)))


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_single_voting_votes_over_all_groups(x, method):
    m = TinyModel()
    p = run_protocol(m, x, protocol="single-voting", num_groups=K, vote=method)
    per_group = np.stack([m(x, "single", k) for k in range(K)])
    want = vote(per_group, method, from_logits=True)
    np.testing.assert_allclose(p.scores, want.scores, atol=1e-12)
    assert p.labels.tolist() == want.labels.tolist()
    np.testing.assert_allclose(p.agreement, want.agreement)


def test_single_voting_passes(x):
    """A pass holds ceil(batch_size / K) images tiled K times, and never fewer than one
    image; batch_size defaults to len(x), so no pass holds more rows than x (but K rows
    where x has fewer than K images). An explicit batch_size of K*N is one pass."""
    m = TinyModel()
    run_protocol(m, x[:2], protocol="single-voting", num_groups=K)  # N < K
    assert [c[0] for c in m.calls] == [K, K]
    m.calls.clear()
    run_protocol(m, x, protocol="single-voting", num_groups=K)  # 12 images, 3 per pass
    assert [c[0] for c in m.calls] == [12] * K
    m.calls.clear()
    run_protocol(m, x, protocol="single-voting", num_groups=K, batch_size=12 * K)
    assert [c[0] for c in m.calls] == [12 * K]
    m.calls.clear()
    run_protocol(m, x, protocol="single-voting", num_groups=K, batch_size=7)  # 3 images
    assert [c[0] for c in m.calls] == [3 * K] * 4
    m.calls.clear()
    run_protocol(m, x, protocol="single-voting", num_groups=K, batch_size=2)  # < K
    assert [c[0] for c in m.calls] == [K] * 12


@pytest.mark.parametrize("protocol", ["batch", "single", "single-voting", "voting"])
@pytest.mark.parametrize("name, value", [("batch_size", 0), ("batch_size", -4),
                                         ("batch_size", 2.5), ("batch_size", True),
                                         ("set_size", 0), ("set_size", "4")])
def test_sizes_must_be_positive_ints(x, protocol, name, value):
    with pytest.raises(LocalNormError) as info:
        run_protocol(TinyModel(), x, protocol=protocol, num_groups=K, group=0,
                     **{name: value})
    assert f"{name}={value!r}" in str(info.value) and "Fix" in str(info.value)


@pytest.mark.parametrize("seed", ["abc", True, -1, 1.5, [1, 2]])
def test_draw_groups_refuses_what_is_not_a_seed(seed):
    with pytest.raises(LocalNormError) as info:
        draw_groups(5, K, seed)
    assert "generator" in str(info.value) and "Fix" in str(info.value)
    # the value itself, not only its type: a negative int is an int, but not a seed
    assert f"generator={seed!r}" in str(info.value)


def test_draw_groups_takes_seed_sequences_and_numpy_ints():
    a = draw_groups(20, K, np.random.SeedSequence(3))
    assert np.array_equal(a, draw_groups(20, K, np.random.default_rng(np.random.SeedSequence(3))))
    assert np.array_equal(draw_groups(20, K, np.int64(3)), draw_groups(20, K, 3))


def test_single_voting_batch_size_only_changes_memory(x):
    m = TinyModel()
    a = run_protocol(m, x, protocol="single-voting", num_groups=K, vote="soft")
    b = run_protocol(m, x, protocol="single-voting", num_groups=K, vote="soft", batch_size=7)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-12)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("method", ["hard", "soft"])
def test_voting_equals_k_set_passes_and_tiled_batch(x, partition, method):
    """VOTING on sets of 4 == K "set"-mode passes per set == "batch" mode on each set
    tiled K times (laid out for the partition)."""
    m = TinyModel(partition)
    set_size = 4
    p = run_protocol(m, x, protocol="voting", num_groups=K, vote=method, set_size=set_size,
                     partition=partition)
    sets = [x[s : s + set_size] for s in range(0, len(x), set_size)]
    per_group = np.concatenate(
        [np.stack([m(xs, "set", k) for k in range(K)]) for xs in sets], axis=1)
    want = vote(per_group, method, from_logits=True)
    np.testing.assert_allclose(p.scores, want.scores, atol=1e-12)
    assert p.labels.tolist() == want.labels.tolist()
    np.testing.assert_allclose(p.agreement, want.agreement)
    # The tiled batch: group k of the tiled set is exactly the set.
    for xs in sets:
        tiled = np.concatenate([xs] * K) if partition == "contiguous" else np.repeat(xs, K, 0)
        out = m(tiled, "batch", 0)
        gi = localnorm.group_index(len(tiled), K, partition)
        for k in range(K):
            np.testing.assert_allclose(out[gi == k], m(xs, "set", k), atol=1e-12)


def test_voting_strided_layout(x):
    """With the strided partition the set is tiled sample-major (np.repeat), so sample
    n's K copies land in groups 0..K-1."""
    m = TinyModel("strided")
    run_protocol(m, x[:4], protocol="voting", num_groups=K, set_size=4, partition="strided")
    (n, mode, _), = m.calls
    assert n == 4 * K and mode == "batch"
    gi = localnorm.group_index(4 * K, K, "strided")
    assert gi.reshape(4, K).tolist() == [list(range(K))] * 4


def test_voting_default_set_size_and_ragged_tail(x):
    m = TinyModel()
    p = run_protocol(m, x[:10], protocol="voting", num_groups=K)
    # default set size 10 // 3 = 3: sets [0,3), [3,6), [6,9) and a tail of 1 merged.
    assert [c[0] // K for c in m.calls] == [3, 3, 4]
    assert p.scores.shape == (10, CLASSES) and p.agreement.shape == (10,)


def test_protocol_choices(x):
    with pytest.raises(LocalNormError, match="protocol='vote'"):
        run_protocol(TinyModel(), x, protocol="vote", num_groups=K)
    with pytest.raises(LocalNormError, match="vote='majority'"):
        run_protocol(TinyModel(), x, protocol="voting", num_groups=K, vote="majority")
    with pytest.raises(LocalNormError, match="num_groups=0"):
        run_protocol(TinyModel(), x, protocol="batch", num_groups=0)
    with pytest.raises(LocalNormError, match="x.shape\\[0\\]=0"):
        run_protocol(TinyModel(), x[:0], protocol="single", num_groups=K, group=0)


def test_soft_voting_probabilities_from_logits(x):
    m = TinyModel()
    p = run_protocol(m, x, protocol="single-voting", num_groups=K, vote="soft")
    np.testing.assert_allclose(p.scores.sum(-1), 1.0)
    per_group = np.stack([_softmax(m(x, "single", k)) for k in range(K)])
    np.testing.assert_allclose(p.scores, per_group.mean(0), atol=1e-12)


def test_protocols_on_torch_arrays():
    torch = pytest.importorskip("torch")
    xn = np.random.default_rng(0).normal(size=(6, C, S))
    m = TinyModel()
    mt = TinyModel()
    mt.gamma, mt.beta, mt.w = (torch.from_numpy(a) for a in (m.gamma, m.beta, m.w))
    for protocol, kw in [("batch", {}), ("single", {"group": 1}), ("single-voting", {}),
                         ("voting", {"set_size": 2})]:
        a = run_protocol(m, xn, protocol=protocol, num_groups=K, **kw)
        b = run_protocol(mt, torch.from_numpy(xn), protocol=protocol, num_groups=K, **kw)
        assert isinstance(b.scores, torch.Tensor)
        np.testing.assert_allclose(b.scores.numpy(), a.scores, atol=1e-12)


@pytest.mark.parametrize("protocol", ["batch", "single", "single-voting", "voting"])
@pytest.mark.parametrize("output", ["feature maps", "one row short", "flat"])
def test_a_forward_that_is_not_a_classifier_is_refused(x, protocol, output):
    """The protocols take class scores of shape (rows, classes); a model returning feature
    maps, a row count other than its input's, or one value per image is refused with the
    shape it returned (not a reshape error inside a vote, nor labels from an argmax over a
    spatial axis)."""
    net = TinyModel()

    def forward(xs, mode, group):
        y = net(xs, mode, group)
        return {"feature maps": y[:, :, None], "one row short": y[1:], "flat": y[:, 0]}[output]

    with pytest.raises(LocalNormError, match="Received:.*shape"):
        run_protocol(forward, x, protocol=protocol, num_groups=K, group=0)
