"""The paths of ``localnorm.torch._functional`` held equal to each other and to the
reference, including those the eager conformance harness does not reach: the core's plain
differentiable forward (what ``torch.compile``, export and ``torch.func`` trace), the
autograd Function around the core's in-place forward and closed-form VJP on either
layout, the native ``F.batch_norm`` path with layout copies (CUDA), and double backward
through the closed-form backward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from localnorm import _agnostic as core  # noqa: E402
from localnorm import _layer  # noqa: E402
from localnorm import reference  # noqa: E402
from localnorm.torch import _functional as fn  # noqa: E402

F64 = torch.float64
# (shape, channels_last): every rank, NCHW and channels_last, divisible and ragged batches
SHAPES = [
    ((8, 3), False), ((11, 3), False), ((8, 3, 5), False), ((10, 3, 5), False),
    ((8, 3, 4, 5), False), ((9, 3, 4, 5), False), ((8, 3, 4, 5), True), ((11, 3, 4, 5), True),
    ((8, 2, 2, 3, 2), False), ((8, 2, 2, 3, 2), True), ((6, 2, 3, 2, 2), True),
]
K = 4


def _fmt(ndim):
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _data(shape, cl, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64) * 3 + 5
    if cl:
        x = x.contiguous(memory_format=_fmt(x.ndim))
    c = shape[1]
    w = torch.rand(K, c, generator=g, dtype=F64) + 0.5
    b = torch.randn(K, c, generator=g, dtype=F64)
    dy = torch.randn(shape, generator=g, dtype=F64)
    return x, w, b, dy


def _grads(y, inputs, dy):
    return torch.autograd.grad(y, inputs, dy)


def _function(x, w, b, partition):
    """The autograd Function on x's own (N, C, *S) axes, whatever its memory format."""
    return fn._Batch.apply(x, w, b, K, partition, 1e-5, 1)[0]


def _layer_path(x, w, b, partition):
    """What the layers call (channels_last batches as their (N, *S, C) view)."""
    return fn.batch_groups(x, w, b, num_groups=K, partition=partition, eps=1e-5, cdt=F64)


def _plain(x, w, b, partition):
    return core.batch_forward(fn.xp, x, w, b, axis=1, num_groups=K, partition=partition,
                              eps=1e-5)[0]


def _native(x, w, b, partition):
    """One F.batch_norm, with the layout copies that only CUDA batches take."""
    xv, back = fn._native(x, K, partition, copies=True)
    return back(F.batch_norm(xv, None, None, w.reshape(-1), b.reshape(-1), True, 0.0, 1e-5))


@pytest.mark.parametrize("shape, cl", SHAPES, ids=[f"{s}{'-cl' if c else ''}" for s, c in SHAPES])
@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_reduction_paths_equal_reference_and_each_other(shape, cl, partition):
    x, w, b, dy = _data(shape, cl)
    ref = reference.local_norm(x.numpy(), w.numpy(), b.numpy(), axis=1, partition=partition)
    results = {}
    paths = {"function": _function, "layer path": _layer_path, "plain": _plain}
    if shape[0] % K == 0 and not cl:
        paths["native"] = _native
    for name, path in paths.items():
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, w, b))  # same format
        y = path(xs, ws, bs, partition)
        np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12, err_msg=name)
        if cl:
            assert y.is_contiguous(memory_format=_fmt(x.ndim)), name
        results[name] = _grads(y, (xs, ws, bs), dy)
    for name, grads in results.items():
        for got, want in zip(grads, results["plain"]):
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11, msg=name)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_no_affine_and_input_only_gradients(partition):
    x, _, _, dy = _data((10, 3, 4), False)
    xs = x.clone().requires_grad_(True)
    y = fn.batch_groups(xs, None, None, num_groups=K, partition=partition, eps=1e-5, cdt=F64)
    (dx,) = torch.autograd.grad(y, xs, dy)
    xp = x.clone().requires_grad_(True)
    ones = torch.ones(K, x.shape[1], dtype=F64)
    yp = _plain(xp, ones, 0 * ones, partition)
    (dxp,) = torch.autograd.grad(yp, xp, dy)
    torch.testing.assert_close(y, yp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, dxp, rtol=1e-11, atol=1e-11)


def test_double_backward():
    x, w, b, _ = _data((6, 2, 3), False)
    inputs = tuple(t[:, :2].contiguous() if t.ndim == 2 else t for t in (x, w, b))
    inputs = tuple(t.clone().requires_grad_(True) for t in inputs)
    assert torch.autograd.gradgradcheck(
        lambda a, c, d: fn._Batch.apply(a, c, d, K, "contiguous", 1e-5, 1)[0], inputs
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("n, partition", [(9, "contiguous"), (8, "contiguous"), (8, "strided")])
def test_low_precision_reads_activations_as_they_are(dtype, cl, n, partition):
    """float16/bfloat16 input, float32 statistics: equal to the float32 computation on the
    same (rounded) values, and nothing saved for backward is a float32 activation (ragged
    and divisible batches, both memory formats)."""
    x, w, b, dy = _data((n, 3, 4, 4), cl)
    xl = x.to(dtype)
    wf, bf = w.float().requires_grad_(True), b.float().requires_grad_(True)
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    xs = xl.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn.batch_groups(xs, wf, bf, num_groups=K, partition=partition, eps=1e-5,
                            cdt=torch.float32)
    assert y.dtype == dtype
    assert not [s for s in saved if s == (torch.float32, x.numel())], saved
    xf = xl.float().requires_grad_(True)
    yf = core.batch_forward(fn.xp, xf, wf, bf, axis=1, num_groups=K, partition=partition,
                            eps=1e-5)[0]
    torch.testing.assert_close(y, yf.to(dtype))
    dx, dw, db = _grads(y, (xs, wf, bf), dy.to(dtype))
    dxf, dwf, dbf = _grads(yf, (xf, wf, bf), dy.to(dtype).float())
    assert dx.dtype == dtype and dw.dtype == torch.float32
    torch.testing.assert_close(dx, dxf.to(dtype))
    torch.testing.assert_close(dw, dwf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db, dbf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("ndim", [4, 5])
def test_channels_last_runs_on_its_memory_order(partition, ndim):
    """A channels_last batch runs as the (N, *S, C) view of its memory: the output keeps
    the format, its gradients do not depend on the layout of dy, and a large offset
    (small spread) keeps the reference's accuracy."""
    shape = (8, 3, 4, 5) if ndim == 4 else (8, 2, 2, 3, 2)
    x, w, b, dy = _data(shape, True, seed=3)
    x = x * 1e-3 + 1e4  # spread 3e-3 around 1e4
    ref = reference.local_norm(x.numpy(), w.numpy(), b.numpy(), axis=1, partition=partition)
    grads = []
    for dy_ in (dy.contiguous(memory_format=_fmt(ndim)), dy.contiguous()):
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
        y = _layer_path(xs, ws, bs, partition)
        assert y.is_contiguous(memory_format=_fmt(ndim))
        np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-9, atol=1e-9)
        grads.append(_grads(y, (xs, ws, bs), dy_))
    xp, wp, bp = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    want = _grads(_plain(xp, wp, bp, partition), (xp, wp, bp), dy)
    for got in grads:
        for g, wnt in zip(got, want):
            torch.testing.assert_close(g, wnt, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n, partition", itertools.product([8, 11], ["contiguous", "strided"]))
def test_running_statistics_same_on_every_path(n, partition):
    x, w, b, _ = _data((n, 3, 4, 4), False)
    outs = []
    for force_plain in (False, True):
        rm, rv = torch.zeros(K, 3, dtype=F64), torch.ones(K, 3, dtype=F64)
        if force_plain:
            y, mean, var, _ = core.batch_forward(fn.xp, x, w, b, axis=1, num_groups=K,
                                                 partition=partition, eps=1e-5)
            counts = _layer.group_counts(fn.xp, x, 1, K, partition)
            fn.update_running(rm, rv, mean, var, counts, 0.3)
        else:
            y = fn.batch_groups(x, w, b, num_groups=K, partition=partition, eps=1e-5, cdt=F64,
                                running_mean=rm, running_var=rv, momentum=0.3)
        outs.append((y, rm, rv))
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


SINGLE_SHAPES = [((5, 3, 7), False), ((5, 3, 4, 5), False), ((5, 3, 4, 5), True),
                 ((3, 2, 2, 3, 2), True)]


@pytest.mark.parametrize("shape, cl", SINGLE_SHAPES,
                         ids=[f"{s}{'-cl' if c else ''}" for s, c in SINGLE_SHAPES])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_single_mode_in_place_and_autograd_forms_equal_reference(shape, cl, per_sample, affine):
    """"single" mode writes its result into its buffer when no gradient is needed, and
    builds it out of place otherwise (and under tracers): both equal the reference."""
    x, w, b, _ = _data(shape, cl)
    n = shape[0]
    group = torch.arange(n) % K if per_sample else 2
    ref_group = group.numpy() if per_sample else group
    ones = np.ones((K, shape[1]))
    ref = reference.local_norm(x.numpy(), w.numpy() if affine else ones,
                               b.numpy() if affine else 0 * ones, axis=1, mode="single",
                               group=ref_group)
    wa, ba = (w, b) if affine else (None, None)
    with torch.no_grad():
        y_inplace = fn.single(x, wa, ba, group=group, eps=1e-5, cdt=F64)
    wg = None if wa is None else wa.clone().requires_grad_(True)
    bg = None if ba is None else ba.clone().requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    y_grad = fn.single(xg, wg, bg, group=group, eps=1e-5, cdt=F64)
    for y in (y_inplace, y_grad):
        np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
        if cl:
            assert y.is_contiguous(memory_format=_fmt(x.ndim))


@pytest.mark.parametrize("shape, cl", SHAPES[4:8], ids=str)
def test_batch_mode_without_autograd_equals_reference(shape, cl):
    x, w, b, _ = _data(shape, cl)
    with torch.no_grad():
        y = fn.batch_groups(x, w, b, num_groups=K, partition="contiguous", eps=1e-5, cdt=F64)
    ref = reference.local_norm(x.numpy(), w.numpy(), b.numpy(), axis=1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cl", [False, True])
def test_single_mode_low_precision_equals_float32_on_same_values(dtype, cl):
    """"single" mode on float16/bfloat16 input (statistics in float32, the output in the
    input's dtype and memory format) equals the float32 computation on the same values."""
    x, w, b, _ = _data((5, 3, 4, 5), cl)
    xl = x.to(dtype)
    wf, bf = w.float(), b.float()
    with torch.no_grad():
        y = fn.single(xl, wf, bf, group=1, eps=1e-5, cdt=torch.float32)
        yf = fn.single(xl.float(), wf, bf, group=1, eps=1e-5, cdt=torch.float32)
    assert y.dtype == dtype
    if cl:
        assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, yf.to(dtype))


class _CountFresh(TorchDispatchMode):
    """Activation-sized results (``numel`` elements) in storage not seen before (views
    and in-place results reuse theirs); each is kept alive, so that no later array
    reuses its address unseen."""

    def __init__(self, seen, numel):
        super().__init__()
        self.seen, self.numel, self.fresh = set(seen), numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):  # a tuple: BatchNorm's kernels
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.seen:
                    self.seen.add(ptr)
                    self.fresh.append(t)
        return out


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("partition", ["contiguous", "strided"])
def test_training_step_allocates_one_activation_sized_array_more_than_batchnorm(cl, partition):
    """An eager training step of groups on the core's path (the in-place forward and
    VJP; a batch that is not a multiple of K keeps strided groups off the native path)
    makes three activation-sized arrays in either layout: the output, dx, and the product
    ``dy * (x - mean)`` that the backward's sum reads (BatchNorm2d: two). The forward's
    squared deviations are written in the array that becomes the output (channels_last
    made a fourth array for them). Each fresh array costs its first touch, so the count
    is what the CPU benchmarks' training rows pay for (benchmarks/discussion.md says why
    the backward keeps its product); dy and x are left as they are."""
    from torch import nn

    from localnorm.torch import LocalNorm2d

    shape = (7, 3, 5, 6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    dy = torch.randn(shape, generator=g)
    if cl:
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    x.requires_grad_(True)
    x0, dy0 = x.detach().clone(), dy.clone()
    counts = []
    for layer in (LocalNorm2d(3, num_groups=4, partition=partition), nn.BatchNorm2d(3)):
        with _CountFresh({t.untyped_storage().data_ptr() for t in (x, dy)}, x.numel()) as count:
            torch.autograd.grad(layer(x), [x, layer.weight, layer.bias], dy)
        counts.append(len(count.fresh))
    assert counts == [3, 2]
    torch.testing.assert_close(x.detach(), x0, rtol=0, atol=0)
    torch.testing.assert_close(dy, dy0, rtol=0, atol=0)


@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("mode", ["batch", "single"])
def test_forward_without_autograd_allocates_one_activation_sized_array(cl, mode):
    """The training forward and "single" evaluation without autograd (inference, the
    benchmarks' forward rows) make one activation-sized array, the output, in either
    layout (channels_last: the squared deviations are written in it, not in a second
    array), and leave x as it is."""
    from localnorm.torch import LocalNorm2d, set_eval_mode

    shape = (8, 3, 5, 6)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 1e-3 + 1e4
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    x0 = x.clone()
    layer = LocalNorm2d(3, num_groups=4, partition="contiguous")
    if mode == "single":
        layer.eval()
        set_eval_mode(layer, "single", group=1)
    with torch.no_grad(), _CountFresh({x.untyped_storage().data_ptr()}, x.numel()) as count:
        y = layer(x)
    assert len(count.fresh) == 1
    assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
