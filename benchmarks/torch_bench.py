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

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import localnorm

from . import _report as R
from ._cases import (LAYER_TARGET, MNIST_CONVS, MNIST_DENSE, NETWORK_TARGET,
                     TORCH_CONTIGUOUS_TARGET, TORCH_STRIDED_TARGET, VGG_CFG, Context, NetCase,
                     guarded, section)
from ._timing import compare


def _adapter():
    """The torch adapter, or None while it is not importable (the core rows still run)."""
    try:
        import localnorm.torch as lt

        lt.LocalNorm2d  # noqa: B018 - the adapter module exists but may still be a stub
        return lt
    except (ImportError, AttributeError):
        return None


def peak_bandwidth(device: torch.device) -> float | None:
    """The device's theoretical memory bandwidth in bytes/s (DDR: 2 transfers per clock),
    from its properties, or None where torch does not report them."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0


#: Passes over the activation a fused normalization needs at least: forward reads x for
#: the statistics, then reads x and writes y; the backward reads x and dy for its
#: reductions, then reads x and dy and writes dx.
_MIN_PASSES = {"forward": 3, "forward+backward": 8}


def _add_bandwidth(rows: list[dict], op: str, nbytes: int, device: torch.device) -> None:
    """CUDA only: achieved bandwidth of each row (minimal traffic / median time) and its
    fraction of the device's peak."""
    if device.type != "cuda" or op not in _MIN_PASSES:
        return
    peak = peak_bandwidth(device)
    for r in rows:
        achieved = _MIN_PASSES[op] * nbytes / (r["median_ms"] * 1e-3)
        r["bandwidth_gbs"] = achieved / 1e9
        if peak:
            r["bandwidth_fraction"] = achieved / peak


def _sync_for(device: torch.device):
    if device.type == "cuda":
        return lambda out: torch.cuda.synchronize(device)
    return lambda out: None


# ----------------------------------------------------------------------------- layers

def _layer_records(ctx: Context, device: torch.device, lt) -> list[dict]:
    sync = _sync_for(device)
    records = []
    for case in ctx.layer_cases:
        n, c, h, k = case
        gen = torch.Generator(device="cpu").manual_seed(0)
        x0 = torch.randn(n, c, h, h, generator=gen).to(device)
        gy0 = torch.randn(n, c, h, h, generator=gen).to(device)
        layouts = [("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)]
        for layout, fmt in layouts:
            x = x0.contiguous(memory_format=fmt).requires_grad_(True)
            gy = gy0.contiguous(memory_format=fmt)
            bn = nn.BatchNorm2d(c, track_running_stats=False).to(device)
            gn = nn.GroupNorm(min(32, c), c).to(device)
            gamma = torch.ones(k, c, device=device, requires_grad=True)
            beta = torch.zeros(k, c, device=device, requires_grad=True)
            layers: dict[str, Any] = {"BatchNorm2d": bn, f"GroupNorm({min(32, c)})": gn}
            if lt is not None:
                for part in ("contiguous", "strided"):
                    layers[f"LocalNorm2d {part}"] = lt.LocalNorm2d(
                        c, num_groups=k, partition=part).to(device)

            def core(mode="batch", xx=x):
                return localnorm.local_norm(xx, gamma, beta, axis=1, mode=mode,
                                            check_finite=False)

            # forward in training mode (batch statistics), no autograd graph
            fwd = {name: (lambda m=m: m(x)) for name, m in layers.items()}
            fwd["local_norm core"] = core
            with torch.no_grad():
                t = compare(fwd, baseline="BatchNorm2d", settings=ctx.settings, sync=sync)
            rows = _layer_rows(t, fwd, "forward")
            _add_bandwidth(rows, "forward", x.numel() * x.element_size(), device)
            records.append(R.timing_record("layer", case.label, t, rows, op="forward",
                                           layout=layout))

            # forward + backward: gradients of x and of the affine parameters
            def fb(fn, params):
                inputs = [x] + list(params)
                return lambda: torch.autograd.grad(fn(), inputs, gy)

            fwbw = {name: fb(lambda m=m: m(x), m.parameters()) for name, m in layers.items()}
            fwbw["local_norm core"] = fb(core, (gamma, beta))
            t = compare(fwbw, baseline="BatchNorm2d", settings=ctx.settings, sync=sync)
            rows = _layer_rows(t, fwbw, "forward+backward")
            _add_bandwidth(rows, "forward+backward", x.numel() * x.element_size(), device)
            records.append(R.timing_record("layer", case.label, t, rows, op="forward+backward",
                                           layout=layout))

            # evaluation: "single" and "set" against BatchNorm with batch statistics
            if layout != "NCHW" and not ctx.all_layouts:
                continue
            for mode in ("single", "set"):
                ev: dict[str, Any] = {"BatchNorm2d": lambda: bn(x),
                                      f"GroupNorm({min(32, c)})": lambda: gn(x)}
                bn_eval = nn.BatchNorm2d(c).to(device).eval()
                ev["BatchNorm2d eval (running stats)"] = lambda m=bn_eval: m(x)
                if lt is not None:
                    ln = layers["LocalNorm2d contiguous"]
                    ln.eval()
                    lt.set_eval_mode(ln, mode, group=0)
                    ev[f"LocalNorm2d {mode}"] = lambda m=ln: m(x)
                ev[f"local_norm core {mode}"] = lambda mode=mode: core(mode)
                with torch.no_grad():
                    t = compare(ev, baseline="BatchNorm2d", settings=ctx.settings, sync=sync)
                rows = [R.row(t, name, target=LAYER_TARGET if name.startswith("LocalNorm") else None)
                        for name in ev if name != "BatchNorm2d"]
                records.append(R.timing_record("layer", case.label, t, rows, op=f"eval {mode}",
                                               layout=layout))
                if lt is not None:
                    layers["LocalNorm2d contiguous"].train()
                    lt.set_eval_mode(layers["LocalNorm2d contiguous"], "batch")
    return records


def _layer_rows(t, fns, op):
    rows = []
    for name in fns:
        if name == "BatchNorm2d":
            continue
        target = None
        if name.startswith("LocalNorm2d"):
            if op == "forward+backward":
                target = TORCH_STRIDED_TARGET if "strided" in name else TORCH_CONTIGUOUS_TARGET
            else:
                target = LAYER_TARGET
        rows.append(R.row(t, name, target=target))
    return rows


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


def _pair(net: NetCase, device: torch.device, lt):
    """A BatchNorm network and its LocalNorm conversion (same weights), on ``device``."""
    torch.manual_seed(0)
    bn = BUILDERS[net.name](net.classes).to(device)
    ln = lt.convert_batchnorm(copy.deepcopy(bn), num_groups=net.k).to(device)
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


def _network_records(ctx: Context, device: torch.device, lt) -> list[dict]:
    sync = _sync_for(device)
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, device, lt)
        x, y = _data(net, device)
        fns = {"BatchNorm": _train_step(bn, x, y), "LocalNorm": _train_step(ln, x, y)}
        t = compare(fns, baseline="BatchNorm", settings=ctx.settings, sync=sync)
        rows = [R.row(t, "LocalNorm", target=NETWORK_TARGET)]
        records.append(R.timing_record("network", net.label, t, rows, op="training step",
                                       layout="NCHW"))
    return records


def _protocol_records(ctx: Context, device: torch.device, lt) -> list[dict]:
    sync = _sync_for(device)
    net = ctx.protocol_net
    bn, ln = _pair(net, device, lt)
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
        t = compare(fns, baseline="BatchNorm inference", settings=ctx.settings, sync=sync)
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


def _memory_records(ctx: Context, device: torch.device, lt) -> list[dict]:
    records = []
    for net in ctx.networks:
        bn, ln = _pair(net, device, lt)
        x, y = _data(net, device)
        if device.type == "cuda":
            figures = {}
            for name, model in (("BatchNorm", bn), ("LocalNorm", ln)):
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
            figures = {}
            for name, model in (("BatchNorm", bn), ("LocalNorm", ln)):
                model.train()
                figures[name] = saved_activation_bytes(
                    lambda m=model: F.cross_entropy(m(x), y), list(model.parameters()))
            method = "bytes saved for backward (saved_tensors_hooks; CPU has no peak counter)"
        records.append(R.memory_record(net.label, "BatchNorm", figures["BatchNorm"],
                                       {"LocalNorm": figures["LocalNorm"]}, method=method))
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
    lt = _adapter()
    if lt is None:
        sec["notes"].append("localnorm.torch is not available yet: only the core functional "
                            "(localnorm.local_norm on torch tensors) is measured.")
    sec["notes"].append("Baselines: nn.BatchNorm2d(track_running_stats=False) (batch statistics, "
                        "as LocalNorm2d's default) and nn.GroupNorm(min(32, C), C). The core row "
                        "is localnorm.local_norm(check_finite=False), the array-API path.")
    parts = {"layer": _layer_records, "network": _network_records,
             "protocol": _protocol_records, "memory": _memory_records}
    for kind, fn in parts.items():
        if kind in ctx.kinds and (lt is not None or kind == "layer"):
            guarded(sec, kind, lambda fn=fn: fn(ctx, device, lt))
    return sec
