"""Training and evaluation of the robustness experiment's networks (PyTorch backend).

Training is plain Adam on cross-entropy, on shuffled full batches (the last incomplete
batch of an epoch is dropped, so every LocalNorm batch splits into K equal groups along the
batch axis). Evaluation turns one trained network into the experiment's *evaluations*:

==================  ==========  ===========================================================
method              protocol    how the test images are classified
==================  ==========  ===========================================================
batchnorm           running     BatchNorm with the running statistics of training
batchnorm-dynamic   batch       the same BatchNorm network with statistics recomputed on
                                each test batch of ``batch_size`` images (the paper's
                                "dynamic BN", the BN-adapt baseline)
groupnorm           single      GroupNorm (per-image statistics)
localnorm           batch,      :func:`localnorm.torch.predict` under the paper's protocols
                    single,     (BATCH with test batches of ``batch_size``, SINGLE with a
                    single-     seeded random group per image, SINGLE-VOTING, VOTING with
                    voting,     sets of ``batch_size // K`` images)
                    voting
==================  ==========  ===========================================================
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _spec
from ..protocols import chunks

__all__ = ["Evaluation", "EVALUATIONS", "resolve_device", "train", "evaluate", "save", "load"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One (method, protocol) column of the experiment, and the network it needs."""

    method: str
    protocol: str
    norm: str

    @property
    def label(self) -> str:
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


def resolve_device(device: str):
    """``"auto"`` is CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclasses.dataclass
class TrainLog:
    seconds: float
    final_loss: float
    train_accuracy: float
    epochs: int


def train(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
          seed: int, device, progress: Any = None) -> TrainLog:
    """Train ``model`` in place on ``(x, y)``; returns timing and the last epoch's loss.

    ``progress`` is an optional callable ``progress(epoch, loss, accuracy)`` (a progress bar).
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, device=device)
    yt = torch.as_tensor(y, device=device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(yt)
    steps = max(n // batch_size, 1)
    t0 = time.perf_counter()
    loss_sum = correct = seen = 0.0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            out = model(xt[idx])
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == yt[idx]).sum()
        seen = steps * min(batch_size, n)
        if progress is not None:
            progress(epoch, float(loss_sum) / seen, float(correct) / seen)
    return TrainLog(time.perf_counter() - t0, float(loss_sum) / max(seen, 1),
                    float(correct) / max(seen, 1), epochs)


def _forward_chunks(model, x, size: int, min_size: int = 1):
    import torch

    with torch.inference_mode():
        outs = [model(x[s:e]) for s, e in chunks(len(x), size, min_size=min_size)]
    return torch.cat(outs)


def _dynamic_copy(model):
    """A copy of a BatchNorm network that normalizes with the statistics of each batch."""
    from torch import nn

    dyn = copy.deepcopy(model)
    for m in dyn.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean = None  # eval mode then uses batch statistics
            m.running_var = None
    return dyn


def evaluate(model, evaluation: Evaluation, x: np.ndarray, *, batch_size: int, seed: int,
             device, vote: str = "hard", chunk: int = 1024):
    """Classify ``x`` with ``model`` under ``evaluation``.

    Returns ``(labels, agreement)`` as NumPy arrays; ``agreement`` is None except for the
    voting protocols. ``batch_size`` is the statistics batch of BATCH and dynamic BN (the
    training batch size); ``chunk`` only bounds memory.
    """
    import torch

    xt = torch.as_tensor(x, device=device)
    model.eval()
    if evaluation.method == "localnorm":
        from localnorm.torch import local_norm_layers, predict

        k = local_norm_layers(model)[0].num_groups
        size = batch_size if evaluation.protocol == "batch" else chunk
        pred = predict(
            model, xt, protocol=evaluation.protocol, vote=vote,
            generator=torch.Generator().manual_seed(seed), batch_size=size,
            set_size=max(batch_size // k, 1),
        )
        agreement = None if pred.agreement is None else pred.agreement.float().cpu().numpy()
        return pred.labels.cpu().numpy(), agreement
    if evaluation.method == "batchnorm-dynamic":
        out = _forward_chunks(_dynamic_copy(model), xt, batch_size, min_size=2)
    else:
        out = _forward_chunks(model, xt, chunk)
    return out.argmax(1).cpu().numpy(), None


def save(model, path: Path, log: TrainLog) -> None:
    """Checkpoint ``model`` and its training log (atomically)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "log": dataclasses.asdict(log)}, tmp)
    tmp.replace(path)


def load(model, path: Path, device) -> TrainLog:
    """Load a checkpoint written by :func:`save` into ``model``."""
    import torch

    ckpt = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device)
    return TrainLog(**ckpt["log"])
