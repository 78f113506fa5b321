"""The robustness experiment behind ``localnorm robustness`` (paper, section 5.2), and the
``localnorm`` command line (:mod:`~localnorm.experiments._cli`): the application room,
above the core, the adapters, the benchmarks and the conformance suite.

Modules: :mod:`~localnorm.experiments.datasets` (local image datasets, nothing downloaded),
:mod:`~localnorm.experiments.corruptions` (the paper's noises and the standard ImageNet-C /
CIFAR-10-C corruptions), :mod:`~localnorm.experiments.models` (the paper's MNIST network and
a small CIFAR ResNet, for each normalization), :mod:`~localnorm.experiments.training`,
:mod:`~localnorm.experiments.report` (results.json, results.md, plots) and
:mod:`~localnorm.experiments.robustness` (the subcommand). ``import localnorm`` does not
import this package; the datasets and corruptions need NumPy, SciPy and Pillow only, the
models and training need PyTorch, the report needs matplotlib for its figures.
"""
