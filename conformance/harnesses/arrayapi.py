"""Subjects "numpy", "strict", "torch-array", "jax-array": the public functional
:func:`localnorm.local_norm` called on arrays of that namespace.

These hold the array-API implementation (``localnorm/_agnostic.py``) to the reference on
every library it claims to run on. Parameters are passed in x's dtype for float32/float64
input and in float32 for float16/bfloat16 input (the parameter dtype a mixed-precision
layer keeps); the strategies draw gamma and beta exactly representable in float32, so the
reference sees the same values.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np

import localnorm
from ..harness import Case, Harness

_LOW = ("float16", "bfloat16")


def param_dtype(dtype: str) -> str:
    """The dtype gamma/beta are passed in for input of ``dtype``."""
    return "float32" if dtype in _LOW else dtype


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed" if absent else None


class _ArrayAPIHarness(Harness):
    """Shared shape of the array-API subjects: convert, call local_norm, convert back."""

    core_statistics = True

    def _to(self, a: np.ndarray, dtype: str | None = None):
        raise NotImplementedError

    def _from(self, a, dtype: str) -> np.ndarray:
        raise NotImplementedError

    def _context(self):
        return contextlib.nullcontext()

    def _args(self, case: Case):
        pd = param_dtype(case.dtype)
        x = self._to(case.x)
        gamma = self._to(case.gamma.astype(pd))
        beta = self._to(case.beta.astype(pd))
        group = case.group
        if isinstance(group, np.integer):
            group = int(group)
        if isinstance(group, np.ndarray):
            # The array keeps its dtype (int64 per-sample groups; a float or bool array of
            # the bad-input battery reaches local_norm as such, never cast to int here).
            group = self._to(group)
        kwargs = case.reference_kwargs()
        kwargs["group"] = group
        return x, gamma, beta, kwargs

    def forward(self, case: Case) -> np.ndarray:
        with self._context():
            x, gamma, beta, kwargs = self._args(case)
            return self._from(localnorm.local_norm(x, gamma, beta, **kwargs), case.dtype)


class NumpyHarness(_ArrayAPIHarness):
    """NumPy arrays; bfloat16 is ``ml_dtypes.bfloat16`` (NumPy has none of its own)."""

    name = "numpy"
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def _to(self, a):
        return a

    def _from(self, a, dtype):
        return np.asarray(a)


class StrictHarness(_ArrayAPIHarness):
    """array-api-strict: only what the standard allows (it has no float16)."""

    name = "strict"
    dtypes = ("float64", "float32")

    @classmethod
    def unavailable(cls):
        return _missing("array_api_strict")

    def _to(self, a):
        import array_api_strict as xp

        return xp.asarray(a)

    def _from(self, a, dtype):
        return np.asarray(a)


class TorchArrayHarness(_ArrayAPIHarness):
    """torch.Tensor (CPU) through array-api-compat, with autograd gradients."""

    name = "torch-array"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    grads = True

    @classmethod
    def unavailable(cls):
        return _missing("torch")

    def _to(self, a):
        import torch

        if a.dtype.name == "bfloat16":  # ml_dtypes: exact through float32
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(np.asarray(a, order="C"))  # ascontiguousarray makes 0-d 1-d

    def _from(self, a, dtype):
        import torch

        a = a.detach()
        if a.dtype == torch.bfloat16:
            import ml_dtypes

            return a.float().numpy().astype(ml_dtypes.bfloat16)
        return a.numpy()

    def vjp(self, case, cotangent):
        import torch

        x, gamma, beta, kwargs = self._args(case)
        for t in (x, gamma, beta):
            t.requires_grad_(True)
        y = localnorm.local_norm(x, gamma, beta, **kwargs)
        ct = torch.from_numpy(np.asarray(cotangent, dtype=np.float64)).to(y.dtype)
        dx, dg, db = torch.autograd.grad(y, (x, gamma, beta), grad_outputs=ct)
        return tuple(t.detach().double().numpy() for t in (dx, dg, db))


class JaxArrayHarness(_ArrayAPIHarness):
    """jax.Array through array-api-compat, under ``jax.jit`` (how JAX code runs
    localnorm), with ``jax.vjp`` gradients. float64 runs under ``jax.enable_x64(True)``
    scoped to each call (the global flag is left alone). Every new signature compiles, so
    cases come from the strategies' catalog (``compiles = True``); the eager (un-jitted)
    path is covered by tests/core."""

    name = "jax-array"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    grads = True
    compiles = True

    _STATIC = ("axis", "mode", "partition", "eps", "num_groups")

    @classmethod
    def unavailable(cls):
        return _missing("jax")

    def __init__(self):
        import jax

        def fwd(x, gamma, beta, group, **kw):
            return localnorm.local_norm(x, gamma, beta, group=group, **kw)

        def vjp(x, gamma, beta, ct, group, **kw):
            y, pullback = jax.vjp(lambda x, g, b: fwd(x, g, b, group, **kw), x, gamma, beta)
            return pullback(ct.astype(y.dtype))

        # Int groups are static (they pick a row); per-sample group arrays are traced.
        self._fwd = {
            True: jax.jit(fwd, static_argnames=("group",) + self._STATIC),
            False: jax.jit(fwd, static_argnames=self._STATIC),
        }
        self._vjp = {
            True: jax.jit(vjp, static_argnames=("group",) + self._STATIC),
            False: jax.jit(vjp, static_argnames=self._STATIC),
        }

    def _context(self):
        import jax

        return jax.enable_x64(True)

    def _to(self, a):
        import jax.numpy as jnp

        return jnp.asarray(a)

    def _from(self, a, dtype):
        return np.asarray(a)

    def forward(self, case: Case) -> np.ndarray:
        with self._context():
            x, gamma, beta, kwargs = self._args(case)
            group = kwargs.pop("group")
            static = isinstance(group, int)
            return self._from(self._fwd[static](x, gamma, beta, group, **kwargs), case.dtype)

    def vjp(self, case, cotangent):
        with self._context():
            x, gamma, beta, kwargs = self._args(case)
            group = kwargs.pop("group")
            static = isinstance(group, int)
            ct = self._to(np.asarray(cotangent, dtype=np.float64))
            grads = self._vjp[static](x, gamma, beta, ct, group, **kwargs)
            return tuple(np.asarray(g, dtype=np.float64) for g in grads)
