"""results.json / results.md / figures of the robustness experiment, from synthetic records."""

from __future__ import annotations

import json
import os

import pytest

from localnorm import LocalNormError
from localnorm.experiments import report

CONFIG = {"dataset": "digits", "seed": 0, "backend": "torch", "model": "mnistnet", "groups": 4,
          "batch_size": 64, "epochs": 3, "lr": 1e-3, "vote": "hard", "limit_train": None,
          "limit_test": None, "image_size": None, "device": "cpu"}


def _rec(method, protocol, noise, level, acc, agreement=None, confusion=None):
    r = {"method": method, "protocol": protocol, "noise": noise, "level": level, "accuracy": acc,
         "n": 100, "seed": 0, "dataset": "digits", "backend": "torch", "agreement": agreement}
    if confusion is not None:
        r["confusion"] = confusion
    return r


@pytest.fixture
def store(tmp_path):
    s = report.ResultStore(tmp_path, CONFIG, "digits: a note.", resume=False)
    cm = [[40, 10], [5, 45]]
    s.add(_rec("batchnorm", "running", "none", 0.0, 0.85, confusion=cm))
    s.add(_rec("localnorm", "voting", "none", 0.0, 0.9, agreement=0.95, confusion=cm))
    s.add(_rec("batchnorm", "running", "agn", 1.0, 0.4, confusion=cm))
    s.add(_rec("localnorm", "voting", "agn", 1.0, 0.6, agreement=0.7, confusion=cm))
    s.add(_rec("batchnorm", "running", "contrast", 5.0, 0.5))
    s.add(_rec("localnorm", "voting", "contrast", 5.0, 0.8, agreement=0.9))
    return s


def test_json_roundtrip_and_replacement(store, tmp_path):
    doc = json.loads((tmp_path / "results.json").read_text())
    wall = doc["config"]["wall_seconds"]  # the time so far, at every write (issue 16)
    assert isinstance(wall, float) and wall >= 0
    assert doc["config"] == {**CONFIG, "attempts": 1, "wall_seconds": wall}
    assert doc["data"] == "digits: a note." and len(doc["records"]) == 6
    store.add(_rec("batchnorm", "running", "agn", 1.0, 0.41))  # the same cell again replaces it
    recs = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(recs) == 6 and [r["accuracy"] for r in recs if r["noise"] == "agn"
                               and r["method"] == "batchnorm"] == [0.41]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert oct(os.stat(tmp_path / "results.json").st_mode & 0o777) != oct(0o600)


def test_resume_reads_done_cells_and_refuses_other_settings(store, tmp_path):
    again = report.ResultStore(tmp_path, CONFIG, "note", resume=True)
    assert again.done("localnorm", "voting", "agn", 1) and not again.done("localnorm", "batch", "agn", 1)
    fresh = report.ResultStore(tmp_path, CONFIG, "note", resume=False)
    assert not fresh.done("localnorm", "voting", "agn", 1)
    with pytest.raises(LocalNormError) as info:
        report.ResultStore(tmp_path, {**CONFIG, "groups": 8}, "note", resume=True)
    assert "groups=8" in str(info.value) and "groups=4" in str(info.value)


def test_wall_time_adds_up_over_resumed_runs(store, tmp_path):
    store.add_wall_time(100.0404)  # kept to the millisecond
    assert json.loads((tmp_path / "results.json").read_text())["config"]["wall_seconds"] == 100.04
    again = report.ResultStore(tmp_path, CONFIG, "note", resume=True)
    again.add_wall_time(20)
    assert json.loads((tmp_path / "results.json").read_text())["config"]["wall_seconds"] == 120.04
    fresh = report.ResultStore(tmp_path, CONFIG, "note", resume=False)
    fresh.add_wall_time(5)
    assert fresh.config["wall_seconds"] == 5.0


def test_markdown_names_the_command_and_the_wall_time(tmp_path):
    cfg = {**CONFIG, "command": "localnorm robustness --out x", "framework": "torch 2.13.0"}
    s = report.ResultStore(tmp_path, cfg, "note", resume=False)
    s.training["batchnorm"] = {"seconds": 61.2, "final_loss": 0.1, "train_accuracy": 1, "epochs": 3}
    s.add(_rec("batchnorm", "running", "none", 0.0, 0.85))
    s.add_wall_time(123.4)
    report.write_markdown(tmp_path / "results.md", s, [])
    md = (tmp_path / "results.md").read_text()
    assert "```bash\nlocalnorm robustness --out x\n```" in md
    assert "Wall time: 123 s (2.1 min)" in md and "batchnorm 61 s" in md and "torch 2.13.0" in md


def test_claims_are_checked_from_the_records():
    recs = [_rec("batchnorm", "running", "none", 0.0, 0.98), _rec("localnorm", "batch", "none", 0.0, 0.975),
            _rec("batchnorm", "running", "agn", 1.0, 0.40), _rec("localnorm", "batch", "agn", 1.0, 0.50),
            _rec("batchnorm-dynamic", "batch", "agn", 1.0, 0.52),
            _rec("batchnorm-dynamic", "batch", "agn", 2.0, 0.30), _rec("localnorm", "batch", "agn", 2.0, 0.31)]
    clean, agn, dyn = report.claims(recs)
    assert clean["met"] is True and "-0.50 points" in clean["measured"]
    assert agn["met"] is False and "1.25x" in agn["measured"]
    assert dyn["met"] is None and "-2.00 to +1.00" in dyn["measured"] and "sigma 1..2" in dyn["measured"]
    assert report.claims(recs[:2])[0]["met"] is True and len(report.claims(recs[:2])) == 1
    worse = [_rec("batchnorm", "running", "none", 0.0, 0.98), _rec("localnorm", "batch", "none", 0.0, 0.96)]
    assert report.claims(worse)[0]["met"] is False


def test_markdown_tables(store, tmp_path):
    report.write_markdown(tmp_path / "results.md", store, ["agn", "contrast"])
    md = (tmp_path / "results.md").read_text()
    assert "digits: a note." in md
    assert "| BatchNorm (running stats) | 85.00 | 100 |" in md
    assert "## agn (accuracy % by sigma; 0 = clean)" in md
    assert "| LocalNorm (VOTING) | 90.00 | 60.00 |" in md
    assert "## contrast (accuracy % by severity; 0 = clean)" in md
    assert "| agn | 1 | 0.700 |" in md  # agreement table
    assert "| LocalNorm (VOTING) | 80.00 | 80.00 |" in md  # mean over corruptions


def test_figures(store, tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.write_plots(tmp_path, store, ["agn", "contrast", "mbn"])
    assert sorted(p.name for p in paths) == ["acc_agn.png", "acc_contrast.png"]  # no mbn data
    cm = report.write_confusion(tmp_path, store, "agn", 1.0, ["0", "1"])
    assert cm.name == "confusion_agn_1.png"
    for p in [*paths, cm]:
        assert p.read_bytes()[:4] == b"\x89PNG"
