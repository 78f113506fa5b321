"""The conformance framework itself: registry, selection, skips file, save/repro round
trip, the support matrix, and that the battery catches a wrong implementation (so its
tests can fail). Runs in the core session only."""

from __future__ import annotations

import numpy as np
import pytest

from localnorm import reference
from . import checks, repro, strategies, subjects
from .conftest import apply_skips, read_skips
from .harness import Case, Harness
from .matrix import support_matrix

pytestmark = pytest.mark.usefixtures("core_session")


def _case(**kw):
    rng = np.random.default_rng(0)
    base = dict(x=rng.normal(size=(6, 3, 4)), gamma=rng.normal(size=(2, 3)),
                beta=rng.normal(size=(2, 3)), axis=1)
    base.update(kw)
    return Case(**base)


def test_registry_names():
    for name in ("numpy", "strict", "torch-array", "jax-array", "torch", "torch-cuda",
                 "keras", "flax", "flax-linen"):
        assert name in subjects.SUBJECTS
    assert subjects.parse(None) == list(subjects.SUBJECTS)
    assert subjects.parse(" numpy, strict ") == ["numpy", "strict"]


def test_unknown_subject_is_an_error_naming_the_registered():
    with pytest.raises(ValueError, match=r"numpyy.*'numpy'"):
        subjects.parse("numpyy")


def test_env_selection(monkeypatch):
    monkeypatch.setenv(subjects.ENV_VAR, "strict")
    assert subjects.selected(None) == ["strict"]
    assert subjects.selected("numpy") == ["numpy"]  # the option wins


def test_missing_module_reports_unavailable(monkeypatch):
    monkeypatch.setitem(subjects.SUBJECTS, "nope", "conformance.harnesses.not_there:X")
    with pytest.raises(subjects.SubjectUnavailable, match="not_there"):
        subjects.load("nope")
    assert subjects.available(["nope"])["nope"]


def test_read_skips_blocks(tmp_path):
    f = tmp_path / "skips.txt"
    f.write_text("# header comment\n\n# reason one\n# continued\na.py::t[x]\na.py::u[*]\n"
                 "# reason two\nb.py::v\n\nc.py::w\n")
    assert read_skips(f) == [("a.py::t[x]", "reason one continued"),
                             ("a.py::u[*]", "reason one continued"),
                             ("b.py::v", "reason two"),
                             ("c.py::w", "listed in conformance/skips.txt")]


def test_apply_skips_matches_and_reports_stale_ids():
    skips = [("f.py::t[numpy]", "r1"), ("f.py::u[*]", "r2"), ("f.py::gone[numpy]", "r3"),
             ("f.py::gone[torch]", "r4"), ("other.py::t", "r5"),
             ("f.py::gone[torch-array-empty-batch]", "r6"), ("f.py::gone[numpy-*]", "r7")]
    ids = ["f.py::t[numpy]", "f.py::u[numpy]", "f.py::v[numpy]"]
    reasons, unmatched = apply_skips(skips, ids, ["numpy"])
    assert reasons == {"f.py::t[numpy]": "r1", "f.py::u[numpy]": "r2"}
    # torch is not selected and other.py not collected: only the stale numpy id reported.
    assert unmatched == ["f.py::gone[numpy]", "f.py::gone[numpy-*]"]


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_save_load_round_trip(tmp_path, dtype):
    case = _case(x=strategies.as_dtype(np.random.default_rng(1).normal(size=(5, 3, 2)), dtype),
                 mode="single", group=np.array([0, 1, 1, 0, 1]))
    path = checks.save(tmp_path / "c.npz", "permutation", "numpy", case,
                       {"perm": np.arange(5), "scale": 2.0, "kind": "x"})
    name, subject, back, extra = checks.load(path)
    assert (name, subject) == ("permutation", "numpy")
    assert back.x.dtype == case.x.dtype and np.array_equal(
        back.x.astype(np.float64), case.x.astype(np.float64))
    assert np.array_equal(back.group, case.group) and back.mode == "single"
    assert extra["scale"] == 2.0 and extra["kind"] == "x"
    assert np.array_equal(extra["perm"], np.arange(5))


def test_repro_runs_the_saved_check(tmp_path, capsys):
    path = checks.save(tmp_path / "c.npz", "forward", "numpy", _case(), {})
    assert repro.main([str(path)]) == 0
    assert "passed" in capsys.readouterr().out


class _UnbiasedVariance(Harness):
    """A wrong implementation: n-1 variance, as torch.var's default."""

    name = "wrong"

    def forward(self, case):
        x = case.x.astype(np.float64)
        n = x.shape[0]
        y = reference.local_norm(x, case.gamma, case.beta, **case.reference_kwargs())
        if case.mode == "set" and n > 1:
            return (y * 0.999).astype(case.x.dtype)
        return y.astype(case.x.dtype)


def test_battery_catches_a_wrong_implementation(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "FAILURES", tmp_path)
    with pytest.raises(AssertionError, match=r"Reproduce: python -m \S*conformance\.repro"):
        checks.run("forward", _UnbiasedVariance(), _case(mode="set", group=1), "t")
    assert list(tmp_path.glob("*.npz"))


def test_error_parity_catches_a_permissive_subject():
    class Permissive(Harness):
        def forward(self, case):
            return np.zeros_like(case.x)

    with pytest.raises(AssertionError, match="accepted"):
        checks.CHECKS["refuses"](Permissive(), _case(mode="bogus"), kind="unknown-mode")


def test_support_matrix_lists_subjects():
    md = support_matrix(["numpy", "strict"])
    assert md.splitlines()[0].startswith("| subject | dtypes")
    row = next(line for line in md.splitlines() if line.startswith("| `numpy`"))
    assert "float16" in row and "strided" in row and "| no |" in row
    assert "not available" in support_matrix(["torch-cuda"]) or "`torch-cuda`" in support_matrix(
        ["torch-cuda"])
