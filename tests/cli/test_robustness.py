"""`localnorm robustness` end to end on tiny subsets of the embedded digits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from localnorm import _cli  # noqa: E402
from localnorm.experiments import training  # noqa: E402

TINY = ["--limit-train", "128", "--limit-test", "48", "--epochs", "1", "--batch-size", "16",
        "--threads", "1", "--no-progress", "--noises", "agn", "contrast", "--levels", "agn=1",
        "contrast=5", "--confusion", "agn=1"]


def _records(out):
    return json.loads((out / "results.json").read_text())["records"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _cli.main(["robustness", "--out", str(out), *TINY]) == 0
    return out


def test_every_cell_recorded(tiny_run):
    recs = _records(tiny_run)
    evaluations = {(e.method, e.protocol) for e in training.EVALUATIONS}
    cells = {("none", 0.0), ("agn", 1.0), ("contrast", 5.0)}
    assert {(r["method"], r["protocol"], r["noise"], r["level"]) for r in recs} == {
        (m, p, n, lv) for m, p in evaluations for n, lv in cells}
    for r in recs:
        assert {"method", "protocol", "noise", "level", "accuracy", "n", "seed", "dataset",
                "backend"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["n"] == 48
        assert r["dataset"] == "digits" and r["backend"] == "torch" and r["seed"] == 0
        voting = r["method"] == "localnorm" and r["protocol"] in ("voting", "single-voting")
        assert (r["agreement"] is not None) == voting
        if voting:
            assert 0.25 <= r["agreement"] <= 1
        if r["noise"] in ("none", "agn"):
            cm = np.asarray(r["confusion"])
            assert cm.shape == (10, 10) and cm.sum() == 48
            assert np.isclose(np.trace(cm) / 48, r["accuracy"])


def test_outputs_written(tiny_run):
    md = (tiny_run / "results.md").read_text()
    assert "## Clean test accuracy" in md and "LocalNorm (SINGLE-VOTING)" in md
    assert "## agn" in md and "## contrast" in md and "Agreement" in md
    assert "stratified" in md  # the data note
    for name in ("acc_agn.png", "acc_contrast.png", "confusion_agn_1.png"):
        assert (tiny_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tiny_run.glob(".*.tmp"))


def test_seeded_run_is_reproducible(tiny_run, tmp_path):
    out = tmp_path / "again"
    assert _cli.main(["robustness", "--out", str(out), *TINY, "--methods", "localnorm",
                      "--protocols", "batch", "single"]) == 0
    first = {(r["method"], r["protocol"], r["noise"], r["level"]): r["accuracy"]
             for r in _records(tiny_run)}
    for r in _records(out):
        assert r["accuracy"] == first[(r["method"], r["protocol"], r["noise"], r["level"])]


def test_resume_skips_finished_cells(tiny_run, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(tiny_run, out)
    doc = json.loads((out / "results.json").read_text())
    dropped = [r for r in doc["records"] if r["noise"] == "contrast"]
    doc["records"] = [r for r in doc["records"] if r["noise"] != "contrast"]
    (out / "results.json").write_text(json.dumps(doc))  # as if interrupted before contrast

    calls = []
    real_evaluate = training.evaluate

    def counting(model, evaluation, x, **kw):
        calls.append(evaluation)
        return real_evaluate(model, evaluation, x, **kw)

    def no_training(*a, **k):
        raise AssertionError("--resume retrained a network that has a checkpoint")

    monkeypatch.setattr(training, "evaluate", counting)
    monkeypatch.setattr(training, "train", no_training)
    assert _cli.main(["robustness", "--out", str(out), "--resume", *TINY]) == 0
    assert len(calls) == len(dropped) == len(training.EVALUATIONS)
    assert len(_records(out)) == len(_records(tiny_run))
    # Same checkpoints, same noise seeds: the recomputed cells equal the first run's.
    again = {(r["method"], r["protocol"]): r["accuracy"] for r in _records(out) if r["noise"] == "contrast"}
    assert again == {(r["method"], r["protocol"]): r["accuracy"] for r in dropped}
    calls.clear()
    assert _cli.main(["robustness", "--out", str(out), "--resume", *TINY]) == 0
    assert calls == []


def test_resume_with_other_settings_is_refused(tiny_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(tiny_run, out)
    assert _cli.main(["robustness", "--out", str(out), "--resume", *TINY, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "seed=1" in err and "seed=0" in err


def test_too_small_batch_for_groups(tmp_path, capsys):
    assert _cli.main(["robustness", "--out", str(tmp_path), *TINY, "--batch-size", "6",
                      "--groups", "4"]) == 2
    err = capsys.readouterr().err
    assert "num_groups=4" in err and "6" in err


def test_baselines_only_and_resnet(tmp_path):
    out = tmp_path / "res"
    args = ["robustness", "--out", str(out), *TINY, "--model", "resnet", "--methods", "batchnorm",
            "groupnorm"]
    assert _cli.main(args) == 0
    assert {r["method"] for r in _records(out)} == {"batchnorm", "groupnorm"}


@pytest.mark.slow
def test_default_run(tmp_path):
    """The README's first command, as is (digits, all methods, every noise): < 5 min on 2 cores."""
    out = subprocess.run([sys.executable, "-m", "localnorm", "robustness", "--out",
                          str(tmp_path), "--no-progress"], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    recs = _records(tmp_path)
    clean = {(r["method"], r["protocol"]): r["accuracy"] for r in recs if r["noise"] == "none"}
    assert clean[("batchnorm", "running")] > 0.9 and clean[("localnorm", "batch")] > 0.9
