"""The fused Triton kernels (``localnorm.torch._triton``) through the layers' real
dispatch: every partition, layout, dtype and ragged batch against the float64 core,
shared weight rows, running statistics, the evaluation modes, ``torch.compile
(fullgraph=True)`` over the custom ops, and double backward.

On CPU these run only under Triton's interpreter, which the process must enable before
the kernels are defined (``TRITON_INTERPRET=1 LOCALNORM_TRITON=1``: the torch-triton line
of ``.ci/test``); in the plain torch suite they are skipped with that reason. On a CUDA
machine they run on the GPU."""

from __future__ import annotations

import itertools
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton not importable (.ci/install puts it in the "
                    "directory .ci/triton.sh names; .ci/test adds it to PYTHONPATH)")

import localnorm.torch as lt
from localnorm.torch import _functional as fn
from localnorm.torch import _triton

from localnorm import _agnostic as core
from localnorm import _layer

INTERPRETING = (os.environ.get("TRITON_INTERPRET") == "1"
                and os.environ.get("LOCALNORM_TRITON") == "1")
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"
pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRETING,
    reason="no CUDA device and Triton's interpreter not enabled (TRITON_INTERPRET=1 "
           "LOCALNORM_TRITON=1, the torch-triton line of .ci/test)")

# float32 statistics: relative to the largest value of the float64 result
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _fmt(ndim):
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _input(shape, dtype, channels_last, offset=5.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + offset).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=_fmt(len(shape)))
    return x.to(DEVICE)


def _close(got, want, dtype, what):
    scale = float(want.detach().abs().max()) or 1.0
    err = float((got.detach().double().cpu() - want.detach().cpu()).abs().max()) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.1e}"


def _launched(kind):
    return _triton.launches[kind]


CASES = list(itertools.product(
    [((8, 3, 4, 5), False), ((7, 3, 4, 5), True), ((10, 3, 6), False), ((9, 4), False),
     ((6, 2, 2, 3, 2), True)],
    ["contiguous", "strided"],
    [torch.float32, torch.bfloat16, torch.float16],
))


@pytest.mark.parametrize("shape_cl,partition,dtype", CASES,
                         ids=lambda v: str(v).replace("torch.", "").replace(" ", ""))
def test_batch_mode_matches_core(shape_cl, partition, dtype):
    """Forward and (dx, dweight, dbias) of the layer in training equal the float64 core,
    NCHW and channels_last (the format kept), even and ragged batches."""
    shape, cl = shape_cl
    k = 3
    layer_cls = {2: lt.LocalNorm1d, 3: lt.LocalNorm, 4: lt.LocalNorm2d, 5: lt.LocalNorm3d}
    layer = layer_cls[len(shape)](shape[1], num_groups=k, partition=partition,
                                  device=DEVICE).train()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = _input(shape, dtype, cl).requires_grad_(True)
    before = (_launched("batch"), _launched("batch_backward"))
    y = layer(x)
    dy = _input(shape, dtype, cl, offset=0.0, seed=1)
    grads = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)
    assert (_launched("batch"), _launched("batch_backward")) == (before[0] + 1, before[1] + 1)
    assert y.dtype == dtype and y.stride() == x.stride()

    x64 = x.detach().double().requires_grad_(True)
    w64 = layer.weight.detach().double().requires_grad_(True)
    b64 = layer.bias.detach().double().requires_grad_(True)
    y64 = core.batch_forward(fn.xp, x64, w64, b64, axis=1, num_groups=k, partition=partition,
                             eps=layer.eps)[0]
    want = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
    _close(y, y64, dtype, "y")
    for name, got, ref in zip(("dx", "dweight", "dbias"), grads, want):
        _close(got, ref, dtype, name)


def test_shared_rows_and_running_statistics():
    """One (1, C) weight row shared by the groups along the batch axis (Ghost BatchNorm):
    its gradient is the sum over the groups; the (K, C) running statistics are updated
    from the kernels' group statistics as from the core's."""
    k, shape = 4, (10, 3, 4, 4)
    x = _input(shape, torch.float32, False).requires_grad_(True)
    w = torch.randn(1, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(1, 3, device=DEVICE, requires_grad=True)
    rm, rv = torch.zeros(k, 3, device=DEVICE), torch.ones(k, 3, device=DEVICE)
    y = fn.batch_groups(x, w, b, num_groups=k, partition="contiguous", eps=1e-5,
                        cdt=torch.float32, running_mean=rm, running_var=rv, momentum=0.5)
    dy = _input(shape, torch.float32, False, offset=0.0, seed=1)
    _, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    x64 = x.detach().double()
    w64, b64 = w.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    y64 = core.batch_forward(fn.xp, x64, w64, b64, axis=1, num_groups=k,
                             partition="contiguous", eps=1e-5)[0]
    _close(y, y64, torch.float32, "y")
    dw64, db64 = torch.autograd.grad(y64, (w64, b64), dy.double())
    _close(dw, dw64, torch.float32, "dweight (shared)")
    _close(db, db64, torch.float32, "dbias (shared)")
    mean, var, count = _layer.group_moments(fn.xp, x64, 1, k, "contiguous")
    _close(rm, 0.5 * mean, torch.float32, "running_mean")
    _close(rv, 0.5 + 0.5 * var * count / (count - 1), torch.float32, "running_var")


@pytest.mark.parametrize("mode", ["single", "set", "running"])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_eval_modes_and_their_gradients(mode, cl):
    """"single" (a group per sample), "set" and "running" evaluation and their backward
    run on the kernels and equal the float64 core (running: BatchNorm with group g's
    statistics)."""
    k, shape = 3, (5, 4, 3, 2)
    layer = lt.LocalNorm2d(4, num_groups=k, track_running_stats=True, device=DEVICE)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
        layer.running_mean.normal_()
        layer.running_var.uniform_(0.5, 2.0)
    group = torch.tensor([0, 2, 1, 1, 0], device=DEVICE) if mode == "single" else 2
    layer.eval().set_mode(mode, group)
    x = _input(shape, torch.float32, cl, offset=100.0).requires_grad_(True)
    before = (_launched("eval"), _launched("eval_backward"))
    y = layer(x)
    dy = _input(shape, torch.float32, cl, offset=0.0, seed=3)
    grads = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)
    assert (_launched("eval"), _launched("eval_backward")) == (before[0] + 1, before[1] + 1)
    x64 = x.detach().double().requires_grad_(True)
    w64 = layer.weight.detach().double().requires_grad_(True)
    b64 = layer.bias.detach().double().requires_grad_(True)
    if mode == "running":
        g = group
        want = ((x64 - layer.running_mean[g].double()[:, None, None])
                / torch.sqrt(layer.running_var[g].double()[:, None, None] + layer.eps)
                * w64[g][:, None, None] + b64[g][:, None, None])
    else:
        want = core.eval_forward(fn.xp, x64, w64, b64, axis=1, mode=mode,
                                 group=group if mode == "single" else 2, eps=layer.eps)
    _close(y, want, torch.float32, mode)
    assert y.stride() == x.stride()
    want_grads = torch.autograd.grad(want, (x64, w64, b64), dy.double())
    for name, got, ref in zip(("dx", "dweight", "dbias"), grads, want_grads):
        _close(got, ref, torch.float32, f"{mode} {name}")


@pytest.mark.parametrize("mode", ["batch", "single", "set", "running"])
def test_compile_fullgraph_keeps_the_custom_ops(mode):
    """torch.compile(fullgraph=True) traces the kernels' custom ops (fake tensors,
    registered autograd) in training and every evaluation mode: forward and gradients
    equal eager, and the compiled graph calls the kernels."""
    torch._dynamo.reset()
    layer = lt.LocalNorm2d(3, num_groups=2, track_running_stats=True, device=DEVICE)
    with torch.no_grad():
        layer.weight.normal_()
        layer.running_var.uniform_(0.5, 2.0)
    if mode == "batch":
        layer.train()
    else:
        layer.eval().set_mode(mode, 1)
    kind = "batch" if mode == "batch" else "eval"
    x = _input((6, 3, 4, 4), torch.float32, True).requires_grad_(True)
    eager = layer(x)
    (dx_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(layer, fullgraph=True,
                             backend="inductor" if DEVICE == "cuda" else "aot_eager")
    before = (_launched(kind), _launched(kind + "_backward"))
    y = compiled(x)
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    assert _launched(kind) > before[0], "the compiled graph did not call the kernels"
    assert _launched(kind + "_backward") > before[1], "nor their backward"
    torch.testing.assert_close(y, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_eager, rtol=1e-4, atol=1e-4)


def test_double_backward():
    """create_graph=True differentiates the core's plain forward (as the core's path)."""
    layer = lt.LocalNorm2d(2, num_groups=2, device=DEVICE).train()
    x = _input((4, 2, 3, 3), torch.float32, False).requires_grad_(True)
    (dx,) = torch.autograd.grad(layer(x).pow(3).sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.square().sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    w64, b64 = layer.weight.detach().double(), layer.bias.detach().double()
    y64 = core.batch_forward(fn.xp, x64, w64, b64, axis=1, num_groups=2,
                             partition="contiguous", eps=layer.eps)[0]
    (dx64,) = torch.autograd.grad(y64.pow(3).sum(), x64, create_graph=True)
    (ddx64,) = torch.autograd.grad(dx64.square().sum(), x64)
    _close(ddx, ddx64, torch.float32, "second derivative")


def test_no_affine_and_strided_views():
    """affine=False (a scale of one, a shift of zero), and inputs whose spatial axes do
    not collapse to one stride (a strided view: copied once, the result in x's shape)."""
    layer = lt.LocalNorm2d(3, num_groups=2, affine=False, device=DEVICE).train()
    base = _input((6, 3, 4, 10), torch.float32, False)
    x = base[:, :, :, :5].requires_grad_(True)
    assert _triton._ncs(x) is None
    dy = _input((6, 3, 4, 5), torch.float32, False, offset=0.0, seed=2)
    y = layer(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    x64 = x.detach().double().requires_grad_(True)
    ones = torch.ones(1, 3, dtype=torch.float64, device=DEVICE)
    y64 = core.batch_forward(fn.xp, x64, ones, 0 * ones, axis=1, num_groups=2,
                             partition="contiguous", eps=layer.eps)[0]
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    _close(y, y64, torch.float32, "y")
    _close(dx, dx64, torch.float32, "dx")


@pytest.mark.parametrize("mode", ["single", "set"])
def test_eval_without_affine(mode):
    """Evaluation of a layer without weight/bias (one shared row of ones and zeros): its
    input gradient equals the core's."""
    layer = lt.LocalNorm2d(3, num_groups=2, affine=False, device=DEVICE).eval()
    layer.set_mode(mode, 1)
    x = _input((5, 3, 3, 4), torch.float32, True).requires_grad_(True)
    dy = _input((5, 3, 3, 4), torch.float32, True, offset=0.0, seed=4)
    before = _launched("eval_backward")
    (dx,) = torch.autograd.grad(layer(x), x, dy)
    assert _launched("eval_backward") == before + 1
    x64 = x.detach().double().requires_grad_(True)
    ones = torch.ones(1, 3, dtype=torch.float64, device=DEVICE)
    y64 = core.eval_forward(fn.xp, x64, ones, 0 * ones, axis=1, mode=mode, group=0,
                            eps=layer.eps)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    _close(dx, dx64, torch.float32, "dx")
