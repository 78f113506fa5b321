"""The networks of the robustness experiment (PyTorch), one per normalization.

``mnistnet`` is the paper's MNIST network, Input-16c-16c-32c-32c-512d-1024d-output: 3x3
convolutions, each followed by the normalization under test and a ReLU, a 2x2 max-pool after
each pair of convolutions, and two dense layers (ReLU, no normalization). It scales to the
input size: the flattened width is ``32 * (H // 4) * (W // 4)``. ``resnet`` is a small CIFAR
ResNet (He et al. 2016, section 4.2: three stages of 16, 32, 64 channels, ``blocks`` basic
blocks each; ``blocks=3`` is ResNet-20) with the normalization after every convolution.

The normalizations: ``"batchnorm"`` (:class:`torch.nn.BatchNorm2d`), ``"groupnorm"``
(:class:`torch.nn.GroupNorm` with ``channels // 4`` channel groups, clamped to [1, 8]) and ``"localnorm"``
(:class:`localnorm.torch.LocalNorm2d`, K groups along the batch axis).
"""

from __future__ import annotations

from .. import _errors, _spec

__all__ = ["MODELS", "NORMS", "build_model", "make_norm"]

#: Architectures.
MODELS = ("mnistnet", "resnet")

#: Normalizations a model can be built with.
NORMS = ("batchnorm", "groupnorm", "localnorm")


def make_norm(norm: str, channels: int, num_groups: int = 4):
    """A 2-d normalization layer over ``channels`` channels (see the module docstring)."""
    from torch import nn

    _spec.check_choice("norm", norm, NORMS)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "groupnorm":
        return nn.GroupNorm(max(1, min(8, channels // 4)), channels)
    try:
        from localnorm.torch import LocalNorm2d
    except ImportError:
        raise _errors.adapter_missing("localnorm", "torch", "localnorm.torch") from None
    return LocalNorm2d(channels, num_groups=num_groups)


def _mnistnet(norm, in_shape, num_classes, num_groups):
    from torch import nn

    c, h, w = in_shape

    def conv(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), make_norm(norm, cout, num_groups),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv(c, 16), *conv(16, 16), nn.MaxPool2d(2),
        *conv(16, 32), *conv(32, 32), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (h // 4) * (w // 4), 512), nn.ReLU(inplace=True),
        nn.Linear(512, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    )


def _resnet(norm, in_shape, num_classes, num_groups, blocks=3):
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.norm1 = make_norm(norm, cout, num_groups)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.norm2 = make_norm(norm, cout, num_groups)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              make_norm(norm, cout, num_groups))

        def forward(self, x):
            out = F.relu(self.norm1(self.conv1(x)))
            out = self.norm2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    layers = [nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False), make_norm(norm, 16, num_groups),
              nn.ReLU(inplace=True)]
    cin = 16
    for i, cout in enumerate((16, 32, 64)):
        for b in range(blocks):
            layers.append(Block(cin, cout, 2 if (i > 0 and b == 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def build_model(model: str, norm: str, in_shape: tuple[int, int, int], num_classes: int,
                num_groups: int = 4):
    """Build architecture ``model`` (one of :data:`MODELS`) with normalization ``norm``.

    Parameters
    ----------
    model : {"mnistnet", "resnet"}
    norm : {"batchnorm", "groupnorm", "localnorm"}
    in_shape : (C, H, W)
        Shape of one input image.
    num_classes : int
    num_groups : int
        K, the number of groups along the batch axis (``"localnorm"`` only).
    """
    _spec.check_choice("model", model, MODELS)
    if model == "mnistnet":
        return _mnistnet(norm, in_shape, num_classes, num_groups)
    return _resnet(norm, in_shape, num_classes, num_groups)
