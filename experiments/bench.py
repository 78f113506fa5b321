"""``localnorm bench``: LocalNorm against each framework's native BatchNorm.

Runs the installed benchmark suite (:mod:`localnorm.benchmarks`), one process per
section (``torch``, ``keras-tensorflow``, ``keras-jax``, ``keras-torch``, ``flax``: Keras
fixes its backend per process), each within its own time budget, merges their results
into ``bench.json`` and writes the results page ``bench.md`` from it. Every figure is a
ratio measured in one run (interleaved repetitions, medians of paired ratios; see
``localnorm.benchmarks._timing``), so the figures hold on a noisy machine. One command measures
everything (every shape, layout, network, protocol and memory figure in every section);
the results page of the docs is reproduced with ``localnorm bench --out-dir docs/results``
(see ``benchmarks/README.md`` for its duration). ``--quick`` runs tiny shapes with few
rounds: it checks the machinery, not the speed.

This module imports :mod:`argparse` only at module level (``localnorm --help`` stays fast).
"""

from __future__ import annotations

import argparse

#: Every section, in the order they run and appear on the page.
SECTIONS = ("torch", "keras-tensorflow", "keras-jax", "keras-torch", "flax")
KINDS = ("layer", "network", "protocol", "memory")

#: Each section's time budget in seconds (``--timeout`` replaces them all): about twice
#: the section's duration measured on two CPU cores (``benchmarks/README.md``), so a
#: quiet machine never meets them and a stuck section cannot hold up the others. A
#: section stopped by its budget keeps the figures it measured and is marked "error".
BUDGETS = {"torch": 1200.0, "keras-tensorflow": 900.0, "keras-jax": 1200.0,
           "keras-torch": 900.0, "flax": 900.0}
#: The budget of every section in a ``--quick`` run (minutes on a quiet machine; the
#: margin is for loaded CI machines, where compiling dominates).
QUICK_BUDGET = 1200.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on the ``localnorm`` parser."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark LocalNorm against each framework's BatchNorm (bench.json, bench.md)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--out-dir", default=".", metavar="DIR",
                   help="where bench.json and bench.md are written (default: current directory)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 3 rounds: checks the machinery in seconds, not the speed")
    p.add_argument("--sections", default=",".join(SECTIONS), metavar="LIST",
                   help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    p.add_argument("--kinds", default=",".join(KINDS), metavar="LIST",
                   help=f"comma-separated kinds of figure (default: all of {','.join(KINDS)})")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="device of the torch section (keras and flax use their default device)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds after which any section is stopped and reported as an error "
                   "(default: each section's own budget, "
                   + ", ".join(f"{k} {v:g}" for k, v in BUDGETS.items())
                   + f"; {QUICK_BUDGET:g} each with --quick)")
    p.add_argument("--markdown-only", metavar="JSON",
                   help="only regenerate bench.md (next to JSON) from an existing bench.json")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="combine the sections of several bench.json files (e.g. a CPU run "
                   "and a CUDA run, or sections run separately) into DIR/bench.json and "
                   "bench.md; a later file's section replaces the kinds of figure it holds")
    p.set_defaults(func=run)
    return p


def _parse_list(name: str, text: str, choices: tuple) -> list[str]:
    from localnorm import _spec

    items = [s.strip() for s in text.split(",") if s.strip()]
    for item in items:
        _spec.check_choice(name, item, choices)
    return items


def run_section(name: str, out_file, *, quick: bool, device: str, kinds: list[str],
                timeout: float) -> dict:
    """Run one section in a fresh process and return its JSON (an "error" section when the
    process fails or times out)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if name.startswith("keras-"):
        env["KERAS_BACKEND"] = name.split("-", 1)[1]
    cmd = [sys.executable, "-m", "localnorm.benchmarks", name, "--out", str(out_file),
           "--device", device, "--kinds", ",".join(kinds)] + (["--quick"] if quick else [])
    fail = None
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            fail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            fail = fail[0]
    except subprocess.TimeoutExpired:
        fail = f"timed out after {timeout:g} s (the figures measured before are kept)"
    try:
        with open(out_file, encoding="utf-8") as f:
            sec = json.load(f)
    except (OSError, ValueError):
        sec = {"name": name, "framework": name.split("-")[0], "backend": None, "device": device,
               "status": "error", "reason": fail or "the section wrote no results",
               "versions": {}, "notes": [], "records": []}
    if fail and sec.get("status") == "ok":
        sec.update(status="error", reason=fail)
    return sec


def command_line(args: argparse.Namespace) -> str:
    """The ``localnorm bench`` command that ``args`` stand for (options at their default
    left out), recorded in bench.json so the page says how it was made."""
    import shlex

    parts = ["localnorm", "bench"]
    if args.quick:
        parts.append("--quick")
    for opt, value, default in (("--sections", args.sections, ",".join(SECTIONS)),
                                ("--kinds", args.kinds, ",".join(KINDS)),
                                ("--device", args.device, "cpu")):
        if value != default:
            parts += [opt, value]
    if args.timeout is not None:
        parts += ["--timeout", f"{args.timeout:g}"]
    parts += ["--out-dir", args.out_dir]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Run the selected sections and write ``bench.json`` and ``bench.md``; returns 1 when a
    section failed (its error is in the files), else 0."""
    import datetime
    import json
    import sys
    import tempfile
    import time
    from pathlib import Path

    from localnorm.benchmarks import _report
    from localnorm.benchmarks._cases import machine
    from localnorm.benchmarks._timing import FULL, NETWORK, QUICK

    if args.markdown_only:
        src = Path(args.markdown_only)
        doc = json.loads(src.read_text(encoding="utf-8"))
        (src.parent / "bench.md").write_text(_report.markdown(doc), encoding="utf-8")
        return 0
    if args.merge:
        docs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.merge]
        merged = dict(docs[0])
        by_name: dict = {}
        for d in docs:
            for sec in d["sections"]:
                # a section of a merged file keeps the runs it came from
                sec = {**sec, "created": sec.get("created") or d["created"]}
                old = by_name.get(sec["name"])
                if old is not None and sec["records"]:
                    # a later run replaces the kinds of figure it measured, keeps the rest
                    kinds = {r["kind"] for r in sec["records"]}
                    kept = [r for r in old["records"] if r["kind"] not in kinds]
                    sec["records"] = kept + sec["records"]
                    sec["notes"] = list(dict.fromkeys(old["notes"] + sec["notes"]))
                    sec["created"] = f"{old['created']}, {d['created']} ({', '.join(sorted(kinds))})"
                    reasons = [x["reason"] for x in (old, sec) if x["status"] == "error"]
                    sec["status"] = "error" if reasons else "ok"
                    sec["reason"] = "; ".join(reasons)
                by_name[sec["name"]] = sec
        merged["sections"] = [by_name[n] for n in SECTIONS if n in by_name]
        merged["merged_from"] = list(dict.fromkeys(
            run for d in docs for run in d.get("merged_from") or [d["created"]]))
        merged.pop("discussion", None)  # rendered from benchmarks/discussion.md
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _report.dump(merged, out_dir / "bench.json")
        (out_dir / "bench.md").write_text(_report.markdown(merged), encoding="utf-8")
        return 0
    sections = _parse_list("section", args.sections, SECTIONS)
    kinds = _parse_list("kind", args.kinds, KINDS)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": _report.SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(args),
        "quick": bool(args.quick),
        "settings": (QUICK if args.quick else FULL).as_dict(),
        "network_settings": (QUICK if args.quick else NETWORK).as_dict(),
        "machine": machine(),
        "sections": [],
    }
    failed = False
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in sections:
            t0 = time.perf_counter()
            budget = args.timeout or (QUICK_BUDGET if args.quick else BUDGETS[name])
            print(f"bench: {name} (budget {budget:g} s) ...", file=sys.stderr, flush=True)
            sec = run_section(name, Path(tmp) / f"{name}.json", quick=args.quick,
                              device=args.device, kinds=kinds, timeout=budget)
            sec["seconds"] = round(time.perf_counter() - t0, 1)
            sec["budget_s"] = budget
            print(f"bench: {name}: {sec['status']} in {sec['seconds']} s"
                  + (f" ({sec['reason']})" if sec.get("reason") else ""), file=sys.stderr,
                  flush=True)
            failed |= sec["status"] == "error"
            doc["sections"].append(sec)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    _report.dump(doc, out_dir / "bench.json")
    (out_dir / "bench.md").write_text(_report.markdown(doc), encoding="utf-8")
    print(f"bench: wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}", file=sys.stderr)
    return 1 if failed else 0
