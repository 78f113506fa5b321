"""Records, bench.json validation and the markdown page, on hand-made timings."""

import json

import pytest

from localnorm.benchmarks import _report as R
from localnorm.benchmarks._timing import Timing


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


# ----------------------------------------------------------------------------- discussion

def _bench_doc():
    t = _timing()
    slow = Timing(samples={"BN": [1.0, 1.0, 1.0], "LN": [2.0, 2.0, 2.0], "GN": [1.0, 1.0, 1.0]},
                  baseline="BN", inner={"BN": 1, "LN": 1, "GN": 1})
    recs = [R.timing_record("layer", "N=8", t, [R.row(t, "LN", target=1.3)], op="forward",
                            layout="NCHW"),
            R.timing_record("layer", "N=16", slow, [R.row(slow, "LN", target=1.3)],
                            op="forward", layout="NCHW"),
            R.timing_record("layer", "N=8", t, [R.row(t, "LN", target=1.3)], op="forward",
                            layout="channels_last")]
    doc = _doc(recs)
    doc["quick"] = False
    return doc


def test_discussion_templates_are_filled_from_the_data():
    doc = _bench_doc()
    text = ("one {{ ratio row=LN layout=channels_last }}; all {{ ratio op=forward row=LN }}; "
            "met {{ met section=torch row=LN }}; none {{ ratio row=nope }}; {{ run }}")
    out = R.render_discussion(text, doc)
    assert "one 1.20x;" in out
    assert "all 1.20x to 2.00x (3 cases);" in out
    assert "met 2 of 3;" in out
    assert f"none {R.NOT_MEASURED}" in out
    assert "the bench run of now on 2 cores" in out
    assert "{{" not in out
    merged = R.render_discussion("{{ run }}", dict(doc, merged_from=["then", "now"]))
    assert "the bench runs of then, now, merged" in merged and "on 2 cores" in merged


def test_discussion_cites_the_profiling_run_by_name():
    profiles = _bench_doc()
    profiles.update(created="yesterday", command="python -m benchmarks.profiling all",
                    load_average="9.5")
    out = R.render_discussion("{{ ratio source=profiles case=N=16 row=LN }} in {{ run "
                              "source=profiles }}", _doc([]), profiles)
    assert out.startswith("2.00x in the profiles run of yesterday")
    assert "load average 9.5" in out and "`python -m benchmarks.profiling all`" in out


@pytest.mark.parametrize("template, expected", [
    ("{{ ratio colour=red }}", "unknown filter"),
    ("{{ speed row=LN }}", "unknown template function"),
    ("{{ ratio source=elsewhere }}", "unknown source"),
])
def test_discussion_typos_fail_loudly(template, expected):
    with pytest.raises(ValueError, match=expected):
        R.render_discussion(template, _bench_doc())


def test_page_renders_the_discussion_except_for_quick_runs():
    doc = _bench_doc()
    md = R.markdown(doc, discussion="LN costs {{ ratio case=N=16 row=LN }}.", profiles={})
    assert "## Discussion" in md and "LN costs 2.00x." in md
    doc["quick"] = True
    assert "## Discussion" not in R.markdown(doc, discussion="x", profiles={})


def test_discussion_cites_xla_bytes_of_one_row():
    doc = _bench_doc()
    doc["sections"][0]["records"][0]["rows"][0].update(xla_bytes=2.5e8, xla_bytes_ratio=1.25)
    out = R.render_discussion("{{ xla case=N=8 layout=NCHW row=LN }}", doc)
    assert out == "250 MB accessed (1.25x the baseline's)"
    assert R.render_discussion("{{ xla case=N=16 row=LN }}", doc) == R.NOT_MEASURED


def test_the_shipped_discussion_renders_against_the_shipped_results():
    """benchmarks/discussion.md has no typo in its templates, and every figure in it comes
    from docs/results/bench.json or benchmarks/profiles.json."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = json.loads((root / "docs" / "results" / "bench.json").read_text())
    text = R.DISCUSSION.read_text(encoding="utf-8")
    assert "{{" in text  # figures are templates, not typed
    profiles = json.loads(R.PROFILES.read_text(encoding="utf-8"))
    out = R.render_discussion(text, doc, profiles)
    assert "{{" not in out and "}}" not in out
    assert R.check(profiles) == []
