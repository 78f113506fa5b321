"""From a wheel, as a user installs it: build the wheel, install it with the [torch] and
[conformance] extras into a fresh virtual environment whose working directory is not the
source tree, and run ``localnorm conformance`` and ``localnorm bench`` there.

No network: the virtual environment sees this machine's site-packages (torch, pytest,
hypothesis are installed there), and pip installs the wheel with ``--no-index``; pip
resolves the extras against those installed packages, so an extra that names a package
this machine lacks fails the install. The wheel is built from a copy of the files it
packs, so the build leaves nothing (``build/``, ``*.egg-info``) in the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What the wheel is built from (pyproject.toml names the packages in these folders).
SOURCES = ("pyproject.toml", "README.md", "localnorm", "backends", "experiments",
           "benchmarks", "conformance")

pytest.importorskip("torch")


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True,
                          **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """``(bin folder, env, working directory)`` of a fresh venv with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir()
               else {}))
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
          "-q", "-w", tmp / "dist"], cwd=tmp, timeout=300)
    (wheel,) = (tmp / "dist").glob("localnorm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for packed in ("localnorm/experiments/_cli.py", "localnorm/benchmarks/profiles.json",
                   "localnorm/benchmarks/discussion.md", "localnorm/conformance/skips.txt",
                   "localnorm/conformance/harnesses/torch_layers.py"):
        assert packed in names, f"the wheel lacks {packed}"
    # The interpreter that made this test's virtual environment, so that the new one sees
    # the same installed frameworks; --without-pip: pip comes from those site-packages.
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"],
         timeout=300)
    bin_dir = tmp / "venv" / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LOCALNORM_SUBJECTS", "HYPOTHESIS_PROFILE")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3")
    run_dir = tmp / "run"
    run_dir.mkdir()
    _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-index",
          "--disable-pip-version-check", "--force-reinstall", "--no-deps", wheel],
         cwd=run_dir, env=env, timeout=300)
    # the extras resolve against what is installed, without the network
    _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-index",
          "--disable-pip-version-check", f"localnorm[torch,conformance] @ {wheel.as_uri()}"],
         cwd=run_dir, env=env, timeout=300)
    return bin_dir, env, run_dir


def test_the_wheel_is_what_runs(venv):
    """The installed rooms come from the wheel, not from the source tree."""
    bin_dir, env, run_dir = venv
    code = ("import json, localnorm, localnorm.experiments, localnorm.benchmarks, "
            "localnorm.conformance, localnorm.torch\n"
            "print(json.dumps([m.__file__ for m in (localnorm, localnorm.experiments, "
            "localnorm.benchmarks, localnorm.conformance, localnorm.torch)]))")
    files = json.loads(_run([bin_dir / "python", "-c", code], cwd=run_dir, env=env,
                            timeout=120).stdout)
    site = (bin_dir.parent / "lib").resolve()
    assert all(Path(f).resolve().is_relative_to(site) for f in files), files
    assert not any(Path(f).resolve().is_relative_to(ROOT) for f in files), files


def test_conformance_from_the_wheel(venv):
    bin_dir, env, run_dir = venv
    proc = _run([bin_dir / "localnorm", "conformance", "--subjects", "torch", "--profile",
                 "dev", "--out", run_dir / "conf"], cwd=run_dir, env=env, timeout=600)
    doc = json.loads((run_dir / "conf" / "conformance.json").read_text())
    assert doc["exit_status"] == 0 and doc["profile"] == "dev"
    assert doc["counts"]["passed"] > 0 and "failed" not in doc["counts"]
    (row,) = doc["matrix"]["subjects"]
    assert row["subject"] == "torch" and row["status"] == "ran"
    assert set(row["cells"].values()) <= {"pass", "not drawn"}
    assert "pass" in row["cells"].values()
    # the ids of the installed suite, as conformance/skips.txt names them
    assert all(t["nodeid"].startswith("conformance/") for t in doc["tests"])
    md = (run_dir / "conf" / "conformance.md").read_text()
    assert "## torch" in md and "| mode | partition |" in md
    assert "## torch" in proc.stdout  # the matrix is printed too


def test_bench_from_the_wheel(venv):
    bin_dir, env, run_dir = venv
    _run([bin_dir / "localnorm", "bench", "--quick", "--sections", "torch", "--out-dir",
          run_dir / "bench"], cwd=run_dir, env=env, timeout=900)
    doc = json.loads((run_dir / "bench" / "bench.json").read_text())
    (sec,) = doc["sections"]
    assert sec["name"] == "torch" and sec["status"] == "ok", sec.get("reason")
    assert {r["kind"] for r in sec["records"]} >= {"layer", "network"}
    assert all(row["ratio"] > 0 for r in sec["records"] if r["kind"] == "layer"
               for row in r["rows"])
    assert "## torch" in (run_dir / "bench" / "bench.md").read_text()
