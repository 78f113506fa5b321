"""``localnorm conformance``: its matrix, its page and its errors. The run itself (pytest
over the installed suite) is exercised from a wheel in tests/wheel."""

from __future__ import annotations

import importlib.util
import types

from localnorm.experiments import _cli
from localnorm.experiments import conformance as cc


def _cells(subject, *rows):
    return [{"subject": subject, "mode": m, "partition": p, "dtype": d, "outcome": o,
             "check": "forward", "test": "t"} for m, p, d, o in rows]


def test_matrix_a_failed_case_fails_its_cell_and_undrawn_cells_say_so():
    declared = {"s": (("batch", "set"), ("contiguous",), ("float32", "float16"))}
    cells = _cells("s", ("batch", "contiguous", "float32", "pass"),
                   ("batch", "contiguous", "float32", "fail"),
                   ("batch", "contiguous", "float16", "pass"),
                   ("set", "contiguous", "float16", "pass"),
                   # another subject's and an undeclared dtype's cases count nowhere
                   ("set", "contiguous", "float64", "fail"))
    cells += _cells("other", ("set", "contiguous", "float32", "fail"))
    doc = cc.matrix(["s", "gone"], {"s": None, "gone": "gone: no CUDA device"}, declared,
                    cells)
    s, gone = doc["subjects"]
    assert s["cells"] == {"batch/contiguous/float32": "fail",
                          "batch/contiguous/float16": "pass",
                          "set/contiguous/float32": "not drawn",
                          "set/contiguous/float16": "pass"}
    assert gone == {"subject": "gone", "status": "skipped", "reason": "gone: no CUDA device"}


def test_page_shows_the_matrix_the_skipped_subject_and_each_failure_with_its_repro():
    declared = {"s": (("batch",), ("strided",), ("float32",))}
    doc = {"command": "localnorm conformance", "version": "0", "profile": "dev",
           "seconds": 1.0, "created": "now", "counts": {"passed": 3, "failed": 1},
           "matrix": cc.matrix(["s", "gone"], {"s": None, "gone": "no CUDA"}, declared,
                               _cells("s", ("batch", "strided", "float32", "fail"))),
           "tests": [{"nodeid": "conformance/test_conformance.py::test_forward[s]",
                      "outcome": "failed",
                      "reproduce": [("Reproduce: python -m localnorm.conformance.repro "
                                     "f.npz --subject s")]},
                     {"nodeid": "a[gone]", "outcome": "skipped", "reason": "no CUDA"},
                     {"nodeid": "b[gone]", "outcome": "skipped", "reason": "no CUDA"}]}
    md = cc.markdown(doc)
    assert "| batch | strided | **fail** |" in md
    assert "Skipped: no CUDA" in md
    assert "python -m localnorm.conformance.repro f.npz --subject s" in md
    assert "3 passed, 1 failed" in md
    assert "| 2 | no CUDA |" in md  # skipped tests, counted by reason


def test_collector_keeps_the_reproduction_command_of_a_failure():
    collector = cc._Collector()
    failed = types.SimpleNamespace(
        when="call", outcome="failed", failed=True, skipped=False, nodeid="x[s]",
        longrepr="AssertionError: forward\nReproduce: python -m localnorm.conformance.repro "
                 "a.npz --subject s\n  case: dtype=float32")
    skipped = types.SimpleNamespace(
        when="setup", outcome="skipped", failed=False, skipped=True, nodeid="y[t]",
        longrepr=("f.py", 1, "Skipped: subject unavailable: t: no CUDA device"))
    collector.pytest_runtest_logreport(failed)
    collector.pytest_runtest_logreport(skipped)
    assert collector.tests == [
        {"nodeid": "x[s]", "outcome": "failed",
         "reproduce": ["Reproduce: python -m localnorm.conformance.repro a.npz --subject s"]},
        {"nodeid": "y[t]", "outcome": "skipped",
         "reason": "subject unavailable: t: no CUDA device"}]


def test_missing_test_tools_name_the_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hypothesis" else real(name, *a))
    assert _cli.main(["conformance", "--subjects", "numpy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "localnorm[conformance]" in err and "hypothesis" in err
    assert not (tmp_path / "conformance.json").exists()


def test_unknown_subject_names_the_registered_ones(capsys, tmp_path):
    assert _cli.main(["conformance", "--subjects", "torch,tensorflow",
                      "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tensorflow" in err and "torch-cuda" in err and "flax-linen" in err


def test_profiles_are_the_suites():
    """The command offers exactly the hypothesis profiles the suite registers (read from
    its source: importing it would load a profile into this process)."""
    import re
    from pathlib import Path

    source = Path(importlib.util.find_spec("localnorm.conformance.profiles").origin).read_text()
    assert set(re.findall(r'register_profile\(\s*"(\w+)"', source)) == set(cc.PROFILES)


def test_unavailable_subjects_get_their_install_line():
    assert cc.with_install_hint("torch", "torch not installed") == (
        'torch not installed; install it with pip install "localnorm[torch]"')
    assert cc.with_install_hint("torch-cuda", "no CUDA device") == "no CUDA device"
    assert set(cc.INSTALL) <= set(__import__("localnorm.conformance.subjects",
                                             fromlist=["x"]).SUBJECTS)


#: Run in a fresh interpreter: hide the frameworks and the [experiments] extra, as on a
#: machine with only the [conformance] extra installed, then run the command.
_BLOCKED = """
import importlib.abc, sys
BLOCK = {"torch", "tensorflow", "keras", "jax", "flax", "matplotlib", "scipy", "sklearn",
         "tqdm", "PIL"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n.split(".")[0] in BLOCK else _find(n, *a)
from localnorm.experiments._cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_runs_with_the_conformance_extra_alone(tmp_path):
    """NumPy's subject runs without any framework or the [experiments] extra; torch's is
    skipped with the line that installs it."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _BLOCKED, "conformance", "--subjects",
                           "numpy,torch", "--out", str(tmp_path)], check=False,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "conformance.json").read_text())
    numpy_row, torch_row = doc["matrix"]["subjects"]
    assert numpy_row["status"] == "ran" and "pass" in numpy_row["cells"].values()
    assert torch_row["status"] == "skipped"
    assert 'pip install "localnorm[torch]"' in torch_row["reason"]
