"""Benchmark records, the ``bench.json`` layout and the ``bench.md`` page built from it.

A *record* is one comparison measured in one interleaved run: a baseline (the framework's
own BatchNorm, or another reference) and candidate rows, each with its median time and
its ratio to the baseline (median of the per-round paired ratios, with their
inter-quartile range). Memory records carry bytes instead of times. ``bench.json`` is::

    {"schema": "localnorm-bench/1", "created": ..., "quick": bool, "settings": {...},
     "machine": {...}, "sections": [{"name", "framework", "backend", "device", "status",
     "reason", "versions", "notes", "records": [...]}, ...]}

and :func:`markdown` turns it into the results page (``docs/results/bench.md``), with the
discussion of ``benchmarks/discussion.md`` at its end. The discussion types no figure:
its ``{{ ... }}`` templates (:func:`render_discussion`) are filled from the document being
rendered, or from ``benchmarks/profiles.json`` (the profiling run of
``python -m localnorm.benchmarks.profiling``), so the prose cannot contradict the data it sits under.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

from ._timing import Timing

SCHEMA = "localnorm-bench/1"

#: The discussion rendered at the end of the page, and the profiling results it cites.
DISCUSSION = Path(__file__).with_name("discussion.md")
PROFILES = Path(__file__).with_name("profiles.json")

#: The command that reproduces the docs' results page.
FULL_COMMAND = "localnorm bench --out-dir docs/results"

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
        "seconds": round(timing.elapsed_s, 2),
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
    if "xla_bytes" in r:
        text += f", XLA: {r['xla_bytes'] / 1e6:.0f} MB accessed"
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


def section_tables(records: list[dict]) -> list[str]:
    """The markdown tables of ``records``: one per kind, then per (op, baseline)."""
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


def markdown(doc: dict, discussion: str | None = None, profiles: dict | None = None) -> str:
    """The results page for a ``bench.json`` document.

    Parameters
    ----------
    doc : dict
        A ``bench.json`` document.
    discussion : str, optional
        The discussion's markdown with templates (default: ``benchmarks/discussion.md``);
        left out of quick runs.
    profiles : dict, optional
        The profiling results the discussion cites (default: ``benchmarks/profiles.json``).
    """
    m = doc["machine"]
    s = doc["settings"]
    out = [
        "# Benchmark results",
        "",
        "Generated by `localnorm bench` from `bench.json`; do not edit by hand "
        "(regenerate the page with `localnorm bench --markdown-only docs/results/bench.json`, "
        f"measure everything again with `{FULL_COMMAND}`: see `benchmarks/README.md`).",
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
        f"- settings: {_fmt_settings(s)}"
        + (f"; networks and protocols: {_fmt_settings(doc['network_settings'])}"
           if doc.get("network_settings") else ""),
    ]
    if doc.get("command"):
        out.append(f"- command: `{doc['command']}`"
                   + (f", {doc['seconds'] / 60:.0f} minutes" if doc.get("seconds") else ""))
    out.append("")
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
        if sec.get("seconds") is not None:
            desc.append(f"measured in {sec['seconds']:.0f} s"
                        + (f" (budget {sec['budget_s']:g} s)" if sec.get("budget_s") else ""))
        out += ["; ".join(desc), ""]
        if sec["status"] != "ok":
            out += [f"**{sec['status']}**: {sec.get('reason', '')}", ""]
        for note in sec.get("notes", []):
            out += [f"- {note}"]
        if sec.get("notes"):
            out += [""]
        out += section_tables(sec.get("records", []))
    if not doc.get("quick"):
        text = discussion if discussion is not None else (
            DISCUSSION.read_text(encoding="utf-8") if DISCUSSION.is_file() else "")
        if text.strip():
            if profiles is None and PROFILES.is_file():
                profiles = json.loads(PROFILES.read_text(encoding="utf-8"))
            out += ["## Discussion", "", render_discussion(text, doc, profiles), ""]
    return "\n".join(out).rstrip() + "\n"


def _fmt_settings(s: dict) -> str:
    return (f"{s.get('rounds')} rounds, {s.get('warmup')} warm-up calls, samples of at least "
            f"{s.get('min_sample_s')} s")


# ----------------------------------------------------------------------------- discussion

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)
#: What a template may select rows by: the section's name, the record's kind, op,
#: layout and case, the row's name.
FILTERS = ("section", "kind", "op", "layout", "case", "row")
NOT_MEASURED = "(not measured in this run)"


def select(doc: dict | None, **filters: str) -> list[tuple[dict, dict, dict]]:
    """The (section, record, row) triples of ``doc`` that match every filter exactly."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; expected some of {FILTERS}")
    found = []
    for sec in (doc or {}).get("sections", []):
        if filters.get("section", sec.get("name")) != sec.get("name"):
            continue
        for rec in sec.get("records", []):
            if any(filters.get(k, rec.get(k)) != rec.get(k)
                   for k in ("kind", "op", "layout", "case")):
                continue
            found += [(sec, rec, r) for r in rec.get("rows", [])
                      if filters.get("row", r["name"]) == r["name"]]
    return found


def _ratio_text(found, missing: str = NOT_MEASURED) -> str:
    ratios = sorted(r["ratio"] for _, _, r in found)
    if not ratios:
        return missing
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{ratios[0]:.2f}x to {ratios[-1]:.2f}x ({len(ratios)} cases)"


def _run_text(doc: dict | None, source: str) -> str:
    if not doc:
        return f"(no {source} run)"
    m = doc.get("machine", {})
    runs = doc.get("merged_from") or [doc.get("created", "?")]
    text = (f"the {source} run of {runs[0]}" if len(runs) == 1 else
            f"the {source} runs of {', '.join(runs)}, merged (each section's figures come "
            "from its latest run)")
    text += f" on {m.get('cpu_count', '?')} cores"
    if doc.get("load_average"):
        text += f" (load average {doc['load_average']})"
    if doc.get("command"):
        text += f", `{doc['command']}`"
    return text


def render_discussion(text: str, doc: dict, profiles: dict | None = None) -> str:
    """Fill the ``{{ ... }}`` templates of ``text`` from ``doc`` (or ``profiles``).

    A template is ``{{ FUNCTION key=value ... }}`` (values with spaces in quotes):

    - ``ratio`` with filters (:data:`FILTERS`): the matching rows' ratio, or their range
      and count ("0.86x to 1.02x (5 cases)");
    - ``met`` with filters: how many of the matching rows meet their target ("3 of 9");
    - ``xla`` with filters selecting one row: the bytes XLA's cost analysis says it
      accesses, and their ratio to the baseline's (profiles of JAX code);
    - ``run``: which run the figures come from (date, cores, command).

    ``source=profiles`` takes the figures from ``profiles`` instead of ``doc``. Rows that
    match nothing give "(not measured in this run)"; an unknown function or filter raises
    ``ValueError``, so a typo in the discussion fails the tests instead of the page.
    """
    def fill(match: re.Match) -> str:
        words = shlex.split(match.group(1))
        if not words:
            raise ValueError("empty template {{ }} in the discussion")
        # values may wrap across lines of the markdown: runs of white space are one space
        fn, args = words[0], {k: " ".join(v.split()) for k, v in
                              (w.split("=", 1) for w in words[1:])}
        source = args.pop("source", "bench")
        if source not in ("bench", "profiles"):
            raise ValueError(f"unknown source {source!r} in {match.group(0)}")
        data = doc if source == "bench" else profiles
        if fn == "run":
            return _run_text(data, source)
        found = select(data, **args)
        missing = NOT_MEASURED if source == "bench" else "(not in the profiling run)"
        if fn == "ratio":
            return _ratio_text(found, missing)
        if fn == "xla":
            rows = [r for _, _, r in found if "xla_bytes" in r]
            if len(rows) != 1:
                return missing if not rows else f"({len(rows)} rows match {match.group(0)})"
            return (f"{rows[0]['xla_bytes'] / 1e6:.0f} MB accessed "
                    f"({rows[0]['xla_bytes_ratio']:.2f}x the baseline's)")
        if fn == "met":
            with_target = [r for _, _, r in found if "target" in r]
            if not with_target:
                return missing
            return f"{sum(r['meets_target'] for r in with_target)} of {len(with_target)}"
        raise ValueError(f"unknown template function {fn!r} in {match.group(0)}")

    return _TEMPLATE.sub(fill, text).rstrip()
