"""The conformance battery: every selected subject (see conftest.py) against the NumPy
reference. Each test draws cases with the shared strategies, restricted to what the
subject declares (dtypes, modes, partitions, ranks, channel axes), and runs a named check
from checks.py; a failure saves the case and prints ``python -m conformance.repro ...``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from localnorm import reference
from . import checks, strategies
from .harness import Case


def _id(request) -> str:
    return request.node.name


def _skip_unless_any(harness, **kwargs) -> None:
    """Skip when the subject declares nothing the test can draw."""
    for key, values in kwargs.items():
        if not any(v in getattr(harness, key) for v in values):
            pytest.skip(f"{harness.name} declares no {key} in {values}")


# -- forward --------------------------------------------------------------------------

def test_forward(harness, request):
    """Every mode, partition, axis, rank and dtype: output equals the reference (and to
    1e-12 in float64)."""

    @given(strategies.for_subject(harness))
    def run(case):
        checks.run("forward", harness, case, _id(request), well_conditioned=True)

    run()


def test_forward_float64_ragged(harness, request):
    """float64 "batch" mode on ragged batches (N not a multiple of K >= 2, groups of
    unequal sizes) and larger sets than test_forward draws: equal to the reference to
    1e-12."""
    _skip_unless_any(harness, dtypes=("float64",), modes=("batch",))

    @given(strategies.for_subject(harness, dtypes=("float64",), modes=("batch",),
                                  ranks=(3, 4, 5), groups=(2, 4), ragged=True, min_side=2,
                                  max_side=6, max_batch_extra=12))
    def run(case):
        checks.run("forward", harness, case, _id(request), well_conditioned=True)

    run()


@pytest.mark.parametrize("entry", strategies.REALISTIC, ids=lambda e: e.id)
def test_forward_realistic(harness, entry, request):
    """Full-size inputs (strategies.REALISTIC: up to 65536 values per statistics set,
    offsets up to 50 standard deviations): within the tolerance, whose summation term
    grows with the set size. Subjects on localnorm's array-API core
    (``Harness.core_statistics``) are held to the tolerance of small sets, and to 1e-12
    in float64: their accuracy does not degrade with the set size."""
    case = strategies.realistic_case(entry, harness.channel_axes)
    reason = harness.supports(case)
    if reason:
        pytest.skip(reason)
    core = harness.core_statistics
    checks.run("forward", harness, case, _id(request), well_conditioned=core, grow=not core)


def test_forward_near_constant(harness, request):
    """Near-constant statistics sets (eps dominates, rounding amplified): within the dtype
    table's tolerance."""

    @given(strategies.for_subject(harness, conditioning="near-constant"))
    def run(case):
        checks.run("forward", harness, case, _id(request))

    run()


def test_constant_input_finite(harness, request):
    """Exactly constant input: finite output, equal to beta."""

    @given(strategies.for_subject(harness, conditioning="near-constant"), st.data())
    def run(case, data):
        value = data.draw(st.floats(-100, 100, width=16), label="value")
        x = strategies.as_dtype(np.full(case.x.shape, value), case.dtype)
        checks.run("constant_finite", harness, checks.replace(case, x=x), _id(request))

    run()


# -- gradients ------------------------------------------------------------------------

def test_grads(harness, request):
    """(dx, dgamma, dbeta) equal reference.local_norm_vjp (float64 and float32)."""
    if not harness.grads:
        pytest.skip(f"{harness.name} has no gradients (grads=False)")
    _skip_unless_any(harness, dtypes=("float64", "float32"))

    @given(strategies.for_subject(harness, dtypes=("float64", "float32")), st.data())
    def run(case, data):
        ct = data.draw(hnp.arrays(np.float64, case.x.shape,
                                  elements=st.floats(-1, 1, width=32)), label="cotangent")
        checks.run("grads", harness, case, _id(request), cotangent=ct)

    run()


# -- one scale/shift shared by the groups (Ghost BatchNorm) ----------------------------

def test_shared_affine(harness, request):
    """gamma/beta one (1, C) row shared by the K groups along the batch axis (the Ghost
    BatchNorm option, ``shared_affine=True`` on the layers, ``num_groups=K`` in the
    functional): every mode's output equals the reference, and (dx, dgamma, dbeta)
    equal ``reference.local_norm_vjp``, whose dgamma/dbeta are the sums over the groups.
    A few examples on top of the battery above (which draws per-group rows)."""
    _skip_unless_any(harness, dtypes=("float64", "float32"))

    @settings(max_examples=min(settings().max_examples, 10))
    @given(strategies.for_subject(harness, dtypes=("float64", "float32"), groups=(2, 4),
                                  shared=True), st.data())
    def run(case, data):
        checks.run("forward", harness, case, _id(request), well_conditioned=True)
        if harness.grads:
            ct = data.draw(hnp.arrays(np.float64, case.x.shape,
                                      elements=st.floats(-1, 1, width=32)), label="cotangent")
            checks.run("grads", harness, case, _id(request), cotangent=ct)

    run()


# -- invariants -----------------------------------------------------------------------

def test_batchnorm_equivalence(harness, request):
    """K=1 "batch" mode, and "set" mode for any K, equal an independent NumPy BatchNorm
    with batch statistics."""
    _skip_unless_any(harness, modes=("batch", "set"))

    @given(st.data())
    def run(data):
        mode = data.draw(st.sampled_from([m for m in ("batch", "set") if m in harness.modes]))
        groups = (1, 1) if mode == "batch" else (1, 4)
        case = data.draw(strategies.for_subject(harness, modes=(mode,), groups=groups))
        checks.run("batchnorm", harness, case, _id(request))

    run()


def test_set_moments(harness, request):
    """Each statistics set's output has per-channel mean beta_k and std |gamma_k| (up to
    eps)."""

    @given(strategies.for_subject(harness, dtypes=("float64", "float32")))
    def run(case):
        checks.run("set_moments", harness, case, _id(request))

    _skip_unless_any(harness, dtypes=("float64", "float32"))
    run()


@st.composite
def _affine_args(draw, case: Case, scales=(0.5, 2.0, 4.0, 0.25)):
    n_sets = len(reference.statistics_sets(case.x.shape[0], case.num_groups, mode=case.mode,
                                           group=case.group, partition=case.partition))
    scale = draw(st.sampled_from(scales))
    shift = draw(hnp.arrays(np.float64, (n_sets, case.num_features),
                            elements=st.floats(-4, 4, width=16)))
    return scale, shift


def test_affine_invariance(harness, request):
    """A positive affine change of the input within each statistics set (with eps scaled
    alike) leaves the output unchanged."""

    @given(strategies.for_subject(harness), st.data())
    def run(case, data):
        # Compiling subjects: one scale, so eps * scale**2 adds few signatures.
        scales = (2.0,) if harness.compiles else (0.5, 2.0, 4.0, 0.25)
        scale, shift = data.draw(_affine_args(case, scales), label="scale, shift")
        checks.run("affine", harness, case, _id(request), scale=scale, shift=shift)

    run()


def test_permutation_equivariance(harness, request):
    """Permuting samples within their statistics sets (within a group in "batch" mode)
    permutes the output alike."""

    @given(strategies.for_subject(harness), st.data())
    def run(case, data):
        n = case.x.shape[0]
        sets = checks._set_of_sample(case)
        perm = np.arange(n)
        for s in np.unique(sets):
            members = np.flatnonzero(sets == s)
            perm[members] = data.draw(st.permutations(members.tolist()), label=f"perm {s}")
        checks.run("permutation", harness, case, _id(request), perm=perm)

    run()


def test_single_independent(harness, request):
    """A sample's "single" output does not depend on the other samples."""
    _skip_unless_any(harness, modes=("single",))

    @given(strategies.for_subject(harness, modes=("single",)), st.data())
    def run(case, data):
        index = data.draw(st.integers(0, case.x.shape[0] - 1), label="index")
        others = data.draw(hnp.arrays(np.float64, case.x.shape,
                                      elements=st.floats(-8, 8, width=16)), label="others")
        checks.run("single_independent", harness, case, _id(request), index=index,
                   others=others)

    run()


# -- error parity ---------------------------------------------------------------------

def _valid_case(harness) -> Case:
    """A small valid case the subject supports, the base of the bad ones."""
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
    pytest.skip(f"{harness.name} supports none of the error-parity base cases")


BAD_CASES = {
    "empty-batch": lambda c: checks.replace(c, x=c.x[:0]),
    "too-few-samples": lambda c: checks.replace(c, x=c.x[:1], mode="batch"),
    "wrong-channel-count": lambda c: checks.replace(
        c, gamma=np.ones((2, 4)), beta=np.zeros((2, 4))),
    "unknown-mode": lambda c: checks.replace(c, mode="bogus"),
    "group-out-of-range": lambda c: checks.replace(c, mode="set", group=2),
}


@pytest.mark.parametrize("kind", list(BAD_CASES))
def test_error_parity(harness, kind, request):
    """The subject refuses (ValueError/TypeError) what the reference refuses."""
    base = _valid_case(harness)
    if kind == "too-few-samples" and "batch" not in harness.modes:
        pytest.skip(f"{harness.name} does not run 'batch' mode")
    if kind == "group-out-of-range" and "set" not in harness.modes:
        pytest.skip(f"{harness.name} does not run 'set' mode")
    checks.run("refuses", harness, BAD_CASES[kind](base), _id(request), kind=kind)
