"""One scale and shift shared by the K groups along the batch axis (Ghost BatchNorm):
gamma/beta of shape (1, C) with ``num_groups=K`` in the core and the reference."""

import numpy as np
import pytest

import localnorm
from localnorm import reference


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n", [8, 11])
def test_shared_row_equals_the_row_copied_into_every_group(partition, n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3, 4)) * 2 + 1
    gamma, beta = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    kw = dict(axis=1, partition=partition)
    y = localnorm.local_norm(x, gamma, beta, num_groups=4, **kw)
    y_copied = localnorm.local_norm(x, np.repeat(gamma, 4, 0), np.repeat(beta, 4, 0), **kw)
    np.testing.assert_allclose(y, y_copied, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.local_norm(x, gamma, beta, num_groups=4, **kw), y,
                               rtol=1e-12, atol=1e-12)
    # The shared row's gradient is the sum of the per-group gradients of the copies.
    dy = rng.normal(size=x.shape)
    dx, dg, db = reference.local_norm_vjp(x, gamma, beta, dy, num_groups=4, **kw)
    dx4, dg4, db4 = reference.local_norm_vjp(x, np.repeat(gamma, 4, 0), np.repeat(beta, 4, 0),
                                             dy, **kw)
    assert dg.shape == db.shape == (1, 3)
    np.testing.assert_allclose(dx, dx4, rtol=1e-12)
    np.testing.assert_allclose(dg, dg4.sum(0, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(db, db4.sum(0, keepdims=True), rtol=1e-12)


def test_core_vjp_of_a_shared_row_sums_over_the_groups():
    import array_api_compat.numpy as xp

    from localnorm import _agnostic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3, 5))
    gamma, beta = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    kw = dict(axis=1, num_groups=4, partition="contiguous")
    _, mean, _, rstd = _agnostic.batch_forward(xp, x, gamma, beta, eps=1e-5, **kw)
    dy = rng.normal(size=x.shape)
    dx, dg, db = _agnostic.batch_vjp(xp, x, gamma, mean, rstd, dy, **kw)
    rdx, rdg, rdb = reference.local_norm_vjp(x, gamma, beta, dy, num_groups=4, axis=1)
    np.testing.assert_allclose(dx, rdx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dg, rdg, rtol=1e-9)
    np.testing.assert_allclose(db, rdb, rtol=1e-9)


@pytest.mark.parametrize("mode", ["single", "set"])
def test_evaluation_modes_use_the_shared_row_for_every_group(mode):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3, 4))
    gamma, beta = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    y = localnorm.local_norm(x, gamma, beta, axis=1, mode=mode, group=0, num_groups=4)
    np.testing.assert_allclose(
        y, reference.local_norm(x, gamma, beta, axis=1, mode=mode, num_groups=4), rtol=1e-12)


@pytest.mark.parametrize("shape, num_groups", [((2, 3), 4), ((3, 3), 4), ((4, 2), None)])
def test_rows_that_are_neither_k_nor_one_are_refused(shape, num_groups):
    x = np.zeros((8, 3, 4)) + np.arange(4)
    with pytest.raises(localnorm.LocalNormError, match="Received"):
        localnorm.local_norm(x, np.ones(shape), np.zeros(shape), axis=1, num_groups=num_groups)


def test_virtual_batch_size_rule_keeps_every_group_at_least_that_large():
    from localnorm import _spec

    ks = [_spec.ghost_groups(n, 4) for n in (1, 3, 4, 7, 8, 11, 12, 13)]
    assert ks == [1, 1, 1, 1, 2, 2, 3, 3]
    for n in range(4, 40):
        sizes = localnorm.group_sizes(n, _spec.ghost_groups(n, 4))
        assert sizes.min() >= 4 and sizes.max() <= 7


def test_tf_keras_virtual_batches_are_the_strided_partition():
    """The tf-keras reference of the migration tests (its reshape to (v, N/v, ...)) is
    LocalNorm with one shared row, K = N / v and partition='strided', not 'contiguous'."""
    from conformance import tfkeras_reference as tfk

    rng = np.random.default_rng(2)
    x, ct = rng.normal(size=(12, 3, 2)), rng.normal(size=(12, 3, 2))
    g, b = rng.normal(size=3), rng.normal(size=3)
    y, _, _, grads = tfk.train_step(x, g, b, np.zeros(3), np.ones(3), virtual_batch_size=4,
                                    momentum=0.9, epsilon=1e-3, axis=1, cotangent=ct)
    kw = dict(axis=1, num_groups=3, eps=1e-3)
    np.testing.assert_allclose(
        y, reference.local_norm(x, g[None], b[None], partition="strided", **kw), atol=1e-12)
    assert np.abs(y - reference.local_norm(x, g[None], b[None], **kw)).max() > 0.1
    want = reference.local_norm_vjp(x, g[None], b[None], ct, partition="strided", **kw)
    for got, ref in zip(grads, want):
        np.testing.assert_allclose(got, ref.reshape(got.shape), atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_checkpoint_messages_say_which_rows_are_shared(shared):
    from localnorm import _errors

    received, expected = ((4, 3), (1, 3)) if shared else ((1, 3), (4, 3))
    text = str(_errors.checkpoint_mismatch("weight", received, expected, shared=shared,
                                           num_groups=4))
    assert "Received" in text and "Fix" in text and "along the batch axis" in text
    assert ("shared_affine=False" if shared else "shared_affine=True") in text
