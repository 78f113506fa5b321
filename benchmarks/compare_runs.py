"""Two runs of ``localnorm bench`` side by side: each LocalNorm row's ratio to the native
BatchNorm after, divided by before (rows present in both runs)::

    python -m localnorm.benchmarks.compare_runs BEFORE/bench.json AFTER/bench.json

Prints, per section and kind of figure, the number of rows compared, the median
after/before, how many rows got more than 10% worse, and the ranges of the ratios in each
run (the table of "Issue 13 before and after" in ``benchmarks/discussion.md``).
``--rows SECTION`` lists that section's layer and network rows one by one.
"""

from __future__ import annotations

import argparse
import json
import statistics


def ratios(run: dict) -> dict[tuple, float]:
    """(section, kind, case, op, layout, row) -> the row's ratio to its baseline."""
    out = {}
    for section in run["sections"]:
        for record in section.get("records", []):
            for row in record.get("rows", []):
                if row.get("ratio") is not None:
                    key = (section["name"], record["kind"], record["case"], record["op"],
                           record.get("layout"), row["name"])
                    out[key] = row["ratio"]
    return out


def summary(before: dict, after: dict) -> list[dict]:
    """One entry per (section, kind) present in both runs."""
    old, new = ratios(before), ratios(after)
    common = [k for k in new if k in old]
    out = []
    for sec, kind in sorted({k[:2] for k in common}):
        keys = [k for k in common if k[:2] == (sec, kind)]
        change = [new[k] / old[k] for k in keys]
        out.append({"section": sec, "kind": kind, "rows": len(keys),
                    "median_change": statistics.median(change),
                    "worse_10pct": sum(c > 1.10 for c in change),
                    "after": (min(new[k] for k in keys), max(new[k] for k in keys)),
                    "before": (min(old[k] for k in keys), max(old[k] for k in keys))})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rows", metavar="SECTION", help="list one section's rows")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.before, args.after):
        with open(path) as f:
            runs.append(json.load(f))
    for e in summary(*runs):
        print(f"{e['section']:17s} {e['kind']:8s} rows {e['rows']:3d}  median after/before "
              f"{e['median_change']:.2f}x  >10% worse {e['worse_10pct']:3d}  after "
              f"{e['after'][0]:.2f}-{e['after'][1]:.2f}x  before "
              f"{e['before'][0]:.2f}-{e['before'][1]:.2f}x")
    if args.rows:
        old, new = (ratios(r) for r in runs)
        for k in sorted(k for k in new if k in old and k[0] == args.rows):
            print(f"  {k[1]:8s} {k[2]:40s} {k[3]:17s} {k[4] or '':14s} {k[5]:42s} "
                  f"{old[k]:.2f} -> {new[k]:.2f}")


if __name__ == "__main__":
    main()
