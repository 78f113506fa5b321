"""Subjects "torch", "torch-cuda" and "torch-triton": the layers of :mod:`localnorm.torch`.

Each case builds ``LocalNorm1d`` (rank 2), the rank-agnostic ``LocalNorm`` (rank 3),
``LocalNorm2d`` (rank 4) or ``LocalNorm3d`` (rank 5) with the case's K, C, eps and
partition, loads gamma/beta into ``weight``/``bias`` and runs it: ``"batch"`` mode in
training (on CPU the fused ``F.batch_norm`` free view for strided NCHW batches, the
copy-free reduction path with its closed-form backward for contiguous groups,
channels_last and ragged batches; on CUDA the fused call with layout copies),
``"single"``/``"set"`` in evaluation after ``set_mode``. Gradients with respect to the
input, weight and bias come from autograd. The layers take their channels on axis 1
only; other axes are skipped by :meth:`supports`. The paths only tracers take
(``torch.compile``, ``torch.func``) are held equal to these in ``tests/torch``.

Rank 4/5 inputs with an odd batch size are passed as channels_last, so the conformance
battery covers both memory formats (and checks the format is kept). Parameters are
float32 for bfloat16 input (the AMP layout: the activations are read as bfloat16, the
statistics accumulated in float32) and x's dtype otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..harness import Case, Harness

_LOW = ("float16", "bfloat16")


class TorchLayerHarness(Harness):
    name = "torch"
    dtypes = ("float64", "float32", "bfloat16")
    grads = True
    group_arrays = True
    modes = ("batch", "single", "set")
    partitions = ("contiguous", "strided")
    channel_axes = (1,)
    ranks = (2, 3, 4, 5)
    device = "cpu"
    options = {"flag": ("affine", "track_running_stats", "check_finite", "shared_affine"),
               "momentum": ("momentum",), "num_features": ("num_features",)}

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch not installed"
        return None

    def build_layer(self, **options):
        import localnorm.torch as lt

        options = {"num_features": 3, "num_groups": 2, **options}
        return lt.LocalNorm2d(**options, device=self.device)

    # -- conversion -------------------------------------------------------------------

    def _tensor(self, a: np.ndarray):
        import torch

        if a.dtype.name == "bfloat16":  # ml_dtypes: exact through float32
            t = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        else:
            t = torch.from_numpy(np.ascontiguousarray(a))
        t = t.to(self.device)
        if t.ndim in (4, 5) and t.shape[0] % 2 == 1:
            fmt = torch.channels_last if t.ndim == 4 else torch.channels_last_3d
            t = t.contiguous(memory_format=fmt)
        return t

    @staticmethod
    def _numpy(t, dtype: str) -> np.ndarray:
        import torch

        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()

    def _build(self, case: Case):
        import torch

        import localnorm.torch as lt

        layer_cls = {2: lt.LocalNorm1d, 3: lt.LocalNorm, 4: lt.LocalNorm2d, 5: lt.LocalNorm3d}
        cls = layer_cls.get(case.x.ndim, lt.LocalNorm2d)
        pdtype = getattr(torch, "float32" if case.dtype in _LOW else case.dtype)
        layer = cls(
            case.num_features, num_groups=case.num_groups, eps=case.eps,
            partition=case.partition, device=self.device, dtype=pdtype,
            shared_affine=case.shared_affine,
        )
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(case.gamma))
            layer.bias.copy_(torch.from_numpy(case.beta))
        if case.mode == "batch":
            layer.train()
        else:
            group = case.group
            if not isinstance(group, (int, np.integer)):
                # Integer arrays become long tensors; a float or bool group keeps its
                # dtype, so the layer (not this harness) decides to refuse it.
                group = np.asarray(group)
                group = torch.as_tensor(group, dtype=torch.long if np.issubdtype(
                    group.dtype, np.integer) else None)
            layer.eval()
            layer.set_mode(case.mode, group)
        return layer

    def _run(self, case: Case, requires_grad: bool):
        x = self._tensor(case.x)
        if requires_grad:
            x.requires_grad_(True)
        layer = self._build(case)
        y = layer(x)
        if x.ndim in (4, 5) and x.shape[0] % 2 == 1 and not y.is_contiguous():
            import torch

            fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            assert y.is_contiguous(memory_format=fmt), "channels_last input lost its format"
        return x, layer, y

    # -- the harness protocol ---------------------------------------------------------

    def forward(self, case: Case) -> np.ndarray:
        _, _, y = self._run(case, requires_grad=False)
        return self._numpy(y, case.dtype)

    def vjp(self, case: Case, cotangent: np.ndarray):
        import torch

        x, layer, y = self._run(case, requires_grad=True)
        ct = torch.from_numpy(np.asarray(cotangent, dtype=np.float64)).to(y.dtype).to(self.device)
        dx, dw, db = torch.autograd.grad(y, (x, layer.weight, layer.bias), grad_outputs=ct)
        return tuple(t.detach().double().cpu().numpy() for t in (dx, dw, db))


class TorchLayerCudaHarness(TorchLayerHarness):
    """The same layers on the first CUDA device (skipped where there is none)."""

    name = "torch-cuda"
    dtypes = ("float64", "float32", "bfloat16")
    device = "cuda"

    @classmethod
    def unavailable(cls) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
        return None


class TorchTritonHarness(TorchLayerHarness):
    """The same layers on the fused Triton kernels (``localnorm.torch._triton``): on a
    CUDA device where there is one, else on CPU tensors through Triton's interpreter,
    enabled for the process with ``TRITON_INTERPRET=1 LOCALNORM_TRITON=1`` (the
    ``torch-triton`` line of ``.ci/test``). Small shapes and few examples
    (``max_examples``): the interpreter runs a kernel as NumPy operations per program.
    Every case checks that the kernels ran, and for gradients their backward, so a
    dispatch that fell back to another path fails."""

    name = "torch-triton"
    dtypes = ("float32", "float16", "bfloat16")
    max_examples = 8

    @staticmethod
    def _interpreting() -> bool:
        import os

        return os.environ.get("TRITON_INTERPRET") == "1" \
            and os.environ.get("LOCALNORM_TRITON") == "1"

    @classmethod
    def unavailable(cls) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        if importlib.util.find_spec("triton") is None:
            return ("triton not importable (.ci/install puts it in the directory "
                    ".ci/triton.sh names; .ci/test adds that to PYTHONPATH)")
        import torch

        if not torch.cuda.is_available() and not cls._interpreting():
            return ("no CUDA device, and Triton's interpreter is not enabled: run with "
                    "TRITON_INTERPRET=1 LOCALNORM_TRITON=1 (as .ci/test does)")
        return None

    def __init__(self) -> None:
        self.device = "cpu" if self._interpreting() else "cuda"

    def _checked(self, case: Case, grads: bool, run):
        from localnorm.torch import _triton

        kind = "batch" if case.mode == "batch" else "eval"
        before = dict(_triton.launches)
        out = run()
        assert _triton.launches[kind] > before[kind], \
            f"the Triton kernels did not run for this {case.mode!r} case"
        if grads:
            assert _triton.launches[kind + "_backward"] > before[kind + "_backward"], \
                f"the Triton backward kernels did not run for this {case.mode!r} case"
        return out

    def forward(self, case: Case) -> np.ndarray:
        return self._checked(case, False, lambda: super(TorchTritonHarness, self).forward(case))

    def vjp(self, case: Case, cotangent: np.ndarray):
        return self._checked(case, True,
                             lambda: super(TorchTritonHarness, self).vjp(case, cotangent))
