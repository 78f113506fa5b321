"""The oracle checks itself: the battery's invariants on ``localnorm.reference`` and its
exact VJP against central finite differences (float64). Runs once, in the session that
selects the array-API subjects (the ``core_session`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from localnorm import reference
from . import checks, strategies, subjects

pytestmark = pytest.mark.usefixtures("core_session")

REF = subjects.load("reference")
F64 = dict(dtypes=("float64",))


@given(st.data())
def test_reference_is_batchnorm(data):
    mode = data.draw(st.sampled_from(["batch", "set"]))
    case = data.draw(strategies.cases(modes=(mode,), groups=(1, 1) if mode == "batch" else (1, 4), **F64))
    checks.run("batchnorm", REF, case, "test_reference_is_batchnorm")


@given(strategies.cases(**F64))
def test_reference_set_moments(case):
    checks.run("set_moments", REF, case, "test_reference_set_moments")


@given(strategies.cases(**F64), st.data())
def test_reference_affine_invariance(case, data):
    n_sets = len(reference.statistics_sets(case.x.shape[0], case.num_groups, mode=case.mode,
                                           group=case.group, partition=case.partition))
    scale = data.draw(st.sampled_from([0.5, 2.0, 4.0, 0.25]))
    shift = data.draw(hnp.arrays(np.float64, (n_sets, case.num_features),
                                 elements=st.floats(-4, 4, width=16)))
    checks.run("affine", REF, case, "test_reference_affine_invariance", scale=scale, shift=shift)


@given(strategies.cases(**F64), st.data())
def test_reference_permutation_equivariance(case, data):
    sets = checks._set_of_sample(case)
    perm = np.arange(case.x.shape[0])
    for s in np.unique(sets):
        members = np.flatnonzero(sets == s)
        perm[members] = data.draw(st.permutations(members.tolist()))
    checks.run("permutation", REF, case, "test_reference_permutation_equivariance", perm=perm)


@given(strategies.cases(modes=("single",), **F64), st.data())
def test_reference_single_independent(case, data):
    index = data.draw(st.integers(0, case.x.shape[0] - 1))
    others = data.draw(hnp.arrays(np.float64, case.x.shape, elements=st.floats(-8, 8, width=16)))
    checks.run("single_independent", REF, case, "test_reference_single_independent",
               index=index, others=others)


def _finite_difference_vjp(case, ct, h=1e-6):
    """Central differences of sum(local_norm(.) * ct) in x, gamma and beta."""
    def f(x, g, b):
        return float((reference.local_norm(x, g, b, **case.reference_kwargs()) * ct).sum())

    args = [case.x.astype(np.float64), case.gamma.copy(), case.beta.copy()]
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + h
            up = f(*args)
            a[idx] = saved - h
            down = f(*args)
            a[idx] = saved
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads


@given(strategies.cases(ranks=(2, 3), **F64), st.data())
def test_reference_vjp_matches_finite_differences(case, data):
    """``reference.local_norm_vjp`` is the exact gradient (to finite-difference accuracy)."""
    ct = data.draw(hnp.arrays(np.float64, case.x.shape, elements=st.floats(-1, 1, width=32)))
    exact = reference.local_norm_vjp(case.x, case.gamma, case.beta, ct, **case.reference_kwargs())
    approx = _finite_difference_vjp(case, ct)
    for name, e, a in zip(("dx", "dgamma", "dbeta"), exact, approx):
        scale = 1.0 + np.abs(a).max()
        assert np.abs(e - a).max() <= 1e-5 * scale, f"{name}: {e} vs {a}"
