"""Training and evaluation of the robustness experiment: what every backend shares.

A :class:`Runner` is one framework's half of the experiment (build the network with a
normalization, train it, classify test images under each evaluation, save and load it);
:func:`get_runner` imports the chosen one only (:data:`RUNNERS`). Everything else, the
data, the noise, the cells and the report, is NumPy and backend-neutral.

Training is Adam on cross-entropy, on shuffled full batches (the last incomplete batch of
an epoch is dropped, so every LocalNorm batch splits into K equal groups along the batch
axis). One trained network gives several *evaluations*:

==================  ==========  ===========================================================
method              protocol    how the test images are classified
==================  ==========  ===========================================================
batchnorm           running     BatchNorm with the running statistics of training
batchnorm-dynamic   batch       the same BatchNorm network with statistics recomputed on
                                each test batch of ``batch_size`` images (the paper's
                                "dynamic BN", the BN-adapt baseline)
groupnorm           single      GroupNorm (per-image statistics)
localnorm           batch,      the adapter's ``predict`` under the paper's protocols
                    single,     (BATCH with test batches of ``batch_size``, SINGLE with a
                    single-     seeded random group per image, SINGLE-VOTING, VOTING with
                    voting,     sets of ``batch_size // K`` images)
                    voting
==================  ==========  ===========================================================

BATCH and dynamic BN cut the test set into the same statistics batches
(:func:`statistics_chunks`): a ragged last chunk smaller than K is merged into the one
before it, for both.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from localnorm import _spec
from localnorm.protocols import chunks
from . import _errors

__all__ = ["Evaluation", "EVALUATIONS", "METHODS", "TrainLog", "Runner", "RUNNERS",
           "get_runner", "statistics_chunks", "epoch_batches"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One (method, protocol) column of the experiment, and the network it needs."""

    method: str
    protocol: str
    norm: str

    @property
    def label(self) -> str:
        """Short name for progress bars: the method, and LocalNorm's protocol."""
        return self.method if self.method != "localnorm" else f"localnorm ({self.protocol})"


#: Every evaluation, in report order.
EVALUATIONS = (
    Evaluation("batchnorm", "running", "batchnorm"),
    Evaluation("batchnorm-dynamic", "batch", "batchnorm"),
    Evaluation("groupnorm", "single", "groupnorm"),
    *(Evaluation("localnorm", p, "localnorm") for p in _spec.PROTOCOLS),
)

#: The methods (``--methods``), each with the network it evaluates.
METHODS = ("batchnorm", "batchnorm-dynamic", "groupnorm", "localnorm")


@dataclasses.dataclass
class TrainLog:
    """What training one network reports: wall seconds, the last epoch's mean loss and
    accuracy on the training batches, and the number of epochs."""

    seconds: float
    final_loss: float
    train_accuracy: float
    epochs: int


def statistics_chunks(n: int, batch_size: int, num_groups: int) -> list[tuple[int, int]]:
    """The test batches of BATCH and of dynamic BN: ``batch_size`` images each, a last
    chunk of fewer than ``num_groups`` (K) images merged into the one before it.

    This is the rule of :func:`localnorm.protocols.run_protocol` for BATCH, so both
    baselines that recompute statistics on the test batch see the same batches (on the
    450 digits test images with batch 64 and K=4: seven chunks, the last of 66 images).
    """
    return chunks(n, max(int(batch_size), num_groups), min_size=num_groups)


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch's shuffled full batches, shape (steps, batch_size), from ``rng`` (the
    Keras and Flax runners; the PyTorch runner draws with ``torch.randperm``)."""
    steps = max(n // batch_size, 1)
    size = min(batch_size, n)
    return rng.permutation(n)[: steps * size].reshape(steps, size)


class Runner(abc.ABC):
    """One framework's side of the robustness experiment.

    Subclasses build the architectures of :mod:`~localnorm.experiments.models`, train and
    evaluate them; all arrays they receive and return are NumPy, images in (N, C, H, W)
    (a channels-last framework transposes them itself).

    Parameters
    ----------
    device : str
        ``"auto"`` (the framework's default: CUDA when present and supported), ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ...
    threads : int or None
        CPU threads of the framework; None or 0 leaves the framework's default.
    """

    #: The ``--backend`` name.
    name: ClassVar[str]
    #: Suffix of the checkpoint files.
    checkpoint_suffix: ClassVar[str]

    def __init__(self, device: str = "auto", threads: int | None = None):
        self.requested_device = device
        self.threads = threads

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """The device the networks run on (recorded in results.json)."""

    @property
    @abc.abstractmethod
    def framework(self) -> str:
        """Framework and version, e.g. ``"torch 2.13.0"`` (recorded in results.json)."""

    @property
    def details(self) -> dict:
        """Extra entries of results.json's config that must match for ``--resume``
        (e.g. the Keras backend)."""
        return {}

    @abc.abstractmethod
    def build(self, model: str, norm: str, in_shape: tuple[int, int, int], num_classes: int,
              num_groups: int, seed: int) -> Any:
        """A new network ``model`` with normalization ``norm``, initialized from ``seed``.

        ``in_shape`` is one image's (C, H, W); ``num_groups`` is K, the groups along the
        batch axis of ``"localnorm"``.
        """

    @abc.abstractmethod
    def train(self, net: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
              lr: float, seed: int,
              progress: Callable[[int, float, float], None] | None = None) -> TrainLog:
        """Train ``net`` in place on ``(x, y)``; ``progress(epoch, loss, accuracy)`` is
        called after every epoch."""

    @abc.abstractmethod
    def evaluate(self, net: Any, evaluation: Evaluation, x: np.ndarray, *, batch_size: int,
                 num_groups: int, seed: int, vote: str = "hard",
                 chunk: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
        """Classify ``x`` with ``net`` under ``evaluation``.

        Returns ``(labels, agreement)``; ``agreement`` (per image) is None except for the
        voting protocols. ``batch_size`` is the statistics batch of BATCH and dynamic BN
        (:func:`statistics_chunks`) and VOTING's sets hold ``batch_size // num_groups``
        images; ``seed`` draws SINGLE's random groups; ``chunk`` only bounds memory.
        """

    def evaluate_scores(self, net: Any, evaluation: Evaluation, x: np.ndarray, *,
                        batch_size: int, num_groups: int, seed: int, vote: str = "hard",
                        chunk: int = 1024) -> tuple[np.ndarray, np.ndarray | None,
                                                    np.ndarray | None]:
        """:meth:`evaluate`, plus each image's maximum softmax probability (the
        confidence baseline of :mod:`~localnorm.experiments.uncertainty`) where the
        evaluation is not a vote: ``(labels, agreement, max_softmax)``.

        The default returns None for ``max_softmax`` (a runner that does not compute it);
        the PyTorch runner computes it.
        """
        labels, agreement = self.evaluate(net, evaluation, x, batch_size=batch_size,
                                          num_groups=num_groups, seed=seed, vote=vote,
                                          chunk=chunk)
        return labels, agreement, None

    @abc.abstractmethod
    def save(self, net: Any, path: Path, log: TrainLog) -> None:
        """Checkpoint ``net`` and its training log to ``path`` (atomically)."""

    @abc.abstractmethod
    def load(self, net: Any, path: Path) -> TrainLog:
        """Load a checkpoint written by :meth:`save` into ``net`` (built the same way)."""


#: ``--backend`` name -> ``"module:class"`` of its runner, imported only when chosen.
RUNNERS = {
    "torch": "localnorm.experiments.torch_runner:TorchRunner",
    "keras": "localnorm.experiments.keras_runner:KerasRunner",
    "flax": "localnorm.experiments.flax_runner:FlaxRunner",
}

#: The pip extra and top-level module each backend needs.
_NEEDS = {"torch": ("torch", "torch"), "keras": ("keras", "keras"), "flax": ("flax", "flax")}


def get_runner(backend: str, device: str = "auto", threads: int | None = None) -> Runner:
    """The :class:`Runner` of ``backend`` (one of :data:`RUNNERS`), its framework imported now."""
    _spec.check_choice("backend", backend, tuple(RUNNERS))
    extra, top = _NEEDS[backend]
    if importlib.util.find_spec(top) is None:
        raise _errors.backend_not_installed(backend, top, extra)
    module, _, cls = RUNNERS[backend].partition(":")
    return getattr(importlib.import_module(module), cls)(device=device, threads=threads)
