"""The one dtype table of the conformance suite, and how it becomes a tolerance.

LocalNorm amplifies rounding where a statistics set is nearly constant: an error ``d`` in
``x - mean`` becomes ``d / sqrt(var + eps)`` in the normalized value (up to
``1 / sqrt(eps)``, about 316 for eps=1e-5), then times ``|gamma|``. So the tolerance of
each output element is built from the reference's own statistics of its statistics set
and channel::

    amp = (max|x - mean| + |mean|) / sqrt(var + eps)      (per set and channel)
    tol = OUT * u_out * |y_ref| + COMPUTE * u_compute * (amp * |gamma| + |beta|) + OUT * tiny

``u_out`` is the unit roundoff of the output dtype (one final rounding), ``u_compute``
that of the dtype the statistics are accumulated in (float32 for float16/bfloat16 input,
as the spec requires). The ``|mean|`` term covers rounding of the mean itself, which
matters on near-constant sets with a large offset.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from localnorm import reference
from conformance.harness import Case


@dataclasses.dataclass(frozen=True)
class DtypeTolerance:
    #: Unit roundoff of the output dtype.
    u_out: float
    #: Unit roundoff of the dtype statistics are computed in.
    u_compute: float
    #: Smallest normal number of the output dtype (an absolute floor: subnormal outputs).
    tiny: float


#: THE dtype table. Keys are NumPy dtype names of x (bfloat16 as ml_dtypes names it).
TABLE: dict[str, DtypeTolerance] = {
    "float64": DtypeTolerance(u_out=2.0**-53, u_compute=2.0**-53, tiny=2.0**-1022),
    "float32": DtypeTolerance(u_out=2.0**-24, u_compute=2.0**-24, tiny=2.0**-126),
    "float16": DtypeTolerance(u_out=2.0**-11, u_compute=2.0**-24, tiny=2.0**-14),
    "bfloat16": DtypeTolerance(u_out=2.0**-8, u_compute=2.0**-24, tiny=2.0**-126),
}

#: Safety factors: rounding of the output (one rounding, plus input conversions) and of
#: the statistics (sums over up to a few hundred values, a square root, a division).
OUT = 2.0
COMPUTE = 64.0

#: The float64 bound the issue asks for on well-conditioned data.
FLOAT64_WELL_CONDITIONED = 1e-12


def x64(x: np.ndarray) -> np.ndarray:
    """x as float64 (exact for every tested dtype, bfloat16 included)."""
    return np.asarray(x).astype(np.float64)


def expected(case: Case) -> np.ndarray:
    """The reference output (float64) for a case."""
    return reference.local_norm(x64(case.x), case.gamma, case.beta, **case.reference_kwargs())


def _sets(case: Case):
    return reference.statistics_sets(
        case.x.shape[0], case.num_groups, mode=case.mode, group=case.group,
        partition=case.partition,
    )


def _per_set(case: Case, fn) -> np.ndarray:
    """Evaluate ``fn(xs, mean, var)`` per statistics set (reduced over all axes but the
    channel axis) and broadcast it back to x's shape."""
    x = x64(case.x)
    axis = case.axis % x.ndim
    out = np.empty_like(x)
    for samples, _ in _sets(case):
        xs = x[samples]
        reduce = tuple(a for a in range(x.ndim) if a != axis)
        mean = xs.mean(axis=reduce, keepdims=True)
        var = ((xs - mean) ** 2).mean(axis=reduce, keepdims=True)
        out[samples] = np.broadcast_to(fn(xs, mean, var), xs.shape)
    return out


def amplification(case: Case) -> np.ndarray:
    """``amp`` of every element of x (see the module docstring)."""
    axis = case.axis % case.x.ndim

    def amp(xs, mean, var):
        reduce = tuple(a for a in range(xs.ndim) if a != axis)
        spread = np.abs(xs - mean).max(axis=reduce, keepdims=True)
        return (spread + np.abs(mean)) / np.sqrt(var + case.eps)

    return _per_set(case, amp)


def condition(case: Case) -> float:
    """``max|x - mean| / sqrt(var + eps)`` over all sets and channels: how far the case
    is from well-conditioned (about sqrt(m) for spread data, large for near-constant)."""
    axis = case.axis % case.x.ndim

    def spread(xs, mean, var):
        reduce = tuple(a for a in range(xs.ndim) if a != axis)
        return np.abs(xs - mean).max(axis=reduce, keepdims=True) / np.sqrt(var + case.eps)

    return float(_per_set(case, spread).max())


def rows(case: Case, p: np.ndarray) -> np.ndarray:
    """The gamma (or beta) value each element of x uses, broadcast to x's shape."""
    x = case.x
    axis = case.axis % x.ndim
    row = np.empty(x.shape[0], dtype=np.int64)
    for samples, rws in _sets(case):
        row[samples] = rws
    shape = [1] * x.ndim
    shape[0], shape[axis] = x.shape[0], p.shape[1]
    return np.broadcast_to(p[row].reshape(shape), x.shape)


def tolerance(case: Case, y_ref: np.ndarray | None = None) -> np.ndarray:
    """Per-element absolute tolerance of a subject's output for ``case``."""
    t = TABLE[case.dtype]
    y_ref = expected(case) if y_ref is None else y_ref
    g = np.abs(rows(case, case.gamma))
    b = np.abs(rows(case, case.beta))
    amp = amplification(case)
    return OUT * t.u_out * np.abs(y_ref) + COMPUTE * t.u_compute * (amp * g + b) + OUT * t.tiny


def describe_mismatch(actual: np.ndarray, y_ref: np.ndarray, tol: np.ndarray) -> str:
    """A short account of the worst elements, for assertion messages."""
    err = np.abs(x64(actual) - y_ref)
    bad = ~(err <= tol)
    idx = np.unravel_index(int(np.argmax(np.where(bad, err - tol, -np.inf))), err.shape)
    return (
        f"{int(bad.sum())} of {err.size} elements outside tolerance; worst at {idx}: "
        f"actual={x64(actual)[idx]!r}, expected={y_ref[idx]!r}, |err|={err[idx]:.3g}, "
        f"tol={tol[idx]:.3g}; max|err|={err.max():.3g}"
    )


def assert_close(actual: np.ndarray, y_ref: np.ndarray, tol: np.ndarray, what: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == y_ref.shape, f"{what}: shape {actual.shape} != {y_ref.shape}"
    err = np.abs(x64(actual) - y_ref)
    if not np.all(err <= tol):  # NaN fails too
        raise AssertionError(f"{what}: {describe_mismatch(actual, y_ref, tol)}")


def grad_tolerance(case: Case, cotangent: np.ndarray) -> tuple[float, float, float]:
    """Max-norm tolerances of (dx, dgamma, dbeta) against ``reference.local_norm_vjp``.

    The backward pass of a normalization loses about ``amp**2`` more than the forward
    (xhat appears twice in dx); each tolerance is ``COMPUTE * u * max(amp, 1)**2`` times the size
    of the terms summed: ``|ct| |gamma| rstd`` for dx, ``|ct| amp n`` for dgamma and
    ``|ct| n`` for dbeta, with n the values per channel.
    """
    t = TABLE[case.dtype]
    u = max(t.u_compute, t.u_out)
    amp = max(float(amplification(case).max()), 1.0)
    rstd = float(_per_set(case, lambda xs, mean, var: 1.0 / np.sqrt(var + case.eps)).max())
    ct = float(np.abs(cotangent).max())
    n = case.x.size // case.num_features
    scales = (ct * float(np.abs(case.gamma).max()) * rstd, ct * amp * n, ct * n)
    return tuple(COMPUTE * u * amp**2 * s + OUT * t.tiny for s in scales)


__all__ = [
    "TABLE", "DtypeTolerance", "expected", "tolerance", "amplification", "condition",
    "assert_close", "grad_tolerance", "rows", "x64", "FLOAT64_WELL_CONDITIONED",
]
