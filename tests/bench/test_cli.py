"""`localnorm bench --quick`: the machinery end to end (well-formed bench.json and bench.md,
positive finite ratios). Never asserts a speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localnorm.benchmarks import _report
from localnorm.benchmarks._timing import Timing

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
            ("eval", "NCHW"), ("eval", "channels_last")} <= ops
    names = {row["name"] for r in sec["records"] for row in r["rows"]}
    assert {"LocalNorm2d contiguous", "LocalNorm2d strided", "local_norm core",
            "LocalNorm contiguous", "LocalNorm strided", "SINGLE", "SINGLE-VOTING"} <= names
    memory = [r for r in sec["records"] if r["kind"] == "memory"]
    assert {row["name"] for r in memory for row in r["rows"]} == {"LocalNorm contiguous",
                                                                   "LocalNorm strided"}
    assert [r["case"].split()[0] for r in memory] == ["mnist", "resnet20", "vgg11-half"]
    assert doc["command"] == f"localnorm bench --quick --sections torch --out-dir {out}"
    assert sec["budget_s"] > 0 and 0 < sec["seconds"]


def test_discussion_names_rows_the_torch_section_produces(torch_run):
    """Every template of benchmarks/discussion.md that selects torch rows by name finds
    such rows in a (quick) torch run: the prose and the code use the same names."""
    import shlex

    _, out = torch_run
    doc = json.loads((out / "bench.json").read_text())
    text = _report.DISCUSSION.read_text(encoding="utf-8")
    checked = 0
    for body in _report._TEMPLATE.findall(text):
        words = shlex.split(body)
        args = dict(w.split("=", 1) for w in words[1:])
        if words[0] not in ("ratio", "met") or args.get("section") != "torch" \
                or args.pop("source", "bench") != "bench":
            continue
        args.pop("case", None)  # quick runs have their own tiny shapes
        assert _report.select(doc, **args), f"no torch rows for {{{{{body}}}}}"
        checked += 1
    assert checked >= 3


def test_a_section_over_its_budget_is_stopped_and_reported(tmp_path):
    pytest.importorskip("torch")
    proc = bench("--quick", "--sections", "torch", "--timeout", "0.5", "--out-dir",
                 str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    doc = json.loads((tmp_path / "bench.json").read_text())
    (sec,) = doc["sections"]
    assert sec["status"] == "error" and "timed out after 0.5 s" in sec["reason"]
    assert sec["budget_s"] == 0.5
    assert "**error**: timed out" in (tmp_path / "bench.md").read_text()


def test_every_section_has_a_budget():
    from localnorm.experiments import bench as cli

    assert set(cli.BUDGETS) == set(cli.SECTIONS)
    assert all(0 < b <= 1800 for b in cli.BUDGETS.values())


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


def _section_doc(name, created, ratio):
    t = Timing(samples={"BN": [1.0], "LN": [ratio]}, baseline="BN",
                inner={"BN": 1, "LN": 1})
    rec = _report.timing_record("layer", "N=8", t, [_report.row(t, "LN")], op="forward")
    return {"schema": _report.SCHEMA, "created": created, "quick": False,
            "settings": {"rounds": 1, "warmup": 0, "min_sample_s": 0.0}, "machine": {},
            "sections": [{"name": name, "framework": name.split("-")[0], "backend": None,
                          "device": "cpu", "status": "ok", "reason": "", "versions": {},
                          "notes": [], "records": [rec]}]}


def test_merge_combines_sections_of_separate_runs(tmp_path):
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    a.write_text(json.dumps(_section_doc("flax", "t1", 1.5)))
    b.write_text(json.dumps(_section_doc("torch", "t2", 1.1)))
    c.write_text(json.dumps(_section_doc("flax", "t3", 1.25)))  # a later run of flax wins
    proc = bench("--merge", str(a), str(b), str(c), "--out-dir", str(tmp_path / "m"),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "m" / "bench.json").read_text())
    assert _report.check(doc) == []
    assert [s["name"] for s in doc["sections"]] == ["torch", "flax"]
    assert [s["created"] for s in doc["sections"]] == ["t2", "t1, t3 (layer)"]
    assert doc["sections"][1]["records"][0]["rows"][0]["ratio"] == 1.25
    assert "merged from runs of t1, t2, t3" in (tmp_path / "m" / "bench.md").read_text()


def test_merging_a_merged_file_keeps_the_runs_it_came_from(tmp_path):
    """A bench.json that is itself a merge keeps each section's runs and its list of
    runs when merged again (they were replaced by the merged file's first run)."""
    paths = [tmp_path / f"{n}.json" for n in ("a", "b", "ab", "c")]
    paths[0].write_text(json.dumps(_section_doc("torch", "t1", 1.5)))
    paths[1].write_text(json.dumps(_section_doc("torch", "t2", 1.1)))
    assert bench("--merge", str(paths[0]), str(paths[1]), "--out-dir", str(tmp_path / "ab"),
                 cwd=tmp_path).returncode == 0
    paths[2].write_text((tmp_path / "ab" / "bench.json").read_text())
    paths[3].write_text(json.dumps(_section_doc("flax", "t3", 1.2)))
    proc = bench("--merge", str(paths[2]), str(paths[3]), "--out-dir", str(tmp_path / "m"),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "m" / "bench.json").read_text())
    assert doc["merged_from"] == ["t1", "t2", "t3"]
    assert [s["created"] for s in doc["sections"]] == ["t1, t2 (layer)", "t3"]


def test_merge_replaces_only_the_kinds_a_later_run_measured(tmp_path):
    first = _section_doc("torch", "t1", 1.5)
    mem = _report.memory_record("net", "BN", 100, {"LN": 120}, method="m")
    first["sections"][0]["records"].append(mem)
    later = _section_doc("torch", "t2", 1.0)
    later["sections"][0]["records"] = [_report.memory_record("net", "BN", 100, {"LN": 110},
                                                             method="m")]
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(later))
    proc = bench("--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out-dir",
                 str(tmp_path / "m"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (sec,) = json.loads((tmp_path / "m" / "bench.json").read_text())["sections"]
    by_kind = {r["kind"]: r for r in sec["records"]}
    assert by_kind["layer"]["rows"][0]["ratio"] == 1.5  # kept from the first run
    assert by_kind["memory"]["rows"][0]["bytes"] == 110  # replaced by the later run
