"""``benchmarks/compare_runs.py``: after/before per row of two bench.json files."""

from localnorm.benchmarks import compare_runs


def _run(ratios):
    rows = [{"name": name, "ratio": r} for name, r in ratios.items()]
    return {"sections": [{"name": "torch", "records": [
        {"kind": "layer", "case": "c", "op": "forward", "layout": "NCHW", "rows": rows}]}]}


def test_summary_counts_rows_worse_by_more_than_ten_percent(capsys):
    before = _run({"a": 1.0, "b": 1.0, "c": 2.0, "only before": 1.0})
    after = _run({"a": 1.05, "b": 1.5, "c": 1.0, "only after": 9.0})
    (entry,) = compare_runs.summary(before, after)
    assert entry["rows"] == 3 and entry["worse_10pct"] == 1
    assert entry["median_change"] == 1.05
    assert entry["after"] == (1.0, 1.5) and entry["before"] == (1.0, 2.0)
