"""What is measured: layer shapes, networks, and the worker context shared by all sections.

Layer shapes are those of the paper's networks: CIFAR (N=128, K=8 groups of 16 along the
batch axis) at 32x32/16x16/8x8 with 64/128/256 channels, and Stanford Cars' ResNet152
(N=16, K=4) at 56x56 with 64 and 256 channels. Networks train on random data of the
dataset's shape (nothing is downloaded): the paper's MNIST network (batch 100, K=10), a
CIFAR ResNet-20 and a VGG-style network (batch 128, K=8).
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from typing import NamedTuple

from ._timing import FULL, QUICK, Settings


class LayerCase(NamedTuple):
    """A layer input: N samples, C channels, H x W, K groups along the batch axis."""

    n: int
    c: int
    h: int
    k: int

    @property
    def label(self) -> str:
        return f"N={self.n} C={self.c} {self.h}x{self.h} K={self.k}"


class NetCase(NamedTuple):
    """A network trained on random inputs of shape (batch, channels, size, size)."""

    name: str
    batch: int
    k: int
    channels: int
    size: int
    classes: int = 10

    @property
    def label(self) -> str:
        return f"{self.name} (batch {self.batch}, K={self.k})"


LAYER_CASES = (
    LayerCase(128, 64, 32, 8),
    LayerCase(128, 128, 16, 8),
    LayerCase(128, 256, 8, 8),
    LayerCase(16, 64, 56, 4),
    LayerCase(16, 256, 56, 4),
)
QUICK_LAYER_CASES = (LayerCase(16, 8, 8, 4),)
#: The shapes of the keras and flax sections in the default run (all with ``--full``):
#: one CIFAR and one Stanford Cars shape, so that the default run stays near 10 minutes
#: on two CPU cores.
SHORT_LAYER_CASES = (LAYER_CASES[0], LAYER_CASES[3])

NETWORKS = (
    NetCase("mnist", 100, 10, 1, 28),
    NetCase("resnet20", 128, 8, 3, 32),
    NetCase("vgg11-half", 128, 8, 3, 32),
)
QUICK_NETWORKS = (
    NetCase("mnist", 20, 4, 1, 28),
    NetCase("resnet20", 8, 4, 3, 16),
    NetCase("vgg11-half", 8, 4, 3, 32),
)

#: The networks of the keras sections in the default run (all with ``--full``).
SHORT_NETWORKS = NETWORKS[:2]

#: The network used for the test-time protocol figures.
PROTOCOL_NET = NETWORKS[1]
QUICK_PROTOCOL_NET = NetCase("resnet20", 8, 4, 3, 16)

#: VGG-style network: VGG-11's layout at half width (conv widths, "M" = 2x2 max-pool), so a
#: training step stays around a second on two CPU cores.
VGG_CFG = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M")
#: The paper's MNIST network: Input-16c-16c-32c-32c-512d-1024d-output.
MNIST_CONVS = (16, 16, "M", 32, 32, "M")
MNIST_DENSE = (512, 1024)

KINDS = ("layer", "network", "protocol", "memory")

#: Targets of the issue: forward+backward of torch's strided / contiguous LocalNorm2d
#: against BatchNorm2d, every other layer op within 1.3x of the backend's own BatchNorm,
#: and a network training step within +3%.
TORCH_STRIDED_TARGET = 1.0
TORCH_CONTIGUOUS_TARGET = 1.2
LAYER_TARGET = 1.3
NETWORK_TARGET = 1.03


@dataclasses.dataclass(frozen=True)
class Context:
    """What a section worker is asked to do."""

    quick: bool = False
    device: str = "cpu"
    kinds: tuple = KINDS
    settings: Settings = FULL
    layer_cases: tuple = LAYER_CASES
    networks: tuple = NETWORKS
    protocol_net: NetCase = PROTOCOL_NET
    #: whether every layer op runs in every layout (else evaluation modes: NCHW only)
    all_layouts: bool = False
    #: keras/flax layer shapes and keras networks (a subset in the default run)
    other_layer_cases: tuple = SHORT_LAYER_CASES
    keras_networks: tuple = SHORT_NETWORKS

    @classmethod
    def make(cls, quick: bool, device: str = "cpu", kinds=KINDS, full: bool = False) -> "Context":
        if quick:
            return cls(True, device, tuple(kinds), QUICK, QUICK_LAYER_CASES, QUICK_NETWORKS,
                       QUICK_PROTOCOL_NET, False, QUICK_LAYER_CASES, QUICK_NETWORKS)
        if full:
            return cls(False, device, tuple(kinds), all_layouts=True,
                       other_layer_cases=LAYER_CASES, keras_networks=NETWORKS)
        return cls(False, device, tuple(kinds))


def section(name: str, framework: str, *, backend: str | None = None, device: str = "cpu",
            versions: dict | None = None) -> dict:
    """An empty, successful section (workers fill ``records`` and ``notes``)."""
    from . import _report

    sec = {
        "name": name,
        "framework": framework,
        "backend": backend,
        "device": device,
        "status": "ok",
        "reason": "",
        "versions": dict(versions or {}),
        "notes": [],
        "records": [],
    }
    _report.open_section(sec)
    return sec


def guarded(sec: dict, kind: str, fn) -> None:
    """Append ``fn()``'s records to ``sec``; an exception marks the section "error" (with the
    kind and the exception as reason) but keeps the records measured so far."""
    import traceback

    from . import _report

    try:
        records = fn()
        if not _report.streaming(sec):
            sec["records"] += records
    except Exception as exc:  # reported in bench.json, not hidden
        traceback.print_exc()
        sec["status"] = "error"
        reason = f"{kind}: {type(exc).__name__}: {exc}"
        sec["reason"] = f"{sec['reason']}; {reason}" if sec["reason"] else reason


def machine() -> dict:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
