"""The networks of the robustness experiment: one description, built by every backend.

``mnistnet`` is the paper's MNIST network, Input-16c-16c-32c-32c-512d-1024d-output: 3x3
convolutions (no bias), each followed by the normalization under test and a ReLU, a 2x2
max-pool after each pair of convolutions, and two dense layers (ReLU, no normalization).
It scales to the input size: the flattened width is ``32 * (H // 4) * (W // 4)``.
``resnet`` is a small CIFAR ResNet (He et al. 2016, section 4.2: three stages of 16, 32,
64 channels, :data:`RESNET_BLOCKS` basic blocks each, ResNet-20) with the normalization
after every convolution, projection shortcuts (1x1 convolution and normalization) where
the shape changes, global average pooling and one dense layer.
``vgg19`` is the paper's CIFAR-10 network, VGG-19 (Simonyan and Zisserman 2015,
configuration E: 16 3x3 convolutions in five stages of 2, 2, 4, 4, 4 with 64, 128, 256,
512, 512 channels, a 2x2 max-pool after each stage) with the normalization after every
convolution, then, as usual for 32x32 inputs, one dense layer on the 1x1 feature map.
``vgg19-narrow`` is the same 16-convolution network at a quarter of the width (16, 32,
64, 128, 128 channels; :data:`VGG_NARROW_DIVISOR`), about 16x cheaper, for CPU runs.

The normalizations, with the same settings in every backend (:data:`EPSILON`,
:data:`BN_MOMENTUM`; each framework's own defaults differ, e.g. Keras' BatchNormalization
uses ``epsilon=1e-3, momentum=0.99``):

=============  ==============================================================================
``batchnorm``  ``torch.nn.BatchNorm2d``, ``keras.layers.BatchNormalization``, ``nnx.BatchNorm``
``groupnorm``  ``torch.nn.GroupNorm``, ``keras.layers.GroupNormalization``, ``nnx.GroupNorm``
               with :func:`groupnorm_groups` channel groups
``localnorm``  ``localnorm.torch.LocalNorm2d``, ``localnorm.keras.LocalNormalization``,
               ``localnorm.flax.LocalNorm``: K groups along the batch axis
=============  ==============================================================================

The builders live in the backend runners (:mod:`~localnorm.experiments.torch_runner`,
:mod:`~localnorm.experiments.keras_runner`, :mod:`~localnorm.experiments.flax_runner`).
Convolution and dense kernels start from PyTorch's default, uniform in
``+-1/sqrt(fan_in)`` (variance scaling with :data:`INIT_SCALE`, fan-in, uniform), in every
backend; dense biases start at zero in Keras and Flax (their default) and uniform in
PyTorch (its default). Random streams differ between frameworks, so the backends agree in
kind, not to the last digit.
"""

from __future__ import annotations

from localnorm import _spec

__all__ = ["MODELS", "NORMS", "EPSILON", "BN_MOMENTUM", "INIT_SCALE", "MNISTNET_CONVS", "MNISTNET_DENSE",
           "RESNET_STAGES", "RESNET_BLOCKS", "BACKEND_MODELS", "VGG19_STAGES", "VGG_NARROW_DIVISOR",
           "vgg_stages", "groupnorm_groups", "check"]

#: Architectures.
MODELS = ("mnistnet", "resnet", "vgg19", "vgg19-narrow")

#: The models each ``--backend`` builds (the VGGs are built by the PyTorch runner only).
BACKEND_MODELS = {"torch": MODELS, "keras": ("mnistnet", "resnet"), "flax": ("mnistnet", "resnet")}

#: Normalizations a model can be built with.
NORMS = ("batchnorm", "groupnorm", "localnorm")

#: epsilon of every normalization layer in every backend (PyTorch's default).
EPSILON = 1e-5

#: BatchNorm's running-statistics update, in PyTorch's convention
#: (``running = (1 - m) * running + m * batch``); Keras and Flax get ``momentum=1 - m``.
BN_MOMENTUM = 0.1

#: Scale of the variance-scaling (fan-in, uniform) kernel initializer: 1/3 gives the bound
#: ``sqrt(3 * scale / fan_in) = 1/sqrt(fan_in)`` of PyTorch's default.
INIT_SCALE = 1 / 3

#: ``mnistnet``: output channels of the four convolutions (a 2x2 max-pool after the
#: second and the fourth).
MNISTNET_CONVS = (16, 16, 32, 32)

#: ``mnistnet``: widths of the two dense layers before the output layer.
MNISTNET_DENSE = (512, 1024)

#: ``resnet``: channels of the three stages (the first convolution has the first width).
RESNET_STAGES = (16, 32, 64)

#: ``resnet``: basic blocks per stage (3 is ResNet-20).
RESNET_BLOCKS = 3


#: ``vgg19``: (channels, convolutions) of the five stages, a 2x2 max-pool after each.
VGG19_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

#: ``vgg19-narrow``: every width of :data:`VGG19_STAGES` divided by this.
VGG_NARROW_DIVISOR = 4


def vgg_stages(model: str) -> tuple[tuple[int, int], ...]:
    """(channels, convolutions) per stage of ``"vgg19"`` or ``"vgg19-narrow"``."""
    div = VGG_NARROW_DIVISOR if model == "vgg19-narrow" else 1
    return tuple((c // div, n) for c, n in VGG19_STAGES)


def groupnorm_groups(channels: int) -> int:
    """GroupNorm's number of channel groups for ``channels`` channels: ``channels // 4``
    clamped to [1, 8] (these are groups of channels, not along the batch axis)."""
    return max(1, min(8, channels // 4))


def check(model: str, norm: str) -> None:
    """Validate an architecture name and a normalization name."""
    _spec.check_choice("model", model, MODELS)
    _spec.check_choice("norm", norm, NORMS)
