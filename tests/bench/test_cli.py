"""`localnorm bench --quick`: the machinery end to end (well-formed bench.json and bench.md,
positive finite ratios). Never asserts a speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _report

ROOT = Path(__file__).resolve().parents[2]


def bench(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "localnorm", "bench", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench")
    proc = bench("--quick", "--sections", "torch", "--out-dir", str(out), cwd=out)
    return proc, out


def test_quick_torch_run_writes_well_formed_results(torch_run):
    proc, out = torch_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    assert _report.check(doc) == []
    assert doc["quick"] is True
    (sec,) = doc["sections"]
    assert sec["name"] == "torch" and sec["status"] == "ok", sec.get("reason")
    kinds = {r["kind"] for r in sec["records"]}
    assert kinds == {"layer", "network", "protocol", "memory"}
    ops = {(r["op"], r["layout"]) for r in sec["records"] if r["kind"] == "layer"}
    assert {("forward", "NCHW"), ("forward+backward", "channels_last"),
            ("eval single", "NCHW"), ("eval set", "NCHW")} <= ops
    names = {row["name"] for r in sec["records"] for row in r["rows"]}
    assert {"LocalNorm2d contiguous", "LocalNorm2d strided", "local_norm core",
            "LocalNorm", "SINGLE", "SINGLE-VOTING"} <= names


def test_quick_torch_markdown_is_generated_from_the_json(torch_run):
    proc, out = torch_run
    md = (out / "bench.md").read_text()
    doc = json.loads((out / "bench.json").read_text())
    assert md == _report.markdown(doc)
    assert "## torch" in md and "forward+backward" in md
    # --markdown-only regenerates the page from the JSON alone
    (out / "bench.md").unlink()
    proc = bench("--markdown-only", str(out / "bench.json"), cwd=out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "bench.md").read_text() == md


@pytest.mark.parametrize("section", ["flax", "keras-jax"])
def test_quick_layer_run_of_other_frameworks(section, tmp_path):
    pytest.importorskip("flax" if section == "flax" else "keras")
    proc = bench("--quick", "--sections", section, "--kinds", "layer", "--out-dir",
                 str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert _report.check(doc) == []
    (sec,) = doc["sections"]
    assert sec["status"] == "ok" and {r["kind"] for r in sec["records"]} == {"layer"}
    assert any(row["name"].startswith("LocalNorm") for r in sec["records"] for row in r["rows"])


def test_cuda_without_a_gpu_is_reported_as_skipped(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = bench("--quick", "--sections", "torch", "--kinds", "layer", "--device", "cuda",
                 "--out-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (sec,) = json.loads((tmp_path / "bench.json").read_text())["sections"]
    assert sec["status"] == "skipped" and "cuda" in sec["reason"].lower()


def test_unknown_section_is_refused_with_the_value_named(tmp_path):
    proc = bench("--sections", "torch,mxnet", "--out-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "mxnet" in proc.stderr and "keras-jax" in proc.stderr
    assert not (tmp_path / "bench.json").exists()
