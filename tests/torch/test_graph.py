"""Graph tooling: torch.compile(fullgraph=True) in every mode, ONNX export of a model in
"single" mode checked in onnxruntime, torch.func.functional_call and vmap.

Compilation is slow on 2 CPU cores, so the default run checks every mode with Dynamo's
``aot_eager`` backend (fullgraph=True still fails on any graph break; AOTAutograd traces
the backward too) and one representative case with Inductor; the Inductor matrix is
``@pytest.mark.slow``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.func import functional_call, stack_module_state, vmap  # noqa: E402
from torch_models import requires_cuda, small_net  # noqa: E402

import localnorm.torch as lt  # noqa: E402

# (mode, layer kwargs, training, batch): every mode, both partitions, a ragged batch,
# running statistics in training and evaluation.
CASES = [
    ("batch", {}, True, 8),
    ("batch", {"partition": "strided"}, True, 8),
    ("batch", {}, True, 10),
    ("batch", {"partition": "strided"}, True, 10),
    ("batch", {"track_running_stats": True}, True, 8),
    ("batch", {}, False, 8),
    ("single", {}, False, 3),
    ("set", {}, False, 3),
    ("running", {"track_running_stats": True}, False, 3),
]


def _ids(case):
    mode, kw, train, n = case
    return f"{mode}-{'train' if train else 'eval'}-n{n}-" + "-".join(f"{k}" for k in kw)


def _check_compiled(case, backend, channels_last=False, device="cpu"):
    mode, kw, train, n = case
    net = small_net(**kw).to(device).train(train)
    if not train:
        group = torch.arange(n, device=device) % 4 if mode == "single" else 2
        lt.set_eval_mode(net, mode, group)
    x = torch.randn(n, 3, 6, 6, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend=backend)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dynamo's notes on array-api-compat's lru_cache
        y = compiled(x)
        params = list(net.parameters())
        grads = torch.autograd.grad(y.square().sum(), params) if train else ()
    after_compiled = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    ref = net(x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    for k, v in net.state_dict().items():  # running statistics updated the same way
        torch.testing.assert_close(after_compiled[k], v, atol=1e-6, rtol=1e-6)
    if train:
        ref_grads = torch.autograd.grad(ref.square().sum(), params)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_compile_fullgraph_every_mode(case):
    _check_compiled(case, "aot_eager")


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=_ids)
def test_compile_fullgraph_channels_last(case):
    _check_compiled(case, "aot_eager", channels_last=True)


@pytest.mark.parametrize("partition", ["contiguous", "strided"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_compile_fullgraph_dynamic_batch(partition, channels_last):
    """One compiled program for every batch size: with ``dynamic=True`` (and Dynamo's
    automatic dynamic shapes once a second batch size arrives) the batch size is a
    symbol, so the group layout is traced in namespace arithmetic, not NumPy. Even,
    ragged and prime batch sizes equal the eager layer, outputs, gradients and running
    statistics; a batch with fewer samples than groups is refused when traced."""
    torch.manual_seed(0)
    net = small_net(partition=partition, track_running_stats=True).train()
    eager = small_net(partition=partition, track_running_stats=True).train()
    eager.load_state_dict(net.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (8, 10, 13, 16):
        x = torch.randn(n, 3, 6, 6)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = compiled(x)
            grads = torch.autograd.grad(y.square().sum(), list(net.parameters()))
        ref = eager(x)
        ref_grads = torch.autograd.grad(ref.square().sum(), list(eager.parameters()))
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
        for (k, v), r in zip(net.state_dict().items(), eager.state_dict().values()):
            torch.testing.assert_close(v, r, atol=1e-6, rtol=1e-6, msg=k)
    with pytest.raises(Exception, match="at least 4 samples"):
        compiled(torch.randn(3, 3, 6, 6))


def test_compile_fullgraph_dynamic_batch_ghost():
    """Ghost BatchNorm counts K = N // virtual_batch_size per batch: under a dynamic batch
    size K is traced with it, and outputs and the shared running statistics equal the
    eager layer's at every batch size."""
    compiled_layer = lt.GhostBatchNorm2d(3, virtual_batch_size=4).train()
    eager = lt.GhostBatchNorm2d(3, virtual_batch_size=4).train()
    torch._dynamo.reset()
    compiled = torch.compile(compiled_layer, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (8, 10, 13, 16, 3):
        x = torch.randn(n, 3, 4, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = compiled(x)
        torch.testing.assert_close(y, eager(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(compiled_layer.running_var, eager.running_var)


def test_export_with_a_dynamic_batch():
    """``torch.export`` with a symbolic batch size: one program runs even, ragged and
    prime batches with the eager layer's result."""
    torch.manual_seed(0)
    net = small_net().eval()
    lt.set_eval_mode(net, "batch")
    batch = torch.export.Dim("batch", min=4, max=1024)
    program = torch.export.export(net, (torch.randn(8, 3, 6, 6),),
                                  dynamic_shapes=({0: batch},))
    for n in (8, 10, 13, 16):
        x = torch.randn(n, 3, 6, 6)
        torch.testing.assert_close(program.module()(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_export_ghost_training_with_a_dynamic_batch(partition):
    """A Ghost BatchNorm training step exported with a symbolic batch size counts K =
    max(1, N // virtual_batch_size) groups along the batch axis when it runs: one program
    gives the eager layer's output, input gradient and running statistics for even,
    ragged and prime batches (before, the core found no per-group sum for a symbolic K).
    The batch dimension's minimum is 2 * virtual_batch_size, so that K >= 2 (torch
    specializes a size that may be 1)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                              lt.GhostBatchNorm2d(4, virtual_batch_size=4, partition=partition))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1.0, 1.0)
    eager = copy.deepcopy(net)
    batch = torch.export.Dim("batch", min=8, max=1024)
    program = torch.export.export(net, (torch.randn(16, 3, 8, 8),),
                                  dynamic_shapes=({0: batch},)).module()
    for n in (8, 13, 16, 23):
        x = torch.randn(n, 3, 8, 8)
        xe, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yp = eager(xe), program(xp)
        torch.testing.assert_close(yp, ye, atol=1e-5, rtol=1e-5)
        (ye * torch.arange(n).view(n, 1, 1, 1)).sum().backward()
        (yp * torch.arange(n).view(n, 1, 1, 1)).sum().backward()
        torch.testing.assert_close(xp.grad, xe.grad, atol=1e-4, rtol=1e-4)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(program.state_dict()["1." + name],
                                       getattr(eager[1], name), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode, kw", [
    ("single", {}), ("set", {}), ("running", {"track_running_stats": True}),
])
def test_compile_fullgraph_random_groups(mode, kw):
    """group=None compiles (drawn with torch.randint on the input's device), and the
    compiled model still draws one group per image (single) or per call (set, running)
    shared by both layers."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        lt.LocalNorm2d(3, 4, **kw), torch.nn.Tanh(), lt.LocalNorm2d(3, 4, **kw)
    )
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.normal_()
            if layer.track_running_stats:
                layer.running_mean.normal_()
    net.eval()
    x = torch.randn(8, 3, 4, 4)
    with torch.no_grad():
        fixed = []
        for g in range(4):
            with lt.eval_mode(net, mode, g):
                fixed.append(net(x))
        fixed = torch.stack(fixed)
        lt.set_eval_mode(net, mode, None)
        torch._dynamo.reset()
        compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs = [compiled(x) for _ in range(6)]
    for y in outs:
        match = (y[None] - fixed).abs().flatten(2).amax(-1) < 1e-5  # (K, N)
        if mode != "single":
            match = match.all(1, keepdim=True).expand_as(match)
        assert match.any(0).all()
    assert len({tuple(m.tolist()) for m in (
        ((y[None] - fixed).abs().flatten(2).amax(-1) < 1e-5).float().argmax(0) for y in outs
    )}) > 1  # random


def test_export_random_groups_with_a_dynamic_batch():
    """set_eval_mode(..., "single", group=None) exports with a symbolic batch size: one
    draw per call, a group along the batch axis per image, shared by both layers (the
    draw was keyed by the batch size, which a symbol cannot hash: a raw TypeError)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(lt.LocalNorm2d(3, 4), torch.nn.Tanh(), lt.LocalNorm2d(3, 4))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.normal_()
    net.eval()
    lt.set_eval_mode(net, "single", None)
    program = torch.export.export(
        net, (torch.randn(6, 3, 4, 4),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},)).module()
    x = torch.randn(9, 3, 4, 4)
    with torch.no_grad():
        fixed = []
        for g in range(4):
            with lt.eval_mode(net, "single", g):
                fixed.append(net(x))
        y = program(x)
    distance = torch.stack([(y - f).abs().flatten(1).amax(1) for f in fixed])  # (K, N)
    assert (distance.amin(0) < 1e-5).all()


def test_compile_inductor_representative():
    _check_compiled(("batch", {"partition": "strided"}, True, 8), "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("channels_last", [False, True])
def test_compile_inductor_matrix(case, channels_last):
    _check_compiled(case, "inductor", channels_last)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_compile_inductor_cuda(case):
    _check_compiled(case, "inductor", device="cuda")


def test_compile_under_autocast():
    net = small_net()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = compiled(x)
        ref = net(x)
    assert y.dtype == ref.dtype == torch.bfloat16
    # The traced graph runs the fused F.batch_norm path, eager CPU the reduction path:
    # two correct float32 computations, each rounded to bfloat16 after the layer, so the
    # outputs may differ by an ulp of bfloat16 at the outputs' scale (an absolute error;
    # near-zero outputs have no meaningful relative error at this precision).
    ulp = torch.finfo(torch.bfloat16).eps * ref.abs().max().item()
    torch.testing.assert_close(y, ref, rtol=torch.finfo(torch.bfloat16).eps, atol=ulp)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_single_mode_runs_in_onnxruntime(tmp_path, dynamo):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    net = small_net().eval()
    lt.set_eval_mode(net, "single", 2)
    x = torch.randn(3, 3, 6, 6)
    path = str(tmp_path / "model.onnx")
    kwargs = (
        {"dynamic_shapes": ({0: torch.export.Dim("n")},)} if dynamo
        else {"dynamic_axes": {"x": {0: "n"}}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), path, dynamo=dynamo, input_names=["x"],
                          output_names=["y"], **kwargs)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    # plain reductions (the core's sums), not a training-mode BatchNormalization node
    assert "BatchNormalization" not in ops and ops & {"ReduceMean", "ReduceSum"}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (x, torch.randn(1, 3, 6, 6), torch.randn(5, 3, 6, 6)):
        (y,) = session.run(None, {"x": batch.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, net(batch).numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("partition", ["strided", "contiguous"])
def test_onnx_ghost_batch_mode_with_a_dynamic_batch_runs_in_onnxruntime(tmp_path, partition):
    """A Ghost BatchNorm evaluated in "batch" mode (its default without running
    statistics) counts K = N // virtual_batch_size groups along the batch axis when the
    exported program runs; its per-group sums become ONNX ScatterND nodes, whose indices
    must be int64 (before, int32 ids made onnxruntime refuse the model as invalid)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        lt.GhostBatchNorm2d(4, virtual_batch_size=2, partition=partition,
                            track_running_stats=False)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.normal_()
    path = str(tmp_path / "ghost.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(6, 3, 4, 4),), path, dynamo=True,
                          input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("n", min=4, max=512)},))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n in (4, 9, 12):  # K = 2, 4 (ragged), 6
        x = torch.randn(n, 3, 4, 4)
        (y,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, net(x).numpy(), atol=1e-5, rtol=1e-4)


def test_functional_call_and_vmap_over_ensembles():
    members = [small_net() for _ in range(3)]
    for i, m in enumerate(members):  # distinct members
        with torch.no_grad():
            m[1].weight.mul_(i + 1)
    params, buffers = stack_module_state(members)
    base = small_net()

    def run(p, b, x):
        return functional_call(base, (p, b), (x,))

    x = torch.randn(8, 3, 6, 6)
    out = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in members]))
    xs = torch.randn(3, 10, 3, 6, 6)  # ragged batches per member
    out = vmap(run, in_dims=(0, 0, 0))(params, buffers, xs)
    torch.testing.assert_close(
        out, torch.stack([m(a) for m, a in zip(members, xs)]), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("mode", ["batch", "single", "set"])
def test_vmap_over_batches_every_mode(mode):
    layer = lt.LocalNorm2d(3, 2, partition="strided")
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
    if mode != "batch":
        layer.eval().set_mode(mode, 1)
    params = dict(layer.named_parameters())
    xs = torch.randn(4, 6, 3, 3, 3)
    out = vmap(lambda x: functional_call(layer, params, (x,)))(xs)
    torch.testing.assert_close(out, torch.stack([layer(x) for x in xs]))
    grads = torch.func.grad(lambda p: functional_call(layer, p, (xs[0],)).square().sum())(params)
    assert grads["weight"].shape == (2, 3) and torch.isfinite(grads["weight"]).all()


@pytest.mark.parametrize("layer", [
    lambda: lt.LocalNorm2d(3, 2, track_running_stats=True),
    lambda: lt.LocalNorm2d(3, 2, partition="strided", track_running_stats=True),
    lambda: lt.GhostBatchNorm2d(3, virtual_batch_size=2),
], ids=["contiguous", "strided", "ghost"])
def test_vmap_training_with_running_statistics(layer):
    """vmap of a training step with running statistics: with the buffers mapped too (an
    ensemble from stack_module_state) each member updates its own, as eagerly; with the
    buffers left unmapped one buffer cannot take every mapped batch's update, which is
    refused with the remedy (before: a raw in-place error from inside the torch glue,
    or BatchNorm's, whose functorch patch does not apply to these layers)."""
    torch.manual_seed(0)
    members = [layer() for _ in range(3)]
    for i, m in enumerate(members):
        with torch.no_grad():
            m.weight.mul_(i + 1)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0])
    x = torch.randn(6, 3, 2, 2)
    out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)),
               in_dims=(0, 0, None))(params, buffers, x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in members]))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        expected = torch.stack([getattr(m, name) for m in members])
        torch.testing.assert_close(buffers[name], expected)
    with pytest.raises(ValueError, match="stack_module_state") as info:
        vmap(base)(torch.randn(2, 6, 3, 2, 2))
    assert "track_running_stats=False" in str(info.value)


def test_compiled_evaluation_skips_the_value_check():
    """The NaN/Inf check reads values, which a graph cannot: under torch.compile it is
    skipped (no graph break with fullgraph=True), and NaN propagates as in BatchNorm."""
    net = small_net().eval()
    lt.set_eval_mode(net, "single", 1)
    x = torch.randn(3, 3, 6, 6)
    x[0, 0, 0, 0] = float("nan")
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = compiled(x)
    assert torch.isnan(y[0]).all() and torch.isfinite(y[1:]).all()


@pytest.mark.parametrize("kw", [{}, {"partition": "strided"}])
@pytest.mark.parametrize("n", [8, 10])
def test_jit_trace_training_updates_running_statistics(kw, n):
    """torch.jit.trace of a training model with running statistics: the group sizes are
    traced as tensors, and the traced program updates the statistics as eager does."""
    net = small_net(track_running_stats=True, **kw).train()
    x = torch.randn(n, 3, 6, 6)
    state = copy.deepcopy(net.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on tensor-to-int conversions
        traced = torch.jit.trace(net, (x,), check_trace=False)
    net.load_state_dict(state)
    y = traced(x)
    traced_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    torch.testing.assert_close(y, net(x), atol=1e-5, rtol=1e-5)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(traced_state[k], v, atol=1e-6, rtol=1e-6)
    assert not torch.equal(traced_state["1.running_var"], state["1.running_var"])


@pytest.mark.parametrize("tool", ["compile", "export", "trace"])
@pytest.mark.parametrize("layer", [
    lambda: lt.GhostBatchNorm2d(3, virtual_batch_size=2, momentum=None),  # fused batch_norm
    lambda: lt.LocalNorm2d(3, 2, track_running_stats=True, momentum=None),  # the core's math
], ids=["ghost-strided", "contiguous"])
def test_cumulative_average_running_statistics_under_every_tracer(tool, layer):
    """momentum=None (the cumulative moving average, 1 / num_batches_tracked) in a traced
    training step: the step count is read when the program runs. Before, float() of it
    was baked into a torch.jit.trace program (silently wrong statistics from the second
    step) and refused by torch.export and torch.compile(fullgraph=True) on the fused
    batch_norm path as a data-dependent value (nn.BatchNorm2d fails the same ways)."""
    torch.manual_seed(0)
    net = layer()
    eager = copy.deepcopy(net)
    x0 = torch.randn(8, 3, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tool == "compile":
            torch._dynamo.reset()
            program = torch.compile(net, fullgraph=True, backend="aot_eager")
        elif tool == "export":
            program = torch.export.export(net, (x0,)).module()
        else:
            program = torch.jit.trace(copy.deepcopy(net), (x0,), check_trace=False)
            program.load_state_dict(net.state_dict())  # tracing ran one step
        state = program if tool != "compile" else net
        for step in range(3):
            x = torch.randn(8, 3, 2, 2)
            torch.testing.assert_close(program(x), eager(x), atol=1e-5, rtol=1e-5)
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                torch.testing.assert_close(state.state_dict()[name], getattr(eager, name),
                                           atol=1e-6, rtol=1e-5, msg=f"{name}, step {step}")


@pytest.mark.parametrize("layer", [
    lambda: lt.LocalNorm1d(2, num_groups=2),  # the autograd Function (weight needs grad)
    lambda: lt.LocalNorm2d(3, num_groups=4, partition="strided", track_running_stats=True),
    lambda: lt.GhostBatchNorm1d(2, virtual_batch_size=2, track_running_stats=False),
    lambda: lt.LocalNorm2d(3, num_groups=2, affine=False),
], ids=["contiguous", "strided-running", "ghost", "no-affine"])
def test_eager_forward_mode_ad_equals_the_jacobian(layer):
    """torch.autograd.forward_ad (eager forward mode, as BatchNorm supports): the tangent
    of the output is the Jacobian times the tangent of the input, on a ragged batch."""
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    net = layer().double().train()
    x = torch.randn((7, 2) if isinstance(net, lt.LocalNorm1d) else (7, 3, 2, 2),
                    dtype=torch.float64)
    v = torch.randn_like(x)
    state = copy.deepcopy(net.state_dict())
    jac = torch.autograd.functional.jacobian(net, x)
    net.load_state_dict(state)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(net(fwAD.make_dual(x, v))).tangent
    torch.testing.assert_close(tangent, torch.tensordot(jac, v, dims=v.ndim))
