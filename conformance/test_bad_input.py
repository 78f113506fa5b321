"""The bad-input battery (issue 16): one table of hostile inputs, run on every subject.

Each row is a bad variation of a small valid case the subject supports: the subject must
refuse it with the same error class as the core (``ValueError``, i.e.
:class:`localnorm.LocalNormError`, or ``TypeError``) and a message with the same meaning
(each row's patterns: the value received, the argument's name in the framework's
dialect). Compiled subjects (``jax.jit``, Keras on JAX, TensorFlow graphs) run their
compiled path; every row here is refused there too, since shapes, modes, groups and eps
are known when the program is traced, except the rows that depend on values (NaN/Inf in
x, gamma or beta), which compiled subjects skip with the reason: values are unknown
under tracing, and the spec defines the result instead (NaN input, NaN output; no NaN
from finite input).

Adding a row gives the whole battery one more case on every subject; the test ids are
``test_bad_input[<subject>-<row>]``, and the report of issue 16 counts them per subject.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import pytest

from . import checks, strategies
from . import tolerances as tol
from .harness import Case


@dataclasses.dataclass(frozen=True)
class Bad:
    """One hostile input: how to make it from a valid case, and what refusing it means."""

    make: Callable[[Case], Case]
    #: The exception class expected (LocalNormError is a ValueError).
    error: type = ValueError
    #: Patterns (case-insensitive) the message must all contain: its meaning.
    meaning: tuple[str, ...] = ()
    #: The layer mode the row needs the subject to run (None: any).
    needs_mode: str | None = None
    #: Whether the refusal depends on the values of x/gamma/beta (not possible under
    #: tracing: compiled subjects skip the row).
    values: bool = False


def _set(c: Case, **kw) -> Case:
    return checks.replace(c, **kw)


def _spatial_one(c: Case) -> Case:
    """Two samples with one value per channel each: K=2 groups of 1 value."""
    x = c.x[:2]
    ch = c.axis % x.ndim
    index = tuple(slice(None) if a in (0, ch) else slice(0, 1) for a in range(x.ndim))
    return _set(c, x=x[index], mode="batch")


def _with(name: str, value):
    def make(c: Case) -> Case:
        arr = getattr(c, name).copy()
        arr.flat[1] = value
        return _set(c, **{name: arr})
    return make


def _x_with(value):
    def make(c: Case) -> Case:
        x = c.x.copy()
        x.flat[4] = value
        return _set(c, x=x, mode="set", group=0)
    return make


_EPS = r"eps(ilon)?="

BATTERY: dict[str, Bad] = {
    "empty-batch": Bad(lambda c: _set(c, x=c.x[:0]), meaning=(r"x\.shape\[0\]=0",)),
    "too-few-samples": Bad(lambda c: _set(c, x=c.x[:1], mode="batch"),
                           meaning=(r"x\.shape\[0\]=1", "batch axis"), needs_mode="batch"),
    "single-value-statistics": Bad(_spatial_one, meaning=("1 value", "variance"),
                                   needs_mode="batch"),
    "wrong-channel-count": Bad(lambda c: _set(c, gamma=np.ones((2, 4)), beta=np.zeros((2, 4))),
                               meaning=("3", "4")),
    "unknown-mode": Bad(lambda c: _set(c, mode="bogus"), meaning=("bogus",)),
    "unknown-partition": Bad(lambda c: _set(c, partition="zigzag"), meaning=("zigzag",)),
    "group-out-of-range": Bad(lambda c: _set(c, mode="set", group=2), meaning=("group=2",),
                              needs_mode="set"),
    "group-negative": Bad(lambda c: _set(c, mode="set", group=-1), meaning=("group=-1",),
                          needs_mode="set"),
    "group-bool": Bad(lambda c: _set(c, mode="set", group=True), meaning=("group=",),
                      needs_mode="set"),
    "group-float": Bad(lambda c: _set(c, mode="set", group=1.5), meaning=("group=",),
                       needs_mode="set"),
    "group-0d-float-array": Bad(lambda c: _set(c, mode="set", group=np.array(1.0)),
                                meaning=("group=",), needs_mode="set"),
    "group-0d-bool-array": Bad(lambda c: _set(c, mode="set", group=np.array(True)),
                               meaning=("group=",), needs_mode="set"),
    "group-array-column": Bad(lambda c: _set(c, mode="single",
                                             group=np.zeros((c.x.shape[0], 1), np.int64)),
                              meaning=(r"\(6, 1\)",), needs_mode="single"),
    "group-array-wrong-length": Bad(lambda c: _set(c, mode="single",
                                                   group=np.zeros(4, np.int64)),
                                    meaning=("4", "6"), needs_mode="single"),
    "eps-zero": Bad(lambda c: _set(c, eps=0.0), meaning=(_EPS + "0",)),
    "eps-negative": Bad(lambda c: _set(c, eps=-1e-5), meaning=(_EPS + "-1e-05",)),
    "eps-nan": Bad(lambda c: _set(c, eps=float("nan")), meaning=(_EPS + "nan",)),
    "eps-inf": Bad(lambda c: _set(c, eps=float("inf")), meaning=(_EPS + "inf",)),
    "eps-underflows-in-float32": Bad(lambda c: _set(c, eps=1e-50),
                                     meaning=(_EPS + "1e-50", "float32")),
    "x-nan": Bad(_x_with(np.nan), meaning=("NaN", "1 non-finite"), needs_mode="set",
                 values=True),
    "x-inf": Bad(_x_with(np.inf), meaning=("infinite", "1 non-finite"), needs_mode="set",
                 values=True),
}


def _valid_case(harness) -> Case:
    """A valid case the subject supports: 6 samples, 3 channels, K=2, rank 3 if it can."""
    dtype = "float32" if "float32" in harness.dtypes else harness.dtypes[0]
    rng = np.random.default_rng(0)
    for rank in sorted(harness.ranks, key=lambda r: (r != 3, r)):
        for axis in (-1, 1):
            shape = [6] + [3] * (rank - 1)
            case = Case(x=strategies.as_dtype(rng.normal(size=shape), dtype),
                        gamma=np.ones((2, 3)), beta=np.zeros((2, 3)), axis=axis,
                        mode="batch" if "batch" in harness.modes else harness.modes[0])
            if harness.supports(case) is None:
                return case
    pytest.skip(f"{harness.name} supports none of the battery's base cases")


@pytest.mark.parametrize("row", list(BATTERY))
def test_bad_input(harness, row):
    bad = BATTERY[row]
    if bad.needs_mode is not None and bad.needs_mode not in harness.modes:
        pytest.skip(f"{harness.name} does not run {bad.needs_mode!r} mode")
    if bad.values and (harness.compiles or getattr(harness, "traced", False)):
        pytest.skip(f"{harness.name} runs compiled: values are unknown when it is traced "
                    "(NaN/Inf input gives NaN/Inf output, as the spec defines)")
    base = _valid_case(harness)
    case = bad.make(base)
    reason = harness.supports(case)
    if reason is not None and "dtype" in reason:
        pytest.skip(reason)
    # The reference (the core's rules) refuses the row with the expected class...
    with pytest.raises(bad.error):
        tol.expected(case)
    # ...and so does the subject, with the same meaning in its own dialect.
    try:
        harness.forward(case)
    except (ValueError, TypeError) as exc:
        assert isinstance(exc, bad.error), (
            f"{row}: expected {bad.error.__name__}, got {type(exc).__name__}: {exc}")
        text = str(exc)
        missing = [p for p in bad.meaning if not re.search(p, text, re.IGNORECASE)]
        assert not missing, f"{row}: the message lacks {missing}: {text}"
        assert "Received" in text and "Fix" in text, f"{row}: not the project's format: {text}"
        return
    raise AssertionError(f"{row}: {harness.name} accepted input the core refuses")


#: The layers' constructor options, by kind: values each subject's layer must refuse
#: (with the option's name and the project's format), never read for their truth value or
#: cast. ``"flag"``: the on/off options (the string "False" is truthy); ``"momentum"``: a
#: real number in [0, 1]; ``"num_features"``: a positive int.
BAD_OPTIONS: dict[str, tuple] = {
    "flag": ("False", None, 1, 0.0),
    "momentum": (-0.1, 1.5, float("nan"), "0.9", True),
    "num_features": (0, -3, 2.5, True, "3"),
}


@pytest.mark.parametrize("kind,value", [(k, v) for k, vs in BAD_OPTIONS.items() for v in vs],
                         ids=lambda v: repr(v))
def test_bad_option(harness, kind, value):
    names = harness.options.get(kind, ())
    if not names:
        pytest.skip(f"{harness.name} has no {kind} option (no layer, or not this option)")
    for name in names:
        with pytest.raises(ValueError) as info:
            harness.build_layer(**{name: value})
        text = str(info.value)
        assert f"{name}={value!r}" in text, f"{name}={value!r}: the message lacks it: {text}"
        assert "Received" in text and "Fix" in text, f"not the project's format: {text}"
