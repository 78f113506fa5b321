"""The Flax (NNX) backend of the robustness experiment (``--backend flax``).

Builds :mod:`~localnorm.experiments.models`'s networks as ``flax.nnx`` modules,
channels-last (``nnx.BatchNorm``, ``nnx.GroupNorm``, :class:`localnorm.flax.LocalNorm`),
trains them with optax's Adam in an ``nnx.jit``-compiled step and evaluates LocalNorm
with :func:`localnorm.flax.predict`. ``--device auto`` is JAX's default device (a GPU only
with a CUDA build of jaxlib, e.g. ``pip install "jax[cuda12]"``; the CPU wheel has none),
``cpu`` or ``cuda[:N]`` (``gpu[:N]``) place the run with ``jax.default_device``.
Checkpoints are ``.npz`` files of the model's state leaves plus the training log.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from . import _errors, models
from .report import atomic_write_bytes
from .training import Runner, TrainLog, epoch_batches, statistics_chunks

__all__ = ["FlaxRunner", "limit_jax_threads"]


def limit_jax_threads(threads: int | None) -> None:
    """With ``threads == 1``, turn off XLA's multi-threaded Eigen kernels on CPU
    (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``). XLA reads the flag when JAX
    starts its backend, so it has no effect in a process that already ran JAX code."""
    flag = "--xla_cpu_multi_thread_eigen=false"
    if threads == 1 and flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (0, 2, 3, 1)))


def _modules():
    """The NNX module classes, defined on first use (Flax is imported only for this backend)."""
    import jax.numpy as jnp
    from flax import nnx

    def make_norm(norm, channels, num_groups, rngs):
        if norm == "batchnorm":
            return nnx.BatchNorm(channels, momentum=1 - models.BN_MOMENTUM,
                                 epsilon=models.EPSILON, rngs=rngs)
        if norm == "groupnorm":
            return nnx.GroupNorm(channels, num_groups=models.groupnorm_groups(channels),
                                 epsilon=models.EPSILON, rngs=rngs)
        try:
            from localnorm.flax import LocalNorm
        except ImportError:
            raise _errors.adapter_missing("localnorm", "flax", "localnorm.flax") from None
        return LocalNorm(channels, num_groups=num_groups, epsilon=models.EPSILON, rngs=rngs)

    # PyTorch's default weight init, U(+-1/sqrt(fan_in)), in every backend (models.py).
    init = nnx.initializers.variance_scaling(models.INIT_SCALE, "fan_in", "uniform")

    def conv(cin, cout, rngs, kernel=3, stride=1):
        return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride), padding="SAME",
                        use_bias=False, kernel_init=init, rngs=rngs)

    def linear(cin, cout, rngs):
        return nnx.Linear(cin, cout, kernel_init=init, rngs=rngs)

    class MnistNet(nnx.Module):
        """The paper's 16c-16c-32c-32c-512d-1024d network (see :mod:`.models`)."""

        def __init__(self, norm, in_shape, num_classes, num_groups, rngs):
            c, h, w = in_shape
            widths = (c, *models.MNISTNET_CONVS)
            self.convs = nnx.List([conv(a, b, rngs) for a, b in zip(widths, widths[1:])])
            self.norms = nnx.List([make_norm(norm, b, num_groups, rngs) for b in widths[1:]])
            d1, d2 = models.MNISTNET_DENSE
            self.fc1 = linear(widths[-1] * (h // 4) * (w // 4), d1, rngs)
            self.fc2 = linear(d1, d2, rngs)
            self.out = linear(d2, num_classes, rngs)

        def __call__(self, x):
            for i, (cv, nm) in enumerate(zip(self.convs, self.norms)):
                x = nnx.relu(nm(cv(x)))
                if i % 2 == 1:
                    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = jnp.reshape(x, (x.shape[0], -1))
            return self.out(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))

    class Block(nnx.Module):
        """A basic residual block with a projection shortcut where the shape changes."""

        def __init__(self, norm, cin, cout, stride, num_groups, rngs):
            self.conv1 = conv(cin, cout, rngs, stride=stride)
            self.norm1 = make_norm(norm, cout, num_groups, rngs)
            self.conv2 = conv(cout, cout, rngs)
            self.norm2 = make_norm(norm, cout, num_groups, rngs)
            self.project = stride != 1 or cin != cout
            if self.project:
                self.conv3 = conv(cin, cout, rngs, kernel=1, stride=stride)
                self.norm3 = make_norm(norm, cout, num_groups, rngs)

        def __call__(self, x):
            out = nnx.relu(self.norm1(self.conv1(x)))
            out = self.norm2(self.conv2(out))
            short = self.norm3(self.conv3(x)) if self.project else x
            return nnx.relu(out + short)

    class ResNet(nnx.Module):
        """ResNet-20 for small images (see :mod:`.models`)."""

        def __init__(self, norm, in_shape, num_classes, num_groups, rngs):
            cin = models.RESNET_STAGES[0]
            self.stem = conv(in_shape[0], cin, rngs)
            self.stem_norm = make_norm(norm, cin, num_groups, rngs)
            blocks = []
            for i, cout in enumerate(models.RESNET_STAGES):
                for b in range(models.RESNET_BLOCKS):
                    blocks.append(Block(norm, cin, cout, 2 if (i > 0 and b == 0) else 1,
                                        num_groups, rngs))
                    cin = cout
            self.blocks = nnx.List(blocks)
            self.out = linear(cin, num_classes, rngs)

        def __call__(self, x):
            x = nnx.relu(self.stem_norm(self.stem(x)))
            for block in self.blocks:
                x = block(x)
            return self.out(jnp.mean(x, axis=(1, 2)))

    return {"mnistnet": MnistNet, "resnet": ResNet}


_MODULES: dict | None = None
_STEP = None
_CALL = None


def _compiled():
    """The jitted training step and forward pass (compiled once per shape and model)."""
    global _STEP, _CALL
    if _STEP is None:
        import jax.numpy as jnp
        import optax
        from flax import nnx

        @nnx.jit
        def step(model, optimizer, x_all, y_all, idx):
            x, y = x_all[idx], y_all[idx]

            def loss_fn(model):
                logits = model(x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

            (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            return loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)

        _STEP = step
        _CALL = nnx.jit(lambda model, x: model(x))
    return _STEP, _CALL


class FlaxRunner(Runner):
    """Flax NNX: ``nnx.Module`` networks, optax Adam under ``nnx.jit``,
    :func:`localnorm.flax.predict`."""

    name = "flax"
    checkpoint_suffix = ".flax.npz"

    def __init__(self, device: str = "auto", threads: int | None = None):
        super().__init__(device, threads)
        limit_jax_threads(threads)
        import jax

        self._jax = jax
        self._place = self._resolve(device)

    def _resolve(self, device: str):
        if device == "auto":
            return None
        kind, _, index = device.partition(":")
        kind = {"cuda": "gpu"}.get(kind, kind)
        try:
            found = self._jax.devices(kind)
            return found[int(index or 0)]
        except (RuntimeError, IndexError, ValueError):
            available = [f"{d.platform}:{d.id}" for d in self._jax.devices()]
            raise _errors.device_unavailable(device, "flax", ["auto", *available]) from None

    def _on_device(self):
        return (contextlib.nullcontext() if self._place is None
                else self._jax.default_device(self._place))

    @property
    def device(self) -> str:
        d = self._place or self._jax.devices()[0]
        return f"{d.platform}:{d.id}"

    @property
    def framework(self) -> str:
        import flax

        return f"flax {flax.__version__} (jax {self._jax.__version__})"

    def build(self, model, norm, in_shape, num_classes, num_groups, seed):
        global _MODULES
        from flax import nnx

        models.check(model, norm)
        if _MODULES is None:
            _MODULES = _modules()
        with self._on_device():
            return _MODULES[model](norm, in_shape, num_classes, num_groups, nnx.Rngs(seed))

    def train(self, net, x, y, *, epochs, batch_size, lr, seed, progress=None):
        import jax.numpy as jnp
        import optax
        from flax import nnx

        step, _ = _compiled()
        rng = np.random.default_rng(seed)
        with self._on_device():
            xh, yj = jnp.asarray(_nhwc(x)), jnp.asarray(np.asarray(y, dtype=np.int32))
            net.train()
            optimizer = nnx.Optimizer(net, optax.adam(lr, eps=1e-8), wrt=nnx.Param)
            loss = acc = float("nan")
            t0 = time.perf_counter()
            for epoch in range(epochs):
                batches = epoch_batches(len(y), batch_size, rng)
                losses, correct = [], []
                for idx in batches:
                    lo, co = step(net, optimizer, xh, yj, jnp.asarray(idx))
                    losses.append(lo)
                    correct.append(co)
                loss = float(jnp.mean(jnp.stack(losses)))
                acc = float(jnp.sum(jnp.stack(correct))) / batches.size
                if progress is not None:
                    progress(epoch, loss, acc)
            net.eval()
        return TrainLog(time.perf_counter() - t0, loss, acc, epochs)

    def _logits(self, net, x, bounds) -> np.ndarray:
        _, call = _compiled()
        return np.concatenate([np.asarray(call(net, x[s:e])) for s, e in bounds])

    def _dynamic_copy(self, net):
        """A clone of a BatchNorm model whose BatchNorm layers use each batch's statistics
        (their running statistics, updated on the clone only, are not read)."""
        from flax import nnx

        dyn = nnx.clone(net)
        dyn.eval()
        for _, m in nnx.iter_modules(dyn):
            if isinstance(m, nnx.BatchNorm):
                m.use_running_average = False
        return dyn

    def evaluate(self, net, evaluation, x, *, batch_size, num_groups, seed, vote="hard",
                 chunk=1024):
        import jax.numpy as jnp

        with self._on_device():
            xh = jnp.asarray(_nhwc(x))
            if evaluation.method == "localnorm":
                from localnorm.flax import localnorm_layers, predict

                k = localnorm_layers(net)[0].num_groups
                pred = predict(
                    net, xh, protocol=evaluation.protocol, vote=vote,
                    generator=np.random.default_rng(seed),
                    batch_size=batch_size if evaluation.protocol == "batch" else chunk,
                    set_size=max(batch_size // k, 1),
                )
                agreement = None if pred.agreement is None else np.asarray(
                    pred.agreement, dtype=np.float64)
                return np.asarray(pred.labels), agreement
            net.eval()
            if evaluation.method == "batchnorm-dynamic":
                out = self._logits(self._dynamic_copy(net), xh,
                                   statistics_chunks(len(xh), batch_size, num_groups))
            else:
                out = self._logits(net, xh, [(s, min(s + chunk, len(xh)))
                                             for s in range(0, len(xh), chunk)])
        return out.argmax(1), None

    def save(self, net, path, log):
        from flax import nnx

        leaves = self._jax.tree.leaves(nnx.state(net))
        buf = io.BytesIO()
        np.savez(buf, **{f"w{i:04d}": np.asarray(v) for i, v in enumerate(leaves)},
                 log=np.asarray(json.dumps(log.__dict__)))
        atomic_write_bytes(Path(path), buf.getvalue())

    def load(self, net, path):
        import jax.numpy as jnp
        from flax import nnx

        state = nnx.state(net)
        treedef = self._jax.tree.structure(state)
        with np.load(path) as f:
            names = sorted(n for n in f.files if n.startswith("w"))
            with self._on_device():
                leaves = [jnp.asarray(f[n]) for n in names]
            log = TrainLog(**json.loads(str(f["log"])))
        nnx.update(net, self._jax.tree.unflatten(treedef, leaves))
        return log
