"""What is measured: layer shapes, networks, and the worker context shared by all sections.

Layer shapes are those of the paper's networks, measured in every section: CIFAR (N=128,
K=8 groups of 16 along the batch axis) at 32x32/16x16/8x8 with 64/128/256 channels, and
Stanford Cars' ResNet152 (N=16, K=4) at 56x56 with 64 and 256 channels (the widths of its
56x56 stage). The torch section adds the issue's configuration (N=128 C=64 16x16 K=4).
Networks train on random data of the dataset's shape (nothing is downloaded): the
paper's MNIST network (batch 100, K=10), a CIFAR ResNet-20 and a VGG-style network
(batch 128, K=8); every section trains all three.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from typing import NamedTuple

from ._timing import FULL, NETWORK, QUICK, Settings


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


#: The issue's own configuration (N=128, C=64, 16x16, K=4), on which the torch targets
#: were first stated; measured in the torch section and by ``benchmarks/torch_layer.py``.
ISSUE_CASE = LayerCase(128, 64, 16, 4)

#: The paper's shapes, measured in every section.
LAYER_CASES = (
    LayerCase(128, 64, 32, 8),
    LayerCase(128, 128, 16, 8),
    LayerCase(128, 256, 8, 8),
    LayerCase(16, 64, 56, 4),
    LayerCase(16, 256, 56, 4),
)
QUICK_LAYER_CASES = (LayerCase(16, 8, 8, 4),)

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
    """What a section worker is asked to do.

    Attributes
    ----------
    quick : bool
        Tiny shapes and :data:`benchmarks._timing.QUICK` settings: checks the machinery.
    device : str
        The torch section's device ("cpu" or "cuda"); keras and flax use their default.
    kinds : tuple of str
        The kinds of figure to measure (a subset of :data:`KINDS`).
    settings : Settings
        Rounds, warm-up and sample length of the layer comparisons.
    net_settings : Settings
        The same for whole-network steps and protocols (seconds per call, not
        milliseconds: fewer rounds give as tight a median).
    layer_cases, networks, protocol_net
        What is measured (see :data:`LAYER_CASES`, :data:`NETWORKS`, :data:`PROTOCOL_NET`).
    issue_case : LayerCase or None
        An extra torch layer shape (:data:`ISSUE_CASE`), measured first.
    """

    quick: bool = False
    device: str = "cpu"
    kinds: tuple = KINDS
    settings: Settings = FULL
    net_settings: Settings = NETWORK
    layer_cases: tuple = LAYER_CASES
    networks: tuple = NETWORKS
    protocol_net: NetCase = PROTOCOL_NET
    issue_case: LayerCase | None = ISSUE_CASE

    @classmethod
    def make(cls, quick: bool, device: str = "cpu", kinds=KINDS) -> "Context":
        """The full run's context, or the quick run's (tiny shapes, few rounds)."""
        if quick:
            return cls(True, device, tuple(kinds), QUICK, QUICK, QUICK_LAYER_CASES,
                       QUICK_NETWORKS, QUICK_PROTOCOL_NET, None)
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
