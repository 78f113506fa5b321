"""The torch section: LocalNorm2d (each partition, NCHW and channels_last) and the core
functional against ``nn.BatchNorm2d`` and ``nn.GroupNorm``; whole-network training steps;
the test-time protocols; memory in training.

Memory on CPU: PyTorch's CPU allocator keeps no peak counter and ``tracemalloc`` does not
see tensor storage, so on CPU the figure is the bytes of activations saved for backward
(every tensor autograd keeps between forward and backward, parameters excluded, each
storage counted once), measured with ``torch.autograd.graph.saved_tensors_hooks``: the
part of training memory that a normalization layer changes. On CUDA the figure is
``torch.cuda.max_memory_allocated`` over one training step.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

import localnorm
import localnorm.torch as lt

from . import _report as R
from ._cases import (LAYER_TARGET, MNIST_CONVS, MNIST_DENSE, NETWORK_TARGET,
                     TORCH_CONTIGUOUS_TARGET, TORCH_STRIDED_TARGET, VGG_CFG, Context, NetCase,
                     guarded, section)
from ._timing import compare


def peak_bandwidth(device: torch.device) -> float | None:
    """The device's theoretical memory bandwidth in bytes/s (DDR: 2 transfers per clock),
    from its properties, or None where torch does not report them."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0


#: Passes over the activation a fused normalization needs at least: forward (and each
#: evaluation mode) reads x for the statistics, then reads x and writes y; the backward
#: reads x and dy for its reductions, then reads x and dy and writes dx.
_MIN_PASSES = {"forward": 3, "forward+backward": 8, "eval": 3}


def _add_bandwidth(rows: list[dict], op: str, nbytes, device: torch.device) -> None:
    """CUDA only: achieved bandwidth of each row (minimal traffic / median time) and its
    fraction of the device's peak. ``nbytes`` is the activation's size in bytes, or a
    function of the row's name (rows whose input is smaller, such as a ragged batch)."""
    if device.type != "cuda" or op not in _MIN_PASSES:
        return
    peak = peak_bandwidth(device)
    for r in rows:
        size = nbytes(r["name"]) if callable(nbytes) else nbytes
        achieved = _MIN_PASSES[op] * size / (r["median_ms"] * 1e-3)
        r["bandwidth_gbs"] = achieved / 1e9
        if peak:
            r["bandwidth_fraction"] = achieved / peak


def triton_rows(device: torch.device) -> str | None:
    """None where the fused Triton kernels run for this device (then every LocalNorm2d
    row is theirs, and rows suffixed "Triton off" time the same layer on the core's and
    native paths); else why the Triton rows are skipped."""
    from localnorm.torch import _triton

    if device.type != "cuda":
        return ("Triton rows skipped: the fused kernels run on CUDA only (on CPU the "
                "interpreter tests their correctness, not their speed)")
    if not _triton.AVAILABLE:
        return "Triton rows skipped: triton does not import here"
    return None


def _off(fn):
    """``fn`` run with the Triton kernels switched off (the "Triton off" rows)."""
    from localnorm.torch import _triton

    def call():
        with _triton.switched_off():
            return fn()
    return call


TRITON_OFF = ", Triton off"


def _sync_for(device: torch.device):
    if device.type == "cuda":
        return lambda out: torch.cuda.synchronize(device)
    return lambda out: None


# ----------------------------------------------------------------------------- layers

#: Layouts of the layer comparisons: every op runs in both, against BatchNorm2d on an
#: input of the same layout.
LAYOUTS = (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last))
#: The layer ops, in the order measured: training mode without and with the backward
#: pass, and evaluation (the "single" and "set" modes and BatchNorm with running
#: statistics, in one comparison).
LAYER_OPS = ("forward", "forward+backward", "eval")

BASE = "BatchNorm2d"
#: The ragged row (contiguous groups, N-1 samples: the array-API path of a last batch
#: that is not a multiple of K) and its own baseline, BatchNorm2d on the same N-1 samples.
RAGGED = "LocalNorm2d contiguous, ragged N-1"
RAGGED_BASE = "BatchNorm2d, N-1"


def _target(name: str, op: str) -> float | None:
    """The issue's target of a row: torch's forward+backward targets for the two
    partitions, 1.3x for every other LocalNorm2d op; none for baselines, GroupNorm, the
    core functional, the ragged batch and the "Triton off" rows (rows that explain, not
    promise)."""
    if not name.startswith("LocalNorm2d") or name == RAGGED or name.endswith(TRITON_OFF):
        return None
    if op == "forward+backward":
        return TORCH_STRIDED_TARGET if "strided" in name else TORCH_CONTIGUOUS_TARGET
    return LAYER_TARGET


def layer_comparisons(case, layout: str, device: torch.device, *, settings,
                      ops=LAYER_OPS) -> list[dict]:
    """The layer records of one input shape in one layout: each op in ``ops`` timed
    interleaved against ``nn.BatchNorm2d`` (batch statistics) on the same input in the
    same layout. Training ops: ``nn.GroupNorm``, both LocalNorm2d partitions, the ragged
    batch (against BatchNorm2d on the same N-1 samples) and, in NCHW, the core
    functional. Evaluation: LocalNorm2d in "single" (also with ``check_finite=False``,
    to show the eager NaN/Inf check's cost) and "set" mode, BatchNorm2d with running
    statistics and, in NCHW, the core functional."""
    sync = _sync_for(device)
    fmt = dict(LAYOUTS)[layout]
    n, c, h, k = case
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen).to(device).contiguous(memory_format=fmt)
    gy = torch.randn(n, c, h, h, generator=gen).to(device).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    # the ragged input is a fresh tensor of N-1 samples in the same layout, not a view
    xr = x.detach()[: n - 1].clone(memory_format=fmt).requires_grad_(True)
    gyr = gy[: n - 1].clone(memory_format=fmt)
    gname = f"GroupNorm({min(32, c)})"
    bn = nn.BatchNorm2d(c, track_running_stats=False).to(device)
    bn_eval = nn.BatchNorm2d(c).to(device).eval()
    gn = nn.GroupNorm(min(32, c), c).to(device)
    gamma = torch.ones(k, c, device=device, requires_grad=True)
    beta = torch.zeros(k, c, device=device, requires_grad=True)
    local = {f"LocalNorm2d {part}": lt.LocalNorm2d(c, num_groups=k, partition=part).to(device)
             for part in ("contiguous", "strided")}
    # Ghost BatchNorm against BatchNorm2d: the preset as users get it (K groups, strided,
    # running statistics updated in training; evaluation with them)
    ghost = lt.GhostBatchNorm2d(c, num_groups=k).to(device)

    def core(xx, mode="batch"):
        return localnorm.local_norm(xx, gamma, beta, axis=1, mode=mode, check_finite=False)

    def nbytes(name):
        return (n - 1 if name in (RAGGED, RAGGED_BASE) else n) * (x.numel() // n) * 4

    records = []
    for op in ops:
        if op in ("forward", "forward+backward"):
            # (callable, input, its parameters) of every candidate, training mode
            runs: dict[str, tuple] = {BASE: (bn, x, gy, list(bn.parameters())),
                                      gname: (gn, x, gy, list(gn.parameters()))}
            for name, m in local.items():
                runs[name] = (m.train(), x, gy, list(m.parameters()))
            runs["GhostBatchNorm2d"] = (ghost.train(), x, gy, list(ghost.parameters()))
            runs[RAGGED] = (local["LocalNorm2d contiguous"], xr, gyr,
                            list(local["LocalNorm2d contiguous"].parameters()))
            runs[RAGGED_BASE] = (bn, xr, gyr, list(bn.parameters()))
            if layout == "NCHW":
                runs["local_norm core"] = (core, x, gy, [gamma, beta])
            if triton_rows(device) is None:
                for name, m in local.items():
                    runs[name + TRITON_OFF] = (m, x, gy, list(m.parameters()))
            if op == "forward":
                fns = {name: (lambda f=f, xx=xx: f(xx)) for name, (f, xx, _, _) in runs.items()}
            else:
                fns = {name: (lambda f=f, xx=xx, g=g, p=p: torch.autograd.grad(f(xx), [xx] + p, g))
                       for name, (f, xx, g, p) in runs.items()}
            fns = {name: _off(f) if name.endswith(TRITON_OFF) else f for name, f in fns.items()}
            with torch.no_grad() if op == "forward" else contextlib.nullcontext():
                t = compare(fns, baseline=BASE, settings=settings, sync=sync)
        else:
            fns = {BASE: lambda: bn(x), "BatchNorm2d eval (running stats)": lambda: bn_eval(x)}
            ghost_eval = copy.deepcopy(ghost).eval()
            fns["GhostBatchNorm2d eval (running stats)"] = lambda: ghost_eval(x)
            for mode in ("single", "set"):
                ln = copy.deepcopy(local["LocalNorm2d contiguous"]).eval()
                lt.set_eval_mode(ln, mode, group=0)
                fns[f"LocalNorm2d {mode}"] = lambda m=ln: m(x)
                if mode == "single" and hasattr(ln, "check_finite"):
                    # the eager NaN/Inf check of evaluation (docs/spec.md), switched off
                    unchecked = copy.deepcopy(ln)
                    unchecked.check_finite = False
                    fns["LocalNorm2d single, check_finite=False"] = lambda m=unchecked: m(x)
            if layout == "NCHW":
                for mode in ("single", "set"):
                    fns[f"local_norm core {mode}"] = lambda mode=mode: core(x, mode)
            if triton_rows(device) is None:
                for mode in ("single", "set"):
                    fns[f"LocalNorm2d {mode}{TRITON_OFF}"] = _off(fns[f"LocalNorm2d {mode}"])
            with torch.no_grad():
                t = compare(fns, baseline=BASE, settings=settings, sync=sync)
        rows = [R.row(t, name, target=_target(name, op),
                      baseline=RAGGED_BASE if name == RAGGED else None)
                for name in fns if name not in (BASE, RAGGED_BASE)]
        _add_bandwidth(rows, op, nbytes, device)
        records.append(R.timing_record("layer", case.label, t, rows, op=op, layout=layout))
    return records


def _layer_records(ctx: Context, device: torch.device) -> list[dict]:
    cases = ((ctx.issue_case,) if ctx.issue_case else ()) + tuple(ctx.layer_cases)
    records = []
    for case in cases:
        for layout, _ in LAYOUTS:
            records += layer_comparisons(case, layout, device, settings=ctx.settings)
    return records


# ----------------------------------------------------------------------------- networks

def mnist_net(classes: int = 10) -> nn.Module:
    """The paper's MNIST network (Input-16c-16c-32c-32c-512d-1024d-output) with BatchNorm."""
    layers: list[nn.Module] = []
    cin, size = 1, 28
    for v in MNIST_CONVS:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            size //= 2
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    layers.append(nn.Flatten())
    fin = cin * size * size
    for d in MNIST_DENSE:
        layers += [nn.Linear(fin, d, bias=False), nn.BatchNorm1d(d), nn.ReLU()]
        fin = d
    layers.append(nn.Linear(fin, classes))
    return nn.Sequential(*layers)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


def resnet20(classes: int = 10) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016: 3 stages of 3 basic blocks, 16/32/64 channels)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for i, cout in enumerate((16, 32, 64)):
        for j in range(3):
            layers.append(_Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def vgg(classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-style network (:data:`benchmarks._cases.VGG_CFG`) with BatchNorm."""
    layers: list[nn.Module] = []
    cin = in_channels
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


BUILDERS = {"mnist": mnist_net, "resnet20": resnet20, "vgg11-half": vgg}


def _pair(net: NetCase, device: torch.device, partition: str = "contiguous"):
    """A BatchNorm network and its LocalNorm conversion (same weights), on ``device``."""
    torch.manual_seed(0)
    bn = BUILDERS[net.name](net.classes).to(device)
    ln = lt.convert_batchnorm(copy.deepcopy(bn), num_groups=net.k,
                              partition=partition).to(device)
    return bn, ln


def _data(net: NetCase, device: torch.device, layout=torch.contiguous_format):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(net.batch, net.channels, net.size, net.size, generator=gen)
    y = torch.randint(0, net.classes, (net.batch,), generator=gen)
    return x.to(device).contiguous(memory_format=layout), y.to(device)


def _train_step(model: nn.Module, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _network_records(ctx: Context, device: torch.device) -> list[dict]:
    """A training step (forward, cross-entropy, backward, SGD with momentum) of each
    network, BatchNorm against its LocalNorm conversion with either partition."""
    sync = _sync_for(device)
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, device)
        _, ln_strided = _pair(net, device, "strided")
        x, y = _data(net, device)
        fns = {"BatchNorm": _train_step(bn, x, y), "LocalNorm contiguous": _train_step(ln, x, y),
               "LocalNorm strided": _train_step(ln_strided, x, y)}
        if triton_rows(device) is None:
            fns["LocalNorm contiguous" + TRITON_OFF] = _off(_train_step(copy.deepcopy(ln), x, y))
            fns["LocalNorm strided" + TRITON_OFF] = _off(
                _train_step(copy.deepcopy(ln_strided), x, y))
        t = compare(fns, baseline="BatchNorm", settings=ctx.net_settings, sync=sync)
        rows = [R.row(t, name, target=NETWORK_TARGET) for name in fns if name != "BatchNorm"]
        records.append(R.timing_record("network", net.label, t, rows, op="training step",
                                       layout="NCHW"))
    return records


def _protocol_records(ctx: Context, device: torch.device) -> list[dict]:
    sync = _sync_for(device)
    net = ctx.protocol_net
    bn, ln = _pair(net, device)
    bn.eval()
    ln.eval()
    x, _ = _data(net, device)
    gen = torch.Generator(device=device).manual_seed(0)
    fns = {
        "BatchNorm inference": lambda: bn(x),
        "BATCH": lambda: lt.predict(ln, x, protocol="batch").scores,
        "SINGLE": lambda: lt.predict(ln, x, protocol="single", generator=gen).scores,
        "SINGLE-VOTING": lambda: lt.predict(ln, x, protocol="single-voting").scores,
    }
    with torch.no_grad():
        t = compare(fns, baseline="BatchNorm inference", settings=ctx.net_settings, sync=sync)
    rows = [R.row(t, "BATCH"), R.row(t, "SINGLE"),
            R.row(t, "SINGLE-VOTING", baseline="SINGLE", scale=float(net.k))]
    return [R.timing_record("protocol", f"{net.label}, {net.batch} test images", t, rows,
                            op="evaluation", layout="NCHW")]


# ----------------------------------------------------------------------------- memory

def saved_activation_bytes(step_forward, parameters=()) -> int:
    """Bytes of the tensors autograd saves for backward during ``step_forward()``, each
    storage once, storages of ``parameters`` excluded (autograd often saves views of
    them, such as a transposed weight, which ``isinstance(t, Parameter)`` misses)."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step_forward()
    del out
    return sum(seen.values())


def _memory_records(ctx: Context, device: torch.device) -> list[dict]:
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, device)
        _, ln_strided = _pair(net, device, "strided")
        x, y = _data(net, device)
        models = (("BatchNorm", bn), ("LocalNorm contiguous", ln),
                  ("LocalNorm strided", ln_strided))
        figures = {}
        if device.type == "cuda":
            for name, model in models:
                step = _train_step(model, x, y)
                step()
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                step()
                torch.cuda.synchronize(device)
                figures[name] = torch.cuda.max_memory_allocated(device) - base
            method = "torch.cuda.max_memory_allocated over one training step, above the "\
                     "memory held before it"
        else:
            for name, model in models:
                model.train()
                figures[name] = saved_activation_bytes(
                    lambda m=model: F.cross_entropy(m(x), y), list(model.parameters()))
            method = "bytes saved for backward (saved_tensors_hooks; CPU has no peak counter)"
        records.append(R.memory_record(net.label, "BatchNorm", figures.pop("BatchNorm"),
                                       figures, method=method, layout="NCHW"))
    return records


# ----------------------------------------------------------------------------- section

def run(ctx: Context) -> dict:
    device = torch.device(ctx.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sec = section("torch", "torch", device=ctx.device, versions={"torch": torch.__version__})
        sec.update(status="skipped", reason="device 'cuda' requested but torch sees no CUDA device")
        return sec
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    sec = section("torch", "torch", device=dev_name,
                  versions={"torch": torch.__version__, "threads": torch.get_num_threads()})
    sec["notes"] += [
        "Baselines: nn.BatchNorm2d(track_running_stats=False) (batch statistics, as "
        "LocalNorm2d's default) and nn.GroupNorm(min(32, C), C), on the same input in the "
        "same layout. The ragged row runs contiguous groups on N-1 samples (not a multiple "
        "of K: the array-API path) against BatchNorm2d on the same N-1 samples. The core "
        "row is localnorm.local_norm(check_finite=False) on torch tensors, the array-API "
        "path.",
        "Networks: BatchNorm models converted with localnorm.torch.convert_batchnorm (each "
        "partition), one SGD step (momentum 0.9) on random data per call.",
        "Memory on CPU: bytes of the tensors autograd saves for backward in one forward "
        "pass (saved_tensors_hooks, each storage once, parameters excluded), since the CPU "
        "allocator keeps no peak counter; transient buffers (the contiguous partition's "
        "layout copies) are not in this figure. On CUDA: torch.cuda.max_memory_allocated.",
        triton_rows(device) or "On CUDA every LocalNorm row runs the fused Triton kernels "
        "(localnorm.torch._triton); rows ending in 'Triton off' time the same layer with "
        "them switched off (the core's and native paths: the figures before issue 14).",
    ]
    if device.type != "cuda":
        sec["notes"].append(
            "Achieved memory bandwidth (a fraction of the device's peak, from its memory clock "
            "and bus width) is reported on CUDA only: torch gives no CPU's peak bandwidth.")
    parts = {"layer": _layer_records, "network": _network_records,
             "protocol": _protocol_records, "memory": _memory_records}
    for kind, fn in parts.items():
        if kind in ctx.kinds:
            guarded(sec, kind, lambda fn=fn: fn(ctx, device))
    return sec
