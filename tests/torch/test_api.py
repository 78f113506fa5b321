"""Model-wide API: the evaluation switch, predict under the four protocols, and
convert_batchnorm on a ResNet-style model."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch_models import TinyResNet, small_net  # noqa: E402

import localnorm  # noqa: E402
import localnorm.torch as lt  # noqa: E402
from localnorm import LocalNormError  # noqa: E402

# -- evaluation switch ------------------------------------------------------------------


def test_set_eval_mode_and_context_manager_restore():
    net = small_net().eval()
    lt.set_eval_mode(net, "set", 2)
    assert (net[1].mode, net[1].group) == ("set", 2)
    with lt.eval_mode(net, "single", 1) as same:
        assert same is net and (net[1].mode, net[1].group) == ("single", 1)
    assert (net[1].mode, net[1].group) == ("set", 2)
    with pytest.raises(RuntimeError), lt.eval_mode(net, "batch"):
        raise RuntimeError("boom")
    assert net[1].mode == "set"


def test_eval_mode_changes_output_only_in_evaluation():
    net = small_net()
    x = torch.randn(8, 3, 6, 6)
    train_out = net(x)
    lt.set_eval_mode(net, "single", 0)
    torch.testing.assert_close(net(x), train_out)  # training ignores the eval mode
    net.eval()
    assert not torch.allclose(net(x), train_out)
    lt.set_eval_mode(net, "batch")
    torch.testing.assert_close(net(x), train_out)  # eval "batch" == training's math


def test_switch_needs_localnorm_layers():
    with pytest.raises(LocalNormError, match="convert_batchnorm"):
        lt.set_eval_mode(nn.Linear(2, 2), "single")


def _two_layers(k=4):
    torch.manual_seed(0)
    net = nn.Sequential(lt.LocalNorm2d(3, k), nn.Tanh(), lt.LocalNorm2d(3, k))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.normal_()
    return net.eval()


@pytest.mark.parametrize("mode", ["single", "set"])
def test_random_groups_are_drawn_once_per_model_call(mode):
    """An image meets one group in every layer: the output of a random draw is, sample by
    sample (single) or as a whole (set), the output of one fixed group in both layers."""
    net = _two_layers()
    x = torch.randn(16, 3, 4, 4)
    with torch.no_grad():
        fixed = []
        for g in range(4):
            with lt.eval_mode(net, mode, g):
                fixed.append(net(x))
        fixed = torch.stack(fixed)  # (K, N, ...)
        lt.set_eval_mode(net, mode, None, torch.Generator().manual_seed(0))
        seen = set()
        for _ in range(3):
            y = net(x)
            match = (y[None] - fixed).abs().flatten(2).amax(-1) < 1e-5  # (K, N)
            if mode == "set":
                match = match.all(1, keepdim=True).expand_as(match)
            assert match.any(0).all()  # every image matches one fixed group in both layers
            seen.update(match.float().argmax(0).tolist())
    assert len(seen) > 1  # and the draws are random


@pytest.mark.parametrize("generator", [0, "seed", np.random.default_rng(0)])
def test_eval_switches_refuse_a_generator_that_is_not_a_torch_generator(generator):
    """The layers draw random groups with torch.randint, so a generator is a
    torch.Generator (predict, which draws once with NumPy, also takes seeds): anything
    else is refused when it is set, not at the model's first call, and nothing changes."""
    net = small_net().eval()
    for call in (lambda: net[1].set_mode("single", None, generator),
                 lambda: lt.set_eval_mode(net, "single", None, generator),
                 lambda: lt.eval_mode(net, "set", None, generator).__enter__()):
        with pytest.raises(LocalNormError, match="Received:.*generator"):
            call()
        assert (net[1].mode, net[1].generator, net[1]._draw) == ("batch", None, None)
        assert not net._forward_pre_hooks
    net(torch.randn(4, 3, 6, 6))


def test_predict_bad_generator_names_what_pytorch_takes():
    """The refusal of predict's generator names the torch.Generator it takes, and a fix a
    PyTorch user can type (not a JAX key)."""
    with pytest.raises(LocalNormError, match="Received:") as info:
        lt.predict(small_net(), torch.randn(4, 3, 6, 6), "single", generator="seed")
    assert "torch.Generator" in str(info.value) and "generator=0" in str(info.value)


@pytest.mark.parametrize("protocol", ["batch", "single-voting", "voting"])
def test_predict_refuses_a_group_that_only_single_uses(protocol):
    """A group given to a protocol that uses every group is refused, not ignored (the
    check is the shared predict's, so every adapter refuses it)."""
    with pytest.raises(LocalNormError, match="protocol='single'") as info:
        lt.predict(small_net(), torch.randn(8, 3, 6, 6), protocol, group=1)
    assert f"protocol={protocol!r}" in str(info.value)
    lt.predict(small_net(), torch.randn(8, 3, 6, 6), "single", group=1)  # where it is used


def test_layer_set_mode_draws_per_layer_and_hooks_are_removed():
    net = _two_layers()
    lt.set_eval_mode(net, "single", None)
    assert len(net._forward_pre_hooks) == 1 and net[0]._draw is net[2]._draw
    with lt.eval_mode(net, "set", 1):
        assert len(net._forward_pre_hooks) == 0 and net[0]._draw is None
        with lt.eval_mode(net, "set", None):
            assert len(net._forward_pre_hooks) == 1
        assert len(net._forward_pre_hooks) == 0
    assert len(net._forward_pre_hooks) == 1 and net[0]._draw is net[2]._draw  # restored
    draw = net[0]._draw
    net(torch.randn(4, 3, 2, 2))
    assert draw.drawn  # the restored hook still resets this draw at the next call
    lt.set_eval_mode(net, "batch")
    assert len(net._forward_pre_hooks) == 0 and net[0]._draw is None
    net[0].set_mode("single", None)  # a layer on its own draws at each of its calls
    assert net[0]._draw is None


@pytest.mark.parametrize("copy_of", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_a_copy_of_a_model_with_random_groups_is_switched_like_the_original(copy_of):
    """A deep copy or an unpickled model carries its own random-group draw and the hook
    that resets it: the copy's layers share the copy's draw, a new draw happens at each
    call, and set_eval_mode / eval_mode on the copy replace that hook (none left over)."""
    net = copy_of(lt.set_eval_mode(_two_layers(), "single", None))
    draw = net[0]._draw
    assert draw is net[2]._draw and len(net._forward_pre_hooks) == 1
    torch.manual_seed(0)
    net(torch.randn(64, 3, 2, 2))
    first = dict(draw.drawn)
    net(torch.randn(64, 3, 2, 2))
    assert all(not torch.equal(first[key], draw.drawn[key]) for key in first)
    with lt.eval_mode(net, "set", None):
        assert len(net._forward_pre_hooks) == 1 and net[0]._draw is not draw
    assert len(net._forward_pre_hooks) == 1 and net[0]._draw is draw  # restored
    lt.set_eval_mode(net, "batch")
    assert len(net._forward_pre_hooks) == 0 and net[0]._draw is None


# -- predict ----------------------------------------------------------------------------


def _data(n=12, seed=1):
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_predict_batch_is_eval_forward(partition):
    net = small_net(partition=partition)
    x = _data()
    p = lt.predict(net, x, "batch")
    assert net.training  # restored
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(p.scores, net(x))
    assert p.agreement is None and torch.equal(p.labels, p.scores.argmax(-1))
    # chunks of batch_size: each chunk its own statistics
    p2 = lt.predict(net, x, "batch", batch_size=8)
    with torch.no_grad():
        expected = torch.cat([net(x[:8]), net(x[8:])])
    torch.testing.assert_close(p2.scores, expected)


def test_predict_single_equals_one_image_at_a_time():
    net = small_net()
    x = _data(6)
    p = lt.predict(net, x, "single", group=3)
    net.eval()
    with torch.no_grad(), lt.eval_mode(net, "single", 3):
        lone = torch.cat([net(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(p.scores, lone)


def test_predict_single_random_groups_are_seeded():
    net = small_net()
    x = _data(16)
    a = lt.predict(net, x, "single", generator=torch.Generator().manual_seed(5))
    b = lt.predict(net, x, "single", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.scores, b.scores)
    # One scheme in every adapter: a torch.Generator becomes the NumPy seed it draws.
    seed = int(torch.randint(2**31 - 1, (), generator=torch.Generator().manual_seed(5)))
    groups = torch.as_tensor(np.random.default_rng(seed).integers(0, 4, 16))
    c = lt.predict(net, x, "single", group=groups)
    torch.testing.assert_close(a.scores, c.scores)
    # ... and an int seed gives the groups NumPy's Generator draws from it.
    d = lt.predict(net, x, "single", generator=7)
    e = lt.predict(net, x, "single",
                   group=torch.as_tensor(np.random.default_rng(7).integers(0, 4, 16)))
    torch.testing.assert_close(d.scores, e.scores)


@pytest.mark.parametrize("vote", ["hard", "soft"])
def test_predict_single_voting_is_k_single_passes_and_a_vote(vote):
    net = small_net()
    x = _data(5)
    p = lt.predict(net, x, "single-voting", vote=vote)
    net.eval()
    with torch.no_grad():
        per_group = []
        for g in range(4):
            with lt.eval_mode(net, "single", g):
                per_group.append(net(x))
    v = localnorm.vote(torch.stack(per_group), vote, from_logits=True)
    torch.testing.assert_close(p.scores, v.scores)
    torch.testing.assert_close(p.agreement, v.agreement)
    assert torch.equal(p.labels, v.labels)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_predict_voting_is_set_mode_per_group(partition):
    net = small_net(partition=partition)
    x = _data(12)
    p = lt.predict(net, x, "voting", vote="soft", set_size=3)
    net.eval()
    with torch.no_grad():
        per_group = []
        for g in range(4):
            with lt.eval_mode(net, "set", g):
                per_group.append(torch.cat([net(x[s : s + 3]) for s in range(0, 12, 3)]))
    v = localnorm.vote(torch.stack(per_group), "soft", from_logits=True)
    torch.testing.assert_close(p.scores, v.scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p.agreement, v.agreement)


def test_predict_restores_modes_and_training_flags():
    net = small_net()
    net[5].eval()  # a submodule already in eval stays so
    lt.set_eval_mode(net, "set", 1)
    lt.predict(net, _data(8), "single-voting")
    assert net.training and net[1].training and not net[5].training
    assert (net[1].mode, net[1].group) == ("set", 1)


@pytest.mark.parametrize("kwargs, name", [
    ({"protocol": "majority"}, "protocol"), ({"protocol": "voting", "vote": "mean"}, "vote"),
    ({"protocol": "single", "group": 9}, "group=9"),
    ({"protocol": "single", "group": torch.tensor([0, 1, 9, 0, 1, 2, 3, 0])}, "group=None"),
])
def test_predict_bad_arguments(kwargs, name):
    with pytest.raises(LocalNormError, match=name):
        lt.predict(small_net(), _data(8), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_predict_refuses_non_finite_input_once(bad):
    net = small_net()
    x = _data(8)
    x[3, 1, 2, 2] = bad
    x[5, 0, 0, 0] = -bad
    with pytest.raises(LocalNormError) as info:
        lt.predict(net, x, "voting")
    text = str(info.value)
    assert "2 non-finite of 864" in text and "check_finite=False" in text
    # x is checked once: with check_finite=False the layers (which check in evaluation)
    # do not refuse it either, and they check again after predict.
    p = lt.predict(net, x, "batch", check_finite=False)
    assert not torch.isfinite(p.scores).all()
    assert net[1].check_finite
    with lt.eval_mode(net.eval(), "batch"), pytest.raises(LocalNormError):
        net(x)
    net.train()


def test_predict_batch_needs_k_images():
    with pytest.raises(LocalNormError, match="x.shape\\[0\\]=3"):
        lt.predict(small_net(), _data(3), "batch")


def test_predict_refuses_inconsistent_layers():
    net = nn.Sequential(lt.LocalNorm2d(3, 2), lt.LocalNorm2d(3, 4), nn.Flatten())
    with pytest.raises(LocalNormError) as info:
        lt.predict(net, _data(8), "voting")
    assert "num_groups" in str(info.value) and "2, 4" in str(info.value)


# -- convert_batchnorm --------------------------------------------------------------------


def _trained_resnet():
    torch.manual_seed(0)
    net = TinyResNet()
    with torch.no_grad():  # non-trivial BatchNorm parameters and statistics
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    net(torch.randn(16, 3, 8, 8))
    return net


def test_convert_replaces_every_batchnorm():
    net = lt.convert_batchnorm(_trained_resnet(), num_groups=4, partition="strided")
    kinds = [type(m).__name__ for m in net.modules()]
    assert not any("BatchNorm" in k for k in kinds)
    assert kinds.count("LocalNorm2d") == 6 and kinds.count("LocalNorm1d") == 1
    assert all(layer.num_groups == 4 and layer.partition == "strided"
               for layer in lt.localnorm_layers(net))
    assert lt.local_norm_layers is lt.localnorm_layers  # the earlier name still works


def test_convert_copies_parameters_into_every_group_and_keeps_flags():
    original = _trained_resnet()
    bn = original.stem[1]
    w, b, rm = bn.weight.detach().clone(), bn.bias.detach().clone(), bn.running_mean.clone()
    original.eval()
    net = lt.convert_batchnorm(original, num_groups=3)
    layer = net.stem[1]
    assert isinstance(layer, lt.LocalNorm2d) and not layer.training
    torch.testing.assert_close(layer.weight, w.expand(3, -1))
    torch.testing.assert_close(layer.bias, b.expand(3, -1))
    torch.testing.assert_close(layer.running_mean, rm.expand(3, -1))
    assert layer.weight.dtype == w.dtype and layer.track_running_stats


def test_convert_copies_running_state_and_frozen_parameters():
    """A frozen BatchNorm (fine-tuning) stays frozen; its running statistics and step
    count reach every group's row, and a Ghost conversion's one shared row."""
    bn = nn.BatchNorm2d(3)
    bn.weight.requires_grad_(False)
    bn.train()(torch.randn(6, 3, 2, 2) * 3 + 1)
    bn(torch.randn(6, 3, 2, 2))
    for ghost, rows in ((False, 2), (True, 1)):
        layer = lt.convert_batchnorm(copy.deepcopy(bn), num_groups=2, ghost=ghost)
        assert not layer.weight.requires_grad and layer.bias.requires_grad
        assert int(layer.num_batches_tracked) == 2
        torch.testing.assert_close(layer.running_var, bn.running_var.expand(rows, -1))
        torch.testing.assert_close(layer.weight, bn.weight.detach().expand(rows, -1))


def test_convert_keeps_dtype_and_returns_new_layer_for_a_bare_batchnorm():
    bn = nn.BatchNorm3d(4, eps=1e-3, momentum=0.3, affine=False).double()
    layer = lt.convert_batchnorm(bn, num_groups=2)
    assert isinstance(layer, lt.LocalNorm3d) and layer.running_mean.dtype == torch.float64
    assert (layer.eps, layer.momentum, layer.affine) == (1e-3, 0.3, False)


def test_convert_sync_batchnorm_any_rank():
    """SyncBatchNorm takes any rank >= 2, and so does the LocalNorm that replaces it."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    dense = nn.SyncBatchNorm.convert_sync_batchnorm(dense)
    assert isinstance(dense[1], nn.SyncBatchNorm)
    dense = lt.convert_batchnorm(dense, 2)
    assert type(dense[1]) is lt.LocalNorm and dense[1].weight.shape == (2, 6)
    x = torch.randn(8, 5)
    out = dense(x)
    out.sum().backward()
    assert out.shape == (8, 2) and dense[1].weight.grad.shape == (2, 6)
    volume = lt.convert_batchnorm(nn.Sequential(nn.Conv3d(2, 4, 1), nn.SyncBatchNorm(4)), 2)
    v = torch.randn(4, 2, 3, 3, 3)
    ref = lt.LocalNorm3d(4, 2)
    torch.testing.assert_close(volume(v), ref(volume[0](v)))


def test_convert_lazy_batchnorm():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LazyBatchNorm2d())
    with pytest.raises(LocalNormError) as info:
        lt.convert_batchnorm(net, 2)
    assert "LazyBatchNorm2d" in str(info.value) and "forward pass" in str(info.value)
    net(torch.randn(4, 3, 2, 2))  # materializes: it becomes a BatchNorm2d
    net = lt.convert_batchnorm(net, 2)
    assert isinstance(net[1], lt.LocalNorm2d) and net[1].weight.shape == (2, 4)


def test_converted_with_one_group_reproduces_train_mode():
    original = _trained_resnet().train()
    x = torch.randn(8, 3, 8, 8)
    expected = original(x)
    converted = lt.convert_batchnorm(original, num_groups=1)
    torch.testing.assert_close(converted(x), expected, atol=1e-5, rtol=1e-5)


def test_converted_model_trains():
    torch.manual_seed(0)
    net = lt.convert_batchnorm(TinyResNet(classes=3), num_groups=4)
    x = torch.randn(32, 3, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0].mean(dim=(1, 2)) > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    layer = net.stem[1]
    assert not torch.allclose(layer.weight[0], layer.weight[1])  # groups diverge
    p = lt.predict(net, x, "voting")
    assert p.scores.shape == (32, 3) and p.agreement.shape == (32,)


def test_convert_keeps_a_shared_batchnorm_shared():
    """A BatchNorm used in two places (twice in one container, or in two containers)
    becomes one LocalNorm used in both places, its parameters still tied."""
    bn = nn.BatchNorm2d(4)
    twice = lt.convert_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), bn, nn.Conv2d(4, 4, 1), bn))
    assert isinstance(twice[1], lt.LocalNorm2d) and twice[3] is twice[1]
    bn = nn.BatchNorm2d(4)
    nested = lt.convert_batchnorm(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), bn),
                                                nn.Sequential(bn)))
    assert isinstance(nested[0][1], lt.LocalNorm2d) and nested[1][0] is nested[0][1]
    assert len(list(nested.parameters())) == 4  # conv weight/bias, one weight/bias pair


def test_convert_refuses_what_is_not_a_module():
    with pytest.raises(LocalNormError, match="Received:.*str"):
        lt.convert_batchnorm("resnet18")


def test_convert_bad_arguments():
    with pytest.raises(LocalNormError, match="num_groups"):
        lt.convert_batchnorm(TinyResNet(), 0)
    with pytest.raises(LocalNormError, match="partition"):
        lt.convert_batchnorm(TinyResNet(), 2, partition="blocks")


def test_group_per_rank_trains_one_row_per_rank():
    net = small_net(num_groups=2)
    lt.set_group_per_rank(net, rank=3)
    assert net[1].rank_group == 1
    x = torch.randn(4, 3, 6, 6)
    net(x).sum().backward()
    grad = net[1].weight.grad
    assert torch.all(grad[0] == 0) and torch.any(grad[1] != 0)
    lt.set_group_per_rank(net, enabled=False)
    assert net[1].rank_group is None
    with pytest.raises(LocalNormError, match="init_process_group"):
        lt.set_group_per_rank(net)


@pytest.mark.parametrize("rank", [-1, 1.5, "1", True, None])
def test_group_per_rank_refuses_a_bad_rank_and_flag(rank):
    """A rank is a non-negative int (a float, string or bool is not read as one, and a
    negative rank is no process's); ``enabled`` is True or False. Nothing changes."""
    net = small_net(num_groups=2)
    with pytest.raises(LocalNormError, match="Received:"):
        if rank is None:
            lt.set_group_per_rank(net, rank=1, enabled="no")
        else:
            lt.set_group_per_rank(net, rank=rank)
    assert net[1].rank_group is None
    lt.set_group_per_rank(net, rank=np.int64(3))
    assert net[1].rank_group == 1


def test_predict_numpy_group_array_is_accepted():
    net = small_net()
    x = _data(4)
    groups = np.array([0, 1, 2, 3])
    a = lt.predict(net, x, "single", group=groups)
    b = lt.predict(net, x, "single", group=torch.from_numpy(groups))
    torch.testing.assert_close(a.scores, b.scores)


@pytest.mark.parametrize("protocol, expected", [
    ("batch", [12]),                      # one pass over the batch
    ("single", [12]),                     # one pass, not N one-image passes
    ("single-voting", [12, 12, 12, 12]),  # N/K=3 images per pass, each tiled K times
    ("voting", [12, 12, 12, 12]),         # sets of N/K=3 images, tiled over the K groups
])
def test_predict_pass_counts(protocol, expected):
    net = small_net()
    sizes = []
    net[1].register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    lt.predict(net, _data(12), protocol)
    assert sizes == expected


def test_predict_single_lone_image_is_not_replicated():
    net = small_net()
    sizes = []
    net[1].register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    p = lt.predict(net, _data(1), "single", group=0)
    assert sizes == [1] and p.scores.shape == (1, 5)
