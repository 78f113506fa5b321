"""The PyTorch backend of the robustness experiment (``--backend torch``, the default).

Builds :mod:`~localnorm.experiments.models`'s networks with ``torch.nn`` layers
(``BatchNorm2d``, ``GroupNorm``, :class:`localnorm.torch.LocalNorm2d`), trains them with
``torch.optim.Adam`` and evaluates LocalNorm with :func:`localnorm.torch.predict`. Runs on
CUDA when present (``--device auto``). Checkpoints are ``torch.save`` files (``.pt``)
holding the state dict and the training log.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import _errors, models
from .training import Runner, TrainLog, statistics_chunks

__all__ = ["TorchRunner", "make_norm", "build_model"]


def make_norm(norm: str, channels: int, num_groups: int = 4) -> nn.Module:
    """A 2-d normalization layer over ``channels`` channels (see :mod:`.models`)."""
    models.check("mnistnet", norm)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels, eps=models.EPSILON, momentum=models.BN_MOMENTUM)
    if norm == "groupnorm":
        return nn.GroupNorm(models.groupnorm_groups(channels), channels, eps=models.EPSILON)
    try:
        from localnorm.torch import LocalNorm2d
    except ImportError:
        raise _errors.adapter_missing("localnorm", "torch", "localnorm.torch") from None
    return LocalNorm2d(channels, num_groups=num_groups, eps=models.EPSILON)


def _mnistnet(norm, in_shape, num_classes, num_groups):
    c, h, w = in_shape
    c1, c2, c3, c4 = models.MNISTNET_CONVS
    d1, d2 = models.MNISTNET_DENSE

    def conv(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), make_norm(norm, cout, num_groups),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv(c, c1), *conv(c1, c2), nn.MaxPool2d(2),
        *conv(c2, c3), *conv(c3, c4), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c4 * (h // 4) * (w // 4), d1), nn.ReLU(inplace=True),
        nn.Linear(d1, d2), nn.ReLU(inplace=True),
        nn.Linear(d2, num_classes),
    )


class _Block(nn.Module):
    """A basic residual block: conv-norm-ReLU-conv-norm plus the shortcut, then ReLU."""

    def __init__(self, norm, cin, cout, stride, num_groups):
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


def _resnet(norm, in_shape, num_classes, num_groups):
    first = models.RESNET_STAGES[0]
    layers = [nn.Conv2d(in_shape[0], first, 3, 1, 1, bias=False),
              make_norm(norm, first, num_groups), nn.ReLU(inplace=True)]
    cin = first
    for i, cout in enumerate(models.RESNET_STAGES):
        for b in range(models.RESNET_BLOCKS):
            layers.append(_Block(norm, cin, cout, 2 if (i > 0 and b == 0) else 1, num_groups))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def _vgg(model, norm, in_shape, num_classes, num_groups):
    layers, cin = [], in_shape[0]
    for cout, convs in models.vgg_stages(model):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                       make_norm(norm, cout, num_groups), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    h, w = in_shape[1] // 32, in_shape[2] // 32
    if h < 1 or w < 1:
        raise _errors.image_too_small(model, in_shape, 32)
    layers += [nn.Flatten(), nn.Linear(cin * h * w, num_classes)]
    return nn.Sequential(*layers)


def build_model(model: str, norm: str, in_shape: tuple[int, int, int], num_classes: int,
                num_groups: int = 4) -> nn.Module:
    """Build architecture ``model`` with normalization ``norm`` as a ``torch.nn`` module.

    Parameters
    ----------
    model : {"mnistnet", "resnet", "vgg19", "vgg19-narrow"}
    norm : {"batchnorm", "groupnorm", "localnorm"}
    in_shape : (C, H, W)
        Shape of one input image.
    num_classes : int
    num_groups : int
        K, the number of groups along the batch axis (``"localnorm"`` only).
    """
    models.check(model, norm)
    if model.startswith("vgg"):
        return _vgg(model, norm, in_shape, num_classes, num_groups)
    build = _mnistnet if model == "mnistnet" else _resnet
    return build(norm, in_shape, num_classes, num_groups)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise _errors.device_unavailable(device, "torch", ["auto", "cpu", "cuda", "cuda:N"]) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _errors.device_unavailable(device, "torch", ["auto", "cpu"])
    return dev


def _dynamic_copy(model: nn.Module) -> nn.Module:
    """A copy of a BatchNorm network that normalizes with the statistics of each batch."""
    dyn = copy.deepcopy(model)
    for m in dyn.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean = None  # eval mode then uses batch statistics
            m.running_var = None
    return dyn


def _max_softmax(logits: torch.Tensor):
    """The maximum softmax probability of each row, as NumPy float32."""
    return torch.softmax(logits.float(), dim=1).amax(dim=1).cpu().numpy()


class TorchRunner(Runner):
    """PyTorch: ``torch.nn`` networks, Adam, :func:`localnorm.torch.predict`."""

    name = "torch"
    checkpoint_suffix = ".pt"

    def __init__(self, device: str = "auto", threads: int | None = None):
        super().__init__(device, threads)
        self._device = resolve_device(device)
        if threads:
            torch.set_num_threads(int(threads))

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def framework(self) -> str:
        return f"torch {torch.__version__}"

    def build(self, model, norm, in_shape, num_classes, num_groups, seed):
        torch.manual_seed(seed)
        return build_model(model, norm, in_shape, num_classes, num_groups).to(self._device)

    def train(self, net, x, y, *, epochs, batch_size, lr, seed, progress=None):
        device = self._device
        gen = torch.Generator().manual_seed(seed)
        xt = torch.as_tensor(x, device=device)
        yt = torch.as_tensor(y, device=device)
        net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        n = len(yt)
        steps = max(n // batch_size, 1)
        seen = steps * min(batch_size, n)
        t0 = time.perf_counter()
        loss_sum = correct = torch.zeros(())
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                out = net(xt[idx])
                loss = F.cross_entropy(out, yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(idx)
                correct += (out.detach().argmax(1) == yt[idx]).sum()
            if progress is not None:
                progress(epoch, float(loss_sum) / seen, float(correct) / seen)
        return TrainLog(time.perf_counter() - t0, float(loss_sum) / seen,
                        float(correct) / seen, epochs)

    def _forward(self, net, x, bounds):
        with torch.inference_mode():
            return torch.cat([net(x[s:e]) for s, e in bounds])

    def evaluate(self, net, evaluation, x, *, batch_size, num_groups, seed, vote="hard",
                 chunk=1024):
        labels, agreement, _ = self.evaluate_scores(
            net, evaluation, x, batch_size=batch_size, num_groups=num_groups, seed=seed,
            vote=vote, chunk=chunk)
        return labels, agreement

    def evaluate_scores(self, net, evaluation, x, *, batch_size, num_groups, seed, vote="hard",
                        chunk=1024):
        xt = torch.as_tensor(x, device=self._device)
        net.eval()
        if evaluation.method == "localnorm":
            from localnorm.torch import local_norm_layers, predict

            k = local_norm_layers(net)[0].num_groups
            pred = predict(
                net, xt, protocol=evaluation.protocol, vote=vote,
                generator=torch.Generator().manual_seed(seed),
                batch_size=batch_size if evaluation.protocol == "batch" else chunk,
                set_size=max(batch_size // k, 1),
            )
            agreement = None if pred.agreement is None else pred.agreement.float().cpu().numpy()
            msp = None if agreement is not None else _max_softmax(pred.scores)
            return pred.labels.cpu().numpy(), agreement, msp
        if evaluation.method == "batchnorm-dynamic":
            out = self._forward(_dynamic_copy(net), xt,
                                statistics_chunks(len(xt), batch_size, num_groups))
        else:
            out = self._forward(net, xt, [(s, min(s + chunk, len(xt)))
                                          for s in range(0, len(xt), chunk)])
        return out.argmax(1).cpu().numpy(), None, _max_softmax(out)

    def save(self, net, path, log):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"state_dict": net.state_dict(), "log": dataclasses.asdict(log)}, tmp)
        tmp.replace(path)

    def load(self, net, path):
        ckpt = torch.load(path, map_location=self._device, weights_only=True)
        net.load_state_dict(ckpt["state_dict"])
        net.to(self._device)
        return TrainLog(**ckpt["log"])

