"""Ghost BatchNorm for PyTorch: the GhostBatchNorm1d/2d/3d presets, shared_affine, groups
from a virtual batch size, the one (1, C) set of running statistics, checkpoints,
convert_batchnorm(ghost=True), and migration from tf-keras's virtual_batch_size and the
usual PyTorch snippets (cifar10-fast's strided view, TabNet's chunk loop)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import localnorm.torch as lt  # noqa: E402
from conformance import tfkeras_reference as tfk  # noqa: E402
from localnorm import LocalNormError, reference  # noqa: E402


def _t(a):
    return torch.from_numpy(np.asarray(a, np.float64))


def test_presets_are_the_layers_with_one_shared_row():
    for cls, base, shape in ((lt.GhostBatchNorm1d, lt.LocalNorm1d, (8, 3)),
                             (lt.GhostBatchNorm2d, lt.LocalNorm2d, (8, 3, 2, 2)),
                             (lt.GhostBatchNorm3d, lt.LocalNorm3d, (8, 3, 2, 2, 2))):
        layer = cls(3, virtual_batch_size=4)
        assert isinstance(layer, base)
        assert layer.shared_affine and layer.num_groups is None
        assert layer.weight.shape == layer.running_mean.shape == (1, 3)
        assert layer.mode == "running" and layer.partition == "strided"
        assert layer(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("n", [3, 8, 11, 16])
def test_training_counts_the_groups_per_batch(n):
    """K = max(1, N // virtual_batch_size): any batch size trains, and the output is the
    reference's with that K and one shared row."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3, 2)) * 3 + 1
    layer = lt.GhostBatchNorm1d(3, virtual_batch_size=4, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(rng.normal(size=(1, 3))))
        layer.bias.copy_(_t(rng.normal(size=(1, 3))))
    y = layer(_t(x)).detach().numpy()
    k = max(1, n // 4)
    want = reference.local_norm(x, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                axis=1, num_groups=k, partition="strided")
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)


def test_inference_takes_any_batch_size_with_the_running_statistics():
    layer = lt.GhostBatchNorm1d(3, virtual_batch_size=4, dtype=torch.float64)
    with torch.no_grad():
        layer.running_mean.copy_(_t([[1.0, 2.0, 3.0]]))
        layer.running_var.copy_(_t([[4.0, 1.0, 0.25]]))
    layer.eval()
    x = torch.tensor([[1.0, 2.0, 3.5]], dtype=torch.float64)  # one sample, one value
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), [[0.0, 0.0, 0.5 / math.sqrt(0.25 + 1e-5)]])


def test_migration_from_tf_keras_virtual_batch_size():
    """Three training steps (SGD on gamma/beta) of GhostBatchNorm2d against tf-keras's
    algorithm (conformance/tfkeras_reference.py): the same outputs and gradients;
    the running mean is tf-keras's moving mean (momentum 0.1 here is Keras's 0.9), the
    running variance the same average of the virtual batches' variances with PyTorch's
    unbiased estimator (m / (m - 1)); inference then agrees on a batch of 5."""
    rng = np.random.default_rng(0)
    v, c, lr = 4, 3, 0.5
    layer = lt.GhostBatchNorm2d(c, virtual_batch_size=v, dtype=torch.float64)
    gamma, beta = np.ones(c), np.zeros(c)
    mm, mv = np.zeros(c), np.ones(c)
    for step in range(3):
        x = rng.normal(size=(8, c, 3, 3)) * 2 + step
        ct = rng.normal(size=x.shape)
        y_ref, mm, _, (dx_ref, dg_ref, db_ref) = tfk.train_step(
            x, gamma, beta, mm, mv, virtual_batch_size=v, momentum=0.9, epsilon=1e-5,
            axis=1, cotangent=ct)
        _, _, new_var, _ = tfk.train_step(x, gamma, beta, mm, np.zeros(c),
                                          virtual_batch_size=v, momentum=0.0, epsilon=1e-5,
                                          axis=1)
        m = v * 9
        mv = 0.9 * mv + 0.1 * new_var * m / (m - 1)
        xt = _t(x).requires_grad_(True)
        y = layer(xt)
        dx, dg, db = torch.autograd.grad(y, (xt, layer.weight, layer.bias), _t(ct))
        np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(dx.numpy(), dx_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(dg.numpy()[0], dg_ref, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(db.numpy()[0], db_ref, rtol=1e-9, atol=1e-10)
        with torch.no_grad():
            layer.weight -= lr * dg
            layer.bias -= lr * db
        gamma, beta = gamma - lr * dg_ref, beta - lr * db_ref
    np.testing.assert_allclose(layer.running_mean.numpy()[0], mm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy()[0], mv, rtol=1e-10)
    layer.eval()
    x = rng.normal(size=(5, c, 3, 3))
    np.testing.assert_allclose(
        layer(_t(x)).detach().numpy(),
        tfk.infer(x, gamma, beta, mm, mv, epsilon=1e-5, axis=1), rtol=1e-9, atol=1e-10)


class _Cifar10FastGhostBatchNorm(nn.BatchNorm2d):
    """cifar10-fast's GhostBatchNorm (the usual strided-view snippet), for comparison."""

    def __init__(self, num_features, num_splits, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits
        self.register_buffer("running_mean", torch.zeros(num_features * num_splits))
        self.register_buffer("running_var", torch.ones(num_features * num_splits))

    def forward(self, input):
        n, c, h, w = input.shape
        return F.batch_norm(
            input.view(-1, c * self.num_splits, h, w), self.running_mean, self.running_var,
            self.weight.repeat(self.num_splits), self.bias.repeat(self.num_splits),
            True, self.momentum, self.eps).view(n, c, h, w)


def test_cifar10_fast_snippet_is_the_strided_preset_with_num_groups():
    torch.manual_seed(0)
    theirs = _Cifar10FastGhostBatchNorm(3, num_splits=4)
    ours = lt.GhostBatchNorm2d(3, num_groups=4)
    with torch.no_grad():
        for p in (theirs.weight, theirs.bias):
            p.normal_()
        ours.weight.copy_(theirs.weight[None])
        ours.bias.copy_(theirs.bias[None])
    x = torch.randn(16, 3, 4, 4) * 2 + 1
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    # their eval-time rule: the mean over the splits of the per-split running statistics
    torch.testing.assert_close(ours.running_mean[0], theirs.running_mean.view(4, 3).mean(0))
    torch.testing.assert_close(ours.running_var[0], theirs.running_var.view(4, 3).mean(0))


def _tabnet_gbn(bn: nn.BatchNorm1d, x: torch.Tensor, vbs: int) -> torch.Tensor:
    """TabNet's GBN forward: a Python loop over chunks of the batch."""
    chunks = x.chunk(int(np.ceil(x.shape[0] / vbs)), 0)
    return torch.cat([bn(x_) for x_ in chunks], dim=0)


def test_tabnet_snippet_is_the_contiguous_preset_and_its_one_sample_chunk_trains():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(5)
    ours = lt.GhostBatchNorm1d(5, virtual_batch_size=4, partition="contiguous")
    x = torch.randn(32, 5)
    torch.testing.assert_close(ours(x), _tabnet_gbn(bn, x, 4), rtol=1e-5, atol=1e-5)
    x = torch.randn(13, 5)  # TabNet: chunks of 4, 4, 4, 1; BatchNorm refuses the last
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        _tabnet_gbn(bn, x, 4)
    assert torch.isfinite(ours(x)).all()  # 3 groups of 5, 4, 4 samples


def test_state_dict_round_trip_and_batchnorm_vectors_load():
    torch.manual_seed(0)
    layer = lt.GhostBatchNorm2d(3, virtual_batch_size=2)
    layer(torch.randn(8, 3, 2, 2))
    other = lt.GhostBatchNorm2d(3, virtual_batch_size=2)
    other.load_state_dict(layer.state_dict())
    layer.eval(), other.eval()
    x = torch.randn(3, 3, 2, 2)
    torch.testing.assert_close(other(x), layer(x))
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    other.load_state_dict(bn.state_dict())  # (C,) vectors are the shared row
    torch.testing.assert_close(other.running_mean, torch.full((1, 3), 0.5))


def test_checkpoint_rows_that_disagree_say_shared_or_per_group():
    ghost = lt.GhostBatchNorm2d(3, num_groups=2)
    per_group = lt.LocalNorm2d(3, num_groups=2, track_running_stats=True)
    with pytest.raises(LocalNormError, match="shared_affine=True") as err:
        ghost.load_state_dict(per_group.state_dict())
    assert "(2, 3)" in str(err.value) and "Received" in str(err.value)
    with pytest.raises(LocalNormError, match="shared") as err:
        per_group.load_state_dict(ghost.state_dict())
    assert "(1, 3)" in str(err.value) and "Fix" in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    ({}, "virtual_batch_size"),
    ({"virtual_batch_size": 4, "num_groups": 2}, "not both"),
    ({"virtual_batch_size": 0}, "positive int"),
])
def test_bad_group_options_are_refused(kwargs, words):
    with pytest.raises(LocalNormError, match=words):
        lt.GhostBatchNorm2d(3, **kwargs)


def test_a_virtual_batch_size_needs_the_shared_row():
    with pytest.raises(LocalNormError, match="shared_affine=True"):
        lt.LocalNorm2d(3, num_groups=None, virtual_batch_size=4)


def test_convert_batchnorm_into_ghost_presets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4))
    model(torch.randn(16, 3, 2, 2))  # running statistics
    model.eval()
    x = torch.randn(5, 3, 2, 2)
    before = model(x)
    lt.convert_batchnorm(model, ghost=True, virtual_batch_size=4)
    assert isinstance(model[1], lt.GhostBatchNorm2d) and isinstance(model[5], lt.GhostBatchNorm1d)
    assert model[1].partition == "strided" and not model[1].training
    torch.testing.assert_close(model(x), before)  # evaluation: the running statistics
    model.train()
    assert model(torch.randn(12, 3, 2, 2)).shape == (12, 4)
    with pytest.raises(LocalNormError, match="shared_affine"):
        lt.convert_batchnorm(nn.BatchNorm1d(3), virtual_batch_size=4)


def test_predict_protocols_run_on_presets_with_a_virtual_batch_size():
    """predict's protocols see one shared row (K counted per batch has no fixed value)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), lt.GhostBatchNorm1d(4, virtual_batch_size=4),
                          nn.Linear(4, 3))
    model(torch.randn(16, 4))
    for protocol in ("batch", "voting"):
        assert lt.predict(model, torch.randn(8, 4), protocol=protocol).labels.shape == (8,)


def test_running_mode_keeps_a_nan_in_its_own_sample():
    """Stored statistics: a NaN reaches only its own sample (as BatchNorm), so "running"
    evaluation does not scan the input; the other samples are unaffected."""
    layer = lt.GhostBatchNorm1d(3, num_groups=2).eval()
    y = layer(torch.tensor([[float("nan"), 1.0, 2.0], [1.0, 2.0, 3.0]]))
    assert torch.isnan(y[0, 0]) and torch.isfinite(y[0, 1:]).all() and torch.isfinite(y[1]).all()
