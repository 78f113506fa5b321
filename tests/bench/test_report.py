"""Records, bench.json validation and the markdown page, on hand-made timings."""

import json

import pytest

from benchmarks import _report as R
from benchmarks._timing import Timing


def _timing():
    return Timing(samples={"BN": [1.0, 1.0, 1.0], "LN": [1.1, 1.2, 1.3], "GN": [0.5, 0.6, 0.4]},
                  baseline="BN", inner={"BN": 1, "LN": 2, "GN": 1})


def _doc(records, status="ok", reason=""):
    return {"schema": R.SCHEMA, "created": "now", "quick": True,
            "settings": {"rounds": 3, "warmup": 1, "min_sample_s": 0.0},
            "machine": {"platform": "test", "cpu_count": 2, "python": "3"},
            "sections": [{"name": "torch", "framework": "torch", "backend": None,
                          "device": "cpu", "status": status, "reason": reason,
                          "versions": {"torch": "x"}, "notes": ["a note"],
                          "records": records}]}


def test_row_ratio_target_and_scale():
    t = _timing()
    r = R.row(t, "LN", target=1.15)
    assert r["ratio"] == pytest.approx(1.2)
    assert r["median_ms"] == pytest.approx(1200.0)
    assert r["meets_target"] is False and r["target"] == 1.15
    assert R.row(t, "GN", target=1.0)["meets_target"] is True
    scaled = R.row(t, "LN", baseline="GN", scale=2.0)
    assert scaled["ratio"] == pytest.approx(1.1)  # median(1.1/0.5, 1.2/0.6, 1.3/0.4) / 2
    assert scaled["versus"] == "2 x GN"


def test_well_formed_document_passes_check_and_renders():
    t = _timing()
    recs = [R.timing_record("layer", "N=8", t, [R.row(t, "LN", target=1.15), R.row(t, "GN")],
                            op="forward", layout="NCHW"),
            R.memory_record("net", "BN", 1000, {"LN": 1500}, method="saved tensors")]
    doc = json.loads(json.dumps(_doc(recs)))  # survives a JSON round trip
    assert R.check(doc) == []
    md = R.markdown(doc)
    assert "## torch" in md and "a note" in md
    assert "| N=8 | NCHW | 1000.00 |" in md
    assert "1.20x" in md and "**> 1.15**" in md  # missed target is marked
    assert "1.50x" in md  # memory ratio
    assert "## Targets" in md and "0/1" in md


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(schema="other"), "schema"),
    (lambda d: d["sections"][0]["records"][0]["rows"][0].update(ratio=-1.0), "ratio"),
    (lambda d: d["sections"][0]["records"][0]["rows"][0].update(ratio=float("nan")), "ratio"),
    (lambda d: d["sections"][0]["records"][0].update(baseline_ms=0.0), "baseline"),
    (lambda d: d["sections"][0]["records"][0].update(rows=[]), "no rows"),
    (lambda d: d["sections"][0]["records"][0].update(kind="speed"), "unknown kind"),
    (lambda d: d["sections"][0].update(status="error"), "without a reason"),
    (lambda d: d.pop("machine"), "machine"),
])
def test_check_finds_malformed_documents(mutate, expected):
    t = _timing()
    doc = _doc([R.timing_record("layer", "N=8", t, [R.row(t, "LN")], op="forward")])
    mutate(doc)
    problems = R.check(doc)
    assert problems and any(expected in p for p in problems), problems


def test_failed_section_shows_its_reason():
    md = R.markdown(_doc([], status="error", reason="layer: RuntimeError: boom"))
    assert "**error**: layer: RuntimeError: boom" in md
