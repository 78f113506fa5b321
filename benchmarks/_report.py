"""Benchmark records, the ``bench.json`` layout and the ``bench.md`` page built from it.

A *record* is one comparison measured in one interleaved run: a baseline (the framework's
own BatchNorm, or another reference) and candidate rows, each with its median time and
its ratio to the baseline (median of the per-round paired ratios, with their
inter-quartile range). Memory records carry bytes instead of times. ``bench.json`` is::

    {"schema": "localnorm-bench/1", "created": ..., "quick": bool, "settings": {...},
     "machine": {...}, "sections": [{"name", "framework", "backend", "device", "status",
     "reason", "versions", "notes", "records": [...]}, ...]}

and :func:`markdown` turns it into the results page (``docs/results/bench.md``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._timing import Timing

SCHEMA = "localnorm-bench/1"

#: Kinds of record, in the order the page shows them.
KINDS = ("layer", "network", "protocol", "memory")

_KIND_TITLES = {
    "layer": "Layer: LocalNorm against the native BatchNorm (batch statistics) and GroupNorm",
    "network": "Whole network: one training step, LocalNorm against BatchNorm",
    "protocol": "Test-time protocols",
    "memory": "Memory in training, LocalNorm against BatchNorm",
}


#: Where a worker process streams its section (see :func:`stream_to`): every record is
#: written out as soon as it is measured, so a section stopped by its timeout keeps the
#: figures it had.
_SINK: dict = {"path": None, "section": None}


def stream_to(path) -> None:
    """Write the current section to ``path`` after every record (worker processes)."""
    _SINK["path"] = path


def open_section(sec: dict) -> None:
    """Make ``sec`` the section that records stream into (called by ``section()``)."""
    if _SINK["path"] is not None:
        _SINK["section"] = sec
        dump(sec, _SINK["path"])


def streaming(sec: dict) -> bool:
    return _SINK["section"] is sec


def _emit(rec: dict) -> dict:
    sec = _SINK["section"]
    if sec is not None:
        sec["records"].append(rec)
        dump(sec, _SINK["path"])
    return rec


def row(
    timing: Timing,
    name: str,
    *,
    label: str | None = None,
    baseline: str | None = None,
    scale: float = 1.0,
    target: float | None = None,
) -> dict:
    """One candidate row: median ms and ratio ``name / (scale * baseline)`` from ``timing``."""
    ratios = timing.paired_ratios(name, baseline) / scale
    q1, q3 = (float(v) for v in _percentiles(ratios))
    ratio = float(_median(ratios))
    out = {
        "name": label or name,
        "median_ms": timing.median_ms(name),
        "ratio": ratio,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "inner": timing.inner[name],
    }
    if baseline is not None and baseline != timing.baseline:
        out["versus"] = baseline if scale == 1.0 else f"{scale:g} x {baseline}"
    if target is not None:
        out["target"] = target
        out["meets_target"] = bool(ratio <= target)
    return out


def timing_record(
    kind: str,
    case: str,
    timing: Timing,
    rows: list[dict],
    *,
    op: str,
    layout: str | None = None,
    baseline_label: str | None = None,
    **extra: Any,
) -> dict:
    """A record of one interleaved comparison (see :func:`row` for the rows)."""
    rec = {
        "kind": kind,
        "case": case,
        "op": op,
        "layout": layout,
        "baseline": baseline_label or timing.baseline,
        "baseline_ms": timing.median_ms(timing.baseline),
        "rounds": len(timing.samples[timing.baseline]),
        "rows": rows,
    }
    rec.update(extra)
    return _emit(rec)


def memory_record(case: str, baseline_label: str, baseline_bytes: int, rows: dict[str, int],
                  *, method: str, op: str = "training step", **extra: Any) -> dict:
    """A memory record: bytes of the baseline and of each candidate, and their ratios."""
    return _emit({
        "kind": "memory",
        "case": case,
        "op": op,
        "layout": extra.pop("layout", None),
        "baseline": baseline_label,
        "baseline_bytes": int(baseline_bytes),
        "method": method,
        "rows": [
            {"name": n, "bytes": int(b), "ratio": float(b) / max(float(baseline_bytes), 1.0)}
            for n, b in rows.items()
        ],
        **extra,
    })


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))


def _percentiles(values):
    import numpy as np

    return np.percentile(values, [25, 75])


# ----------------------------------------------------------------------------- validation

def check(doc: dict) -> list[str]:
    """Problems with a ``bench.json`` document (empty when well formed): the schema, every
    section's status, every ratio finite and positive, every time and byte count > 0."""
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("created", "machine", "settings", "sections"):
        if key not in doc:
            problems.append(f"missing key {key!r}")
    for sec in doc.get("sections", []):
        where = sec.get("name", "?")
        if sec.get("status") not in ("ok", "skipped", "error"):
            problems.append(f"{where}: status {sec.get('status')!r}")
        if sec.get("status") != "ok" and not sec.get("reason"):
            problems.append(f"{where}: status {sec.get('status')!r} without a reason")
        for rec in sec.get("records", []):
            tag = f"{where}/{rec.get('kind')}/{rec.get('case')}/{rec.get('op')}"
            if rec.get("kind") not in KINDS:
                problems.append(f"{tag}: unknown kind")
            if not rec.get("rows"):
                problems.append(f"{tag}: no rows")
            base = rec.get("baseline_bytes" if rec.get("kind") == "memory" else "baseline_ms")
            if not _positive(base):
                problems.append(f"{tag}: baseline figure {base!r} is not positive")
            for r in rec.get("rows", []):
                for key in ("ratio",) + (("bytes",) if rec.get("kind") == "memory"
                                         else ("median_ms", "ratio_q1", "ratio_q3")):
                    if not _positive(r.get(key)):
                        problems.append(f"{tag}/{r.get('name')}: {key}={r.get(key)!r}")
    return problems


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def dump(doc: dict, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")


# ----------------------------------------------------------------------------- markdown

def _fmt_ratio(r: dict) -> str:
    text = f"{r['ratio']:.2f}x"
    if "ratio_q1" in r:
        text += f" ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})"
    if r.get("meets_target") is False:
        text += f" **> {r['target']:g}**"
    if "bandwidth_fraction" in r:
        text += f", {r['bandwidth_gbs']:.0f} GB/s = {100 * r['bandwidth_fraction']:.0f}% of peak"
    elif "bandwidth_gbs" in r:
        text += f", {r['bandwidth_gbs']:.0f} GB/s"
    return text


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024.0
    return f"{b:.1f} GiB"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def _section_tables(records: list[dict]) -> list[str]:
    out: list[str] = []
    for kind in KINDS:
        recs = [r for r in records if r["kind"] == kind]
        if not recs:
            continue
        out += [f"#### {_KIND_TITLES[kind]}", ""]
        # One table per (op, baseline) so that the columns of a table share a meaning.
        groups: dict[tuple, list[dict]] = {}
        for r in recs:
            groups.setdefault((r["op"], r["baseline"]), []).append(r)
        for (op, baseline), grp in groups.items():
            names: list[str] = []
            for r in grp:
                for c in r["rows"]:
                    if c["name"] not in names:
                        names.append(c["name"])
            if kind == "memory":
                out += [f"*{op}*, against {baseline}; method: {grp[0]['method']}", ""]
                header = ["case", baseline] + names
                lines = []
                for r in grp:
                    cells = {c["name"]: f"{_fmt_bytes(c['bytes'])} ({c['ratio']:.2f}x)"
                             for c in r["rows"]}
                    lines.append([r["case"], _fmt_bytes(r["baseline_bytes"])]
                                 + [cells.get(n, "") for n in names])
            else:
                out += [f"*{op}*: ratio to {baseline} (median of paired per-round ratios, "
                        "inter-quartile range in brackets)", ""]
                header = ["case", "layout", f"{baseline} ms"] + names
                lines = []
                for r in grp:
                    cells = {}
                    for c in r["rows"]:
                        txt = _fmt_ratio(c)
                        if "versus" in c:
                            txt += f" vs {c['versus']}"
                        cells[c["name"]] = txt
                    lines.append([r["case"], r.get("layout") or "", f"{r['baseline_ms']:.2f}"]
                                 + [cells.get(n, "") for n in names])
            out += _table(header, lines) + [""]
    return out


def targets(doc: dict) -> list[dict]:
    """Every row that carries a target, with its section and case (for the summary)."""
    found = []
    for sec in doc.get("sections", []):
        for rec in sec.get("records", []):
            for r in rec["rows"]:
                if "target" in r:
                    found.append({"section": sec["name"], "case": rec["case"], "op": rec["op"],
                                  "layout": rec.get("layout"), "name": r["name"],
                                  "ratio": r["ratio"], "target": r["target"],
                                  "met": r["meets_target"]})
    return found


def markdown(doc: dict) -> str:
    """The results page for a ``bench.json`` document."""
    m = doc["machine"]
    s = doc["settings"]
    out = [
        "# Benchmark results",
        "",
        "Generated by `localnorm bench` from `bench.json`; do not edit by hand "
        "(regenerate with `localnorm bench --markdown-only docs/results/bench.json`).",
        "",
        "Every figure below is a **ratio measured in one run**: the baseline and its candidates "
        "are timed in interleaved rounds (round-robin, order rotated each round, after warm-up "
        "calls), and a ratio is the median over rounds of the candidate's time divided by the "
        "baseline's time in the same round; the inter-quartile range of those paired ratios is "
        "given in brackets. Absolute times depend on the machine; the ratios are what to read. "
        "A ratio in **bold** misses its target.",
        "",
        f"- created: {doc['created']}{' (quick run: machinery check only)' if doc.get('quick') else ''}"
        + (f"; merged from runs of {', '.join(doc['merged_from'])} (each section's figures "
           "come from one run)" if doc.get("merged_from") else ""),
        f"- machine: {m.get('platform', '?')}; {m.get('processor') or 'cpu'}; "
        f"{m.get('cpu_count', '?')} CPU cores; python {m.get('python', '?')}",
        f"- settings: {s.get('rounds')} rounds, {s.get('warmup')} warm-up calls, samples of at "
        f"least {s.get('min_sample_s')} s",
        "",
    ]
    tg = targets(doc)
    if tg:
        out += ["## Targets", ""]
        by_kind: dict[tuple, list[dict]] = {}
        for t in tg:
            by_kind.setdefault((t["section"], t["name"], t["op"], t["target"]), []).append(t)
        lines = []
        for (section, name, op, target), ts in by_kind.items():
            worst = max(ts, key=lambda t: t["ratio"])
            met = sum(t["met"] for t in ts)
            lines.append([section, name, op, f"<= {target:g}x", f"{met}/{len(ts)}",
                          f"{worst['ratio']:.2f}x ({worst['case']}, {worst['layout'] or '-'})"])
        out += _table(["section", "candidate", "op", "target", "met", "worst"], lines) + [""]
    for sec in doc["sections"]:
        out += [f"## {sec['name']}", ""]
        desc = [f"framework: {sec.get('framework')}"]
        if sec.get("backend"):
            desc.append(f"backend: {sec['backend']}")
        desc.append(f"device: {sec.get('device', 'cpu')}")
        if sec.get("versions"):
            desc.append("versions: " + ", ".join(f"{k} {v}" for k, v in sec["versions"].items()))
        out += ["; ".join(desc), ""]
        if sec["status"] != "ok":
            out += [f"**{sec['status']}**: {sec.get('reason', '')}", ""]
        for note in sec.get("notes", []):
            out += [f"- {note}"]
        if sec.get("notes"):
            out += [""]
        out += _section_tables(sec.get("records", []))
    if doc.get("discussion"):
        out += ["## Discussion", ""] + list(doc["discussion"]) + [""]
    return "\n".join(out).rstrip() + "\n"
