"""Models and helpers shared by the torch adapter tests (a unique module name: pytest puts
this folder on sys.path, and other suites have their own helpers)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import localnorm.torch as lt  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


class BasicBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs, BatchNorm, identity or 1x1 shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """A small CIFAR-style ResNet with BatchNorm1d in the head too (nested containers)."""

    def __init__(self, classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layers = nn.Sequential(BasicBlock(width, width), BasicBlock(width, 2 * width, 2))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 16),
            nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, classes),
        )

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def small_net(num_groups: int = 4, partition: str = "contiguous", **kw) -> nn.Module:
    """conv -> LocalNorm2d -> relu -> pool -> linear, with non-trivial per-group params."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), lt.LocalNorm2d(6, num_groups, partition=partition, **kw),
        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    )
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.normal_()
    return net
