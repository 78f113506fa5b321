"""LocalNorm1d/2d/3d: construction, state, running statistics, memory formats, AMP and
input errors. Agreement with the reference in every mode/partition/dtype is the
conformance suite's job (``conformance --subjects=torch``); here are the layer features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch_models import requires_cuda  # noqa: E402

import localnorm  # noqa: E402
import localnorm.torch as lt  # noqa: E402
from localnorm import LocalNormError, reference  # noqa: E402

CLASSES = {1: lt.LocalNorm1d, 2: lt.LocalNorm2d, 3: lt.LocalNorm3d}
SHAPES = {1: (12, 3, 5), 2: (12, 3, 4, 5), 3: (12, 3, 2, 3, 4)}


def _params(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer


def _ref(layer, x, **kw):
    return torch.from_numpy(reference.local_norm(
        x.detach().double().numpy(), layer.weight.detach().double().numpy(),
        layer.bias.detach().double().numpy(), axis=1, partition=layer.partition,
        eps=layer.eps, **kw,
    ))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_construction_defaults_and_repr(d):
    layer = CLASSES[d](7)
    assert layer.num_groups == 4 and layer.eps == 1e-5 and layer.momentum == 0.1
    assert layer.weight.shape == (4, 7) and layer.bias.shape == (4, 7)
    assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)
    assert layer.running_mean is None and layer.num_batches_tracked is None
    assert layer.partition == "contiguous" and layer.mode == "batch"
    text = repr(layer)
    assert f"LocalNorm{d}d(7, num_groups=4" in text and "partition='contiguous'" in text


def test_factory_kwargs_and_reset():
    layer = lt.LocalNorm2d(3, 2, track_running_stats=True, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.running_var.dtype == torch.float64
    assert layer.running_mean.shape == (2, 3) and layer.num_batches_tracked.dtype == torch.long
    _params(layer)
    layer(torch.randn(8, 3, 4, 4, dtype=torch.float64))
    assert int(layer.num_batches_tracked) == 1
    layer.reset_parameters()
    assert torch.all(layer.weight == 1) and torch.all(layer.running_var == 1)
    assert int(layer.num_batches_tracked) == 0


def test_affine_false_has_no_parameters():
    layer = lt.LocalNorm2d(3, 2, affine=False)
    assert layer.weight is None and not list(layer.parameters())
    x = torch.randn(8, 3, 4, 4)
    y = layer(x)
    ones = np.ones((2, 3))
    ref = reference.local_norm(x.double().numpy(), ones, 0 * ones, axis=1)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("n", [8, 11])
def test_running_stats_are_batchnorm_per_group(partition, n):
    """Each group's running statistics follow BatchNorm's update on that group alone."""
    k = 4
    layer = lt.LocalNorm2d(3, k, track_running_stats=True, partition=partition).double()
    bns = [nn.BatchNorm2d(3).double() for _ in range(k)]
    for step in range(3):
        x = torch.randn(n, 3, 4, 4, dtype=torch.float64) * (step + 1) + step
        layer(x)
        gidx = localnorm.group_index(n, k, partition)
        for g, bn in enumerate(bns):
            bn(x[torch.from_numpy(gidx == g)])
    np.testing.assert_allclose(
        layer.running_mean.numpy(), np.stack([bn.running_mean.numpy() for bn in bns]), rtol=1e-10
    )
    np.testing.assert_allclose(
        layer.running_var.numpy(), np.stack([bn.running_var.numpy() for bn in bns]), rtol=1e-10
    )
    assert int(layer.num_batches_tracked) == 3


def test_momentum_none_is_cumulative_average():
    layer = lt.LocalNorm1d(2, 1, momentum=None, track_running_stats=True).double()
    bn = nn.BatchNorm1d(2, momentum=None).double()
    for _ in range(4):
        x = torch.randn(6, 2, dtype=torch.float64)
        layer(x)
        bn(x)
    np.testing.assert_allclose(layer.running_var[0].numpy(), bn.running_var.numpy(), rtol=1e-12)


def test_running_mode_uses_group_running_stats():
    layer = _params(lt.LocalNorm2d(3, 2, track_running_stats=True))
    for _ in range(2):
        layer(torch.randn(8, 3, 4, 4) * 2 + 1)
    layer.eval().set_mode("running", 1)
    x = torch.randn(3, 3, 4, 4)
    rm = layer.running_mean[1].view(1, 3, 1, 1)
    rv = layer.running_var[1].view(1, 3, 1, 1)
    expected = (x - rm) / torch.sqrt(rv + layer.eps) * layer.weight[1].view(1, 3, 1, 1)
    expected = expected + layer.bias[1].view(1, 3, 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_running_mode_needs_tracking():
    with pytest.raises(LocalNormError, match="track_running_stats"):
        lt.LocalNorm2d(3).set_mode("running")


def test_eval_batch_mode_recomputes_statistics():
    layer = _params(lt.LocalNorm2d(3, 2, track_running_stats=True)).eval()
    x = torch.randn(6, 3, 4, 4) * 3 + 2
    torch.testing.assert_close(layer(x).double(), _ref(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["single", "set"])
def test_eval_modes_match_reference(mode):
    layer = _params(lt.LocalNorm3d(3, 3)).eval()
    x = torch.randn(5, 3, 2, 3, 4)
    group = torch.tensor([2, 0, 1, 1, 0]) if mode == "single" else 2
    layer.set_mode(mode, group)
    ref = _ref(layer, x, mode=mode, group=group.numpy() if mode == "single" else group)
    torch.testing.assert_close(layer(x).double(), ref, atol=1e-5, rtol=1e-5)


def test_random_groups_are_seedable():
    layer = _params(lt.LocalNorm2d(3, 4)).eval()
    x = torch.randn(16, 3, 4, 4)
    layer.set_mode("single", None, torch.Generator().manual_seed(3))
    a = layer(x)
    layer.set_mode("single", None, torch.Generator().manual_seed(3))
    b = layer(x)
    torch.testing.assert_close(a, b)
    groups = torch.randint(4, (16,), generator=torch.Generator().manual_seed(3))
    assert len(set(groups.tolist())) > 1
    layer.set_mode("single", groups)
    torch.testing.assert_close(layer(x), a)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("d", [2, 3])
def test_channels_last_is_preserved(partition, d):
    fmt = torch.channels_last if d == 2 else torch.channels_last_3d
    layer = _params(CLASSES[d](3, 4, partition=partition))
    x = torch.randn(SHAPES[d]).contiguous(memory_format=fmt).requires_grad_(True)
    y = layer(x)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y.double(), _ref(layer, x), atol=1e-5, rtol=1e-5)
    y.backward(torch.randn_like(y))
    assert x.grad.is_contiguous(memory_format=fmt)


def test_strided_batch_is_one_fused_batch_norm():
    """The strided fast path: (N, C, H, W) viewed as (N/K, K*C, H, W) equals BatchNorm2d
    with K*C channels on that view."""
    k, c = 4, 3
    layer = _params(lt.LocalNorm2d(c, k, partition="strided"))
    x = torch.randn(8, c, 4, 4)
    bn = nn.BatchNorm2d(k * c, track_running_stats=False)
    with torch.no_grad():
        bn.weight.copy_(layer.weight.reshape(-1))
        bn.bias.copy_(layer.bias.reshape(-1))
    expected = bn(x.reshape(2, k * c, 4, 4)).reshape(x.shape)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_keeps_float32_params(dtype):
    layer = _params(lt.LocalNorm2d(3, 2))
    x = (torch.randn(8, 3, 4, 4) * 50 + 1000).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and layer.weight.dtype == torch.float32
    ref = _ref(layer, x.float())
    torch.testing.assert_close(y.double(), ref, atol=0.05, rtol=0.02)


def test_autocast_bfloat16_cpu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), lt.LocalNorm2d(4, 2), nn.ReLU())
    x = torch.randn(8, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = net[0](x)
        y = net(x)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    assert net[1].weight.dtype == torch.float32
    # Statistics in float32: equals the float32 layer on the bf16 activations, rounded.
    torch.testing.assert_close(y, torch.relu(net[1](h.float())).to(torch.bfloat16))
    y.float().sum().backward()
    assert net[1].weight.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_constant_input_is_finite(dtype):
    layer = lt.LocalNorm2d(3, 2).to(torch.float32)
    layer.eval().set_mode("single", 0)
    for mode_train in (True, False):
        layer.train(mode_train)
        x = torch.full((4, 3, 4, 4), 7.0, dtype=dtype, requires_grad=True)
        y = layer(x)
        y.float().sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_state_dict_round_trip():
    a = _params(lt.LocalNorm2d(3, 2, track_running_stats=True))
    a(torch.randn(8, 3, 4, 4))
    b = lt.LocalNorm2d(3, 2, track_running_stats=True)
    b.load_state_dict(a.state_dict())
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value)


@pytest.mark.parametrize("other", [(3, 4), (5, 2)])
def test_state_dict_mismatch_names_shapes(other):
    a = lt.LocalNorm2d(3, 2)
    b = lt.LocalNorm2d(other[0], other[1])
    with pytest.raises(LocalNormError) as info:
        b.load_state_dict(a.state_dict())
    text = str(info.value)
    assert "(2, 3)" in text and f"({other[1]}, {other[0]})" in text
    assert "weight" in text and "num_groups" in text


def test_batchnorm_checkpoint_is_refused_with_conversion_hint():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(LocalNormError, match="convert_batchnorm"):
        lt.LocalNorm2d(3, 2).load_state_dict(bn.state_dict(), strict=False)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("d, ndim", [(1, 4), (2, 3), (2, 5), (3, 4)])
def test_wrong_rank(d, ndim):
    x = torch.randn((8, 3) + (4,) * (ndim - 2))
    with pytest.raises(LocalNormError) as info:
        CLASSES[d](3, 2)(x)
    assert f"x.ndim={ndim}" in str(info.value) and f"LocalNorm{d}d" in str(info.value)


def test_wrong_channels():
    with pytest.raises(LocalNormError) as info:
        lt.LocalNorm2d(3, 2)(torch.randn(8, 5, 4, 4))
    assert "5" in str(info.value) and "num_features=3" in str(info.value)


def test_too_few_samples_in_training_says_how_to_fix():
    with pytest.raises(LocalNormError) as info:
        lt.LocalNorm2d(3, 4)(torch.randn(3, 3, 4, 4))
    text = str(info.value)
    assert "x.shape[0]=3" in text and "num_groups=4" in text and "drop_last" in text


def test_single_value_per_channel_is_refused():
    with pytest.raises(LocalNormError, match="variance"):
        lt.LocalNorm1d(3, 4)(torch.randn(4, 3))


@pytest.mark.parametrize("kwargs, name", [
    ({"num_groups": 0}, "num_groups=0"), ({"eps": -1.0}, "eps=-1.0"),
    ({"partition": "random"}, "partition='random'"),
])
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(LocalNormError, match=name):
        lt.LocalNorm2d(3, **kwargs)


@pytest.mark.parametrize("num_features", [0, -2, 2.5, True])
def test_bad_num_features(num_features):
    with pytest.raises(LocalNormError) as info:
        lt.LocalNorm2d(num_features)
    text = str(info.value)
    assert f"num_features={num_features!r}" in text and "positive int" in text
    assert "build the layer with num_features=" not in text  # not the channel-mismatch fix


def test_unknown_mode_and_bad_group():
    layer = lt.LocalNorm2d(3, 2)
    with pytest.raises(LocalNormError, match="'sngle'"):
        layer.set_mode("sngle")
    with pytest.raises(LocalNormError, match="group=5") as info:
        layer.set_mode("set", 5)
    assert "group=None" in str(info.value)  # the random-group option is named
    for bad in (True, 1.0, torch.tensor([[0, 1]]), torch.tensor([0.0, 1.0])):
        with pytest.raises(LocalNormError, match="group"):
            layer.set_mode("single", bad)
    layer.set_mode("set", torch.tensor(1))  # a 0-d integer tensor is an int group
    assert layer.group == 1
    with pytest.raises(LocalNormError, match="'set'"):
        layer.set_mode("set", torch.tensor([0, 1]))
    layer.eval().set_mode("single", torch.tensor([0, 1, 1]))
    with pytest.raises(LocalNormError, match="x.shape\\[0\\]=4"):
        layer(torch.randn(4, 3, 2, 2))


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match="dtype"):
        lt.LocalNorm2d(3, 2)(torch.ones(8, 3, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("x", [np.ones((8, 3, 2, 2), np.float32), [[1.0, 2.0, 3.0]] * 8])
def test_input_that_is_not_a_tensor_is_refused(x):
    """A NumPy array or a list gets a TypeError naming its type and the conversion (as
    BatchNorm refuses it), not an AttributeError from inside the layer."""
    with pytest.raises(TypeError, match=f"Received:.*{type(x).__name__}.*torch.as_tensor"):
        lt.LocalNorm(3, 2)(x)


def test_torchscript_scripting_is_refused_with_a_remedy_and_tracing_works():
    """torch.jit.script cannot compile the core's Python math: a model holding a LocalNorm
    layer is refused with the remedy (tracing), which works for other batch sizes too."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), lt.LocalNorm2d(4, 2))
    with pytest.raises(LocalNormError, match="torch.jit.script.*LocalNorm2d.*torch.jit.trace"):
        torch.jit.script(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(8, 3, 2, 2))
    x = torch.randn(6, 3, 2, 2)
    torch.testing.assert_close(traced(x), model(x))


# -- the rank-agnostic LocalNorm ------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 5), (8, 3, 4, 5), (8, 3, 2, 3, 4),
                                   (8, 3, 2, 2, 2, 2)])
def test_rank_agnostic_layer_equals_the_ranked_classes(shape):
    layer = _params(lt.LocalNorm(3, 4))
    x = torch.randn(shape)
    torch.testing.assert_close(layer(x).double(), _ref(layer, x), atol=1e-5, rtol=1e-5)
    ranked = {2: lt.LocalNorm1d, 3: lt.LocalNorm1d, 4: lt.LocalNorm2d, 5: lt.LocalNorm3d}
    if len(shape) in ranked:
        other = ranked[len(shape)](3, 4)
        other.load_state_dict(layer.state_dict())
        torch.testing.assert_close(other(x), layer(x))
    with pytest.raises(LocalNormError, match="x.ndim=1"):
        layer(torch.randn(3))


# -- NaN/Inf in evaluation --------------------------------------------------------------


def _with_bad(x, value):
    x = x.clone()
    x[1, 0, 0, 0] = value
    x[2, 1, 1, 1] = value
    return x


@pytest.mark.parametrize("mode", ["batch", "single", "set"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_evaluation_refuses_non_finite_input(mode, bad):
    layer = lt.LocalNorm2d(3, 2).eval().set_mode(mode, 0)
    x = _with_bad(torch.randn(4, 3, 4, 4), bad)
    with pytest.raises(LocalNormError) as info:
        layer(x)
    text = str(info.value)
    assert "2 non-finite of 192" in text and "layer.check_finite = False" in text
    layer.check_finite = False  # the attribute, as the message says
    assert not torch.isfinite(layer(x)).all()
    off = lt.LocalNorm2d(3, 2, check_finite=False).eval().set_mode(mode, 0)  # constructor
    assert not torch.isfinite(off(x)).all() and "check_finite=False" in repr(off)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_non_finite_check_every_dtype(dtype):
    layer = lt.LocalNorm2d(3, 2).eval()
    with pytest.raises(LocalNormError, match="non-finite"):
        layer(_with_bad(torch.randn(4, 3, 4, 4), float("nan")).to(dtype))
    layer(torch.randn(4, 3, 4, 4, dtype=dtype))


def test_training_and_traced_calls_do_not_check():
    layer = lt.LocalNorm2d(3, 2)
    x = _with_bad(torch.randn(4, 3, 4, 4), float("nan"))
    assert not torch.isfinite(layer(x)).all()  # training: no scan, as BatchNorm
    layer.eval()
    xs = torch.stack([x, x])
    out = torch.func.vmap(layer)(xs)  # a transform: values cannot be read, no check
    assert not torch.isfinite(out).all()


# -- group-per-rank with buffers in another dtype --------------------------------------


@pytest.mark.parametrize("layer_dtype, x_dtype", [
    (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.float64), (torch.float32, torch.bfloat16),
])
def test_group_per_rank_running_stats_any_dtype(layer_dtype, x_dtype):
    layer = lt.LocalNorm2d(3, 2, track_running_stats=True, dtype=layer_dtype)
    lt.set_group_per_rank(layer, rank=1)
    bn = nn.BatchNorm2d(3).double()
    for step in range(2):
        x = (torch.randn(6, 3, 4, 4) * (step + 1) + step).to(x_dtype)
        y = layer(x)
        bn(x.double())
        assert y.dtype == x_dtype and torch.isfinite(y).all()
    tol = {"atol": 2e-2, "rtol": 2e-2} if torch.finfo(layer_dtype).bits == 16 else {}
    torch.testing.assert_close(layer.running_mean[1].double(), bn.running_mean, **tol)
    torch.testing.assert_close(layer.running_var[1].double(), bn.running_var, **tol)
    assert torch.all(layer.running_mean[0] == 0) and torch.all(layer.running_var[0] == 1)


@pytest.mark.parametrize("layer_dtype", [torch.float16, torch.bfloat16])
def test_low_precision_layer_tracks_running_stats_in_batch_mode(layer_dtype):
    layer = lt.LocalNorm2d(3, 2, track_running_stats=True, dtype=layer_dtype)
    x = torch.randn(8, 3, 4, 4).to(layer_dtype)
    layer(x)
    ref = lt.LocalNorm2d(3, 2, track_running_stats=True).double()
    ref(x.double())
    torch.testing.assert_close(layer.running_var.double(), ref.running_var, atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), lt.LocalNorm2d(4, 2), nn.ReLU()).cuda()
    x = torch.randn(8, 3, 6, 6, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=dtype):
        y = net(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    y.float().sum().backward()
    assert net[1].weight.grad.dtype == torch.float32


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_cuda_half_input_is_not_copied_to_float32(dtype, partition):
    """On CUDA F.batch_norm takes half activations with float32 weights and accumulates
    in float32: equal to the float32 computation, with no float32 activation saved."""
    layer = _params(lt.LocalNorm2d(8, 4, partition=partition)).cuda()
    x = (torch.randn(16, 8, 6, 6, device="cuda") * 4 + 30).to(dtype).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append((t.dtype, t.numel())) or t, lambda t: t
    ):
        y = layer(x)
    assert y.dtype == dtype and (torch.float32, x.numel()) not in saved
    ref = layer(x.detach().float())
    torch.testing.assert_close(y, ref.to(dtype))
    y.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
