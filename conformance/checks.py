"""The checks of the battery, by name: each ``check(harness, case, **extra)`` raises
AssertionError on a mismatch. The tests in test_conformance.py draw cases and call them
through :func:`run`, which saves a failing case for ``python -m conformance.repro``; the
repro script calls the same check on the saved case, so the reproduction is exact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from localnorm import reference
from . import tolerances as tol
from .harness import Case, Harness

#: Where failing cases are saved (git-ignored).
FAILURES = Path(os.environ.get("LOCALNORM_CONFORMANCE_FAILURES", ".conformance-failures"))
#: When set, :func:`run` appends one JSON line per checked case (subject, check, mode,
#: partition, dtype, outcome): ``localnorm conformance`` builds its matrix from them.
CELLS = os.environ.get("LOCALNORM_CONFORMANCE_CELLS")

CHECKS: dict[str, Callable[..., None]] = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def replace(case: Case, **changes) -> Case:
    import dataclasses

    return dataclasses.replace(case, **changes)


def numpy_batchnorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, axis: int,
                    eps: float) -> np.ndarray:
    """A tiny independent BatchNorm with batch statistics (gamma, beta of shape (C,))."""
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    red = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = x.mean(axis=red).reshape(shape)
    var = x.var(axis=red).reshape(shape)  # biased, ddof=0
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


# -- forward and gradients ------------------------------------------------------------

@check
def forward(h: Harness, case: Case, *, well_conditioned: bool = False, grow: bool = True) -> None:
    """The subject's output equals the reference's (and to 1e-12 in well-conditioned
    float64). ``grow=False`` holds it to the tolerance of small sets at any set size."""
    y_ref = tol.expected(case)
    y = h.forward(case)
    assert str(np.asarray(y).dtype) == case.dtype, f"output dtype {np.asarray(y).dtype} != {case.dtype}"
    tol.assert_close(y, y_ref, tol.tolerance(case, y_ref, grow=grow), "forward vs reference")
    if well_conditioned and case.dtype == "float64":
        err = float(np.abs(tol.x64(y) - y_ref).max())
        assert err <= tol.FLOAT64_WELL_CONDITIONED, (
            f"float64 max|err| {err:.3g} > {tol.FLOAT64_WELL_CONDITIONED}")


@check
def constant_finite(h: Harness, case: Case) -> None:
    """Constant (zero-variance) input gives a finite output equal to beta."""
    y = tol.x64(h.forward(case))
    assert np.all(np.isfinite(y)), "non-finite output on constant input"
    y_ref = tol.expected(case)
    tol.assert_close(y, y_ref, tol.tolerance(case, y_ref), "constant input vs reference")


@check
def grads(h: Harness, case: Case, *, cotangent: np.ndarray) -> None:
    """(dx, dgamma, dbeta) equal ``reference.local_norm_vjp``."""
    ref = reference.local_norm_vjp(tol.x64(case.x), case.gamma, case.beta, cotangent,
                                   **case.reference_kwargs())
    got = h.vjp(case, cotangent)
    bounds = tol.grad_tolerance(case, cotangent)
    for name, g, r, b in zip(("dx", "dgamma", "dbeta"), got, ref, bounds):
        g = np.asarray(g, dtype=np.float64)
        assert g.shape == r.shape, f"{name}: shape {g.shape} != {r.shape}"
        err = float(np.abs(g - r).max()) if g.size else 0.0
        assert err <= b, f"{name}: max|err| {err:.3g} > tol {b:.3g}"


# -- invariants -----------------------------------------------------------------------

@check
def batchnorm(h: Harness, case: Case) -> None:
    """K=1 "batch" mode, and "set" mode for any K, equal BatchNorm with batch statistics
    (with the scale and shift of the group used)."""
    assert case.mode in ("batch", "set") and (case.mode == "set" or case.num_groups == 1)
    row = 0 if case.mode == "batch" else int(case.group)
    y_bn = numpy_batchnorm(tol.x64(case.x), case.gamma[row], case.beta[row], case.axis, case.eps)
    tol.assert_close(h.forward(case), y_bn, tol.tolerance(case, y_bn), "vs numpy BatchNorm")


@check
def set_moments(h: Harness, case: Case) -> None:
    """Each statistics set's output has per-channel mean beta_k and standard deviation
    |gamma_k| * sqrt(var / (var + eps)) (|gamma_k| up to eps)."""
    y = tol.x64(h.forward(case))
    t = tol.tolerance(case)
    axis = case.axis % case.x.ndim
    x = tol.x64(case.x)
    for samples, rws in reference.statistics_sets(
        case.x.shape[0], case.num_groups, mode=case.mode, group=case.group,
        partition=case.partition,
    ):
        if len(set(rws.tolist())) != 1:
            continue  # per-sample groups: the moments are per sample, checked in "single"
        r = int(rws[0])
        red = tuple(a for a in range(x.ndim) if a != axis)
        var = x[samples].var(axis=red)
        mean_y, std_y = y[samples].mean(axis=red), y[samples].std(axis=red)
        slack = t[samples].max(axis=red)
        want_std = np.abs(case.gamma[r]) * np.sqrt(var / (var + case.eps))
        assert np.all(np.abs(mean_y - case.beta[r]) <= slack), (
            f"set {samples.tolist()}: mean {mean_y} != beta[{r}] {case.beta[r]}")
        assert np.all(np.abs(std_y - want_std) <= 2 * slack), (
            f"set {samples.tolist()}: std {std_y} != |gamma[{r}]|*sqrt(var/(var+eps)) {want_std}")


def _set_of_sample(case: Case) -> np.ndarray:
    out = np.empty(case.x.shape[0], dtype=np.int64)
    sets = reference.statistics_sets(case.x.shape[0], case.num_groups, mode=case.mode,
                                     group=case.group, partition=case.partition)
    for i, (samples, _) in enumerate(sets):
        out[samples] = i
    return out


@check
def affine(h: Harness, case: Case, *, scale: float, shift: np.ndarray) -> None:
    """x -> scale * x + shift[set, channel] with eps -> scale**2 * eps leaves the output
    unchanged (a positive affine change within each statistics set)."""
    axis = case.axis % case.x.ndim
    shape = [1] * case.x.ndim
    shape[0], shape[axis] = case.x.shape[0], case.num_features
    per_sample = shift[_set_of_sample(case)].reshape(shape)
    x2 = scale * tol.x64(case.x) + per_sample
    from .strategies import as_dtype

    case2 = replace(case, x=as_dtype(x2, case.dtype), eps=case.eps * scale**2)
    y1, y2 = h.forward(case), h.forward(case2)
    slack = tol.tolerance(case) + tol.tolerance(case2)
    # case2's x was rounded to the dtype: allow for that rounding, amplified.
    rounding = tol.TABLE[case.dtype].u_out * tol.amplification(case2) * np.abs(
        tol.rows(case, case.gamma))
    tol.assert_close(y2, tol.x64(y1), slack + 2 * rounding, "affine-transformed input")


@check
def permutation(h: Harness, case: Case, *, perm: np.ndarray) -> None:
    """Permuting samples within their statistics sets permutes the output the same way."""
    sets = _set_of_sample(case)
    assert np.array_equal(sets[perm], sets), "perm must keep each sample in its set"
    group = case.group if isinstance(case.group, (int, np.integer)) else np.asarray(case.group)[perm]
    case2 = replace(case, x=case.x[perm], group=group)
    y1, y2 = tol.x64(h.forward(case)), h.forward(case2)
    slack = tol.tolerance(case)[perm] + tol.tolerance(case2)
    tol.assert_close(y2, y1[perm], slack, "permuted within sets")


@check
def single_independent(h: Harness, case: Case, *, index: int, others: np.ndarray) -> None:
    """In "single" mode a sample's output does not depend on the other samples: alone,
    or with the others replaced, it is the same."""
    assert case.mode == "single"
    y = tol.x64(h.forward(case))
    g = case.group
    g_one = g if isinstance(g, (int, np.integer)) else np.asarray(g)[index : index + 1]
    alone = h.forward(replace(case, x=case.x[index : index + 1], group=g_one))
    x2 = others.astype(case.x.dtype).copy()
    x2[index] = case.x[index]
    mixed = h.forward(replace(case, x=x2))
    t = tol.tolerance(case)[index : index + 1]
    tol.assert_close(alone, y[index : index + 1], 2 * t, f"sample {index} alone")
    tol.assert_close(tol.x64(mixed)[index : index + 1], y[index : index + 1], 2 * t,
                     f"sample {index} with other samples replaced")


@check
def refuses(h: Harness, case: Case, *, kind: str) -> None:
    """Error parity: the reference refuses the case, and so must the subject, with a
    ValueError or TypeError."""
    try:
        tol.expected(case)
    except (ValueError, TypeError):
        pass
    else:
        raise AssertionError(f"the reference accepts the {kind!r} case; the test is wrong")
    try:
        h.forward(case)
    except (ValueError, TypeError):
        return
    except Exception as exc:  # noqa: BLE001 - the point is to report the wrong type
        raise AssertionError(
            f"{kind}: expected ValueError/TypeError, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{kind}: the subject accepted input the reference refuses")


# -- saving and reproducing -----------------------------------------------------------

def save(path: Path, check_name: str, subject: str, case: Case, extra: dict) -> Path:
    """Save a case (and the check's extra arguments) to ``path`` (.npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x": tol.x64(case.x), "x_dtype": np.array(case.dtype), "gamma": case.gamma,
        "beta": case.beta, "axis": np.array(case.axis), "mode": np.array(case.mode),
        "partition": np.array(case.partition), "eps": np.array(case.eps),
        "group": np.asarray(case.group), "group_is_int": np.array(
            isinstance(case.group, (int, np.integer))),
        "check": np.array(check_name), "subject": np.array(subject),
        "groups": np.array(-1 if case.groups is None else case.groups),
    }
    for key, value in extra.items():
        arrays[f"extra_{key}"] = np.asarray(value)
    np.savez(path, **arrays)
    return path


def load(path: str | Path) -> tuple[str, str, Case, dict]:
    """Inverse of :func:`save`: ``(check_name, subject, case, extra)``."""
    from .strategies import as_dtype

    d = np.load(path, allow_pickle=False)
    group = int(d["group"]) if bool(d["group_is_int"]) else d["group"].astype(np.int64)
    case = Case(
        x=as_dtype(d["x"], str(d["x_dtype"])), gamma=d["gamma"], beta=d["beta"],
        axis=int(d["axis"]), mode=str(d["mode"]), group=group,
        partition=str(d["partition"]), eps=float(d["eps"]),
        groups=int(d["groups"]) if "groups" in d.files and int(d["groups"]) >= 0 else None,
    )
    extra = {}
    for key in d.files:
        if key.startswith("extra_"):
            v = d[key]
            extra[key[6:]] = v.item() if v.ndim == 0 else v
    return str(d["check"]), str(d["subject"]), case, extra


def run(check_name: str, h: Harness, case: Case, test_id: str = "", **extra) -> None:
    """Run a check; on failure save the case and add the reproduction command to the
    error as a note (pytest and hypothesis show it with the final, shrunk example)."""
    try:
        CHECKS[check_name](h, case, **extra)
    except Exception as exc:
        _record(check_name, h, case, test_id, "fail")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id or f"{check_name}-{h.name}").strip("_")
        path = save(FAILURES / f"{stem}.npz", check_name, h.name, case, extra)
        msg = (f"Reproduce: python -m {__package__}.repro {path} --subject {h.name}\n"
               f"  case: dtype={case.dtype} shape={case.x.shape} axis={case.axis} "
               f"mode={case.mode!r} group={case.group!r} partition={case.partition!r} "
               f"K={case.num_groups} eps={case.eps}"
               + (" shared_affine" if case.shared_affine else ""))
        exc.add_note(msg)
        raise
    _record(check_name, h, case, test_id, "pass")


def _record(check_name: str, h: Harness, case: Case, test_id: str, outcome: str) -> None:
    if CELLS:
        import json

        with open(CELLS, "a", encoding="utf-8") as f:
            f.write(json.dumps({"subject": h.name, "check": check_name, "test": test_id,
                                "mode": case.mode, "partition": case.partition,
                                "dtype": case.dtype, "outcome": outcome}) + "\n")
