"""``localnorm conformance``: the conformance battery against the installed library.

Runs the suite CI runs (the installed ``localnorm.conformance``, the same files, through
``pytest.main``) on the subjects asked for, skips those that cannot run on this machine with
the reason (a missing framework, no CUDA device), and ends with a matrix, subject x mode x
partition x dtype, each cell pass / fail / not drawn, printed and written as
``conformance.json`` and ``conformance.md``. A failing case is saved under
``DIR/conformance-failures`` and its reproduction command is printed with the failure, as in
the suite. Needs the ``[conformance]`` extra (pytest, hypothesis) and the extra of each
framework tested (``[torch]`` for the torch subjects); the Keras subject runs on the
backend ``KERAS_BACKEND`` selects (Keras fixes it per process).

This module imports :mod:`argparse` only at module level (``localnorm --help`` stays fast).
"""

from __future__ import annotations

import argparse

#: Hypothesis profiles (``localnorm/conformance/profiles.py``): examples per property.
PROFILES = {"ci": "200 examples, derandomized (what CI runs)",
            "dev": "25 examples, randomized (a quick check)",
            "thorough": "1000 examples, randomized (a longer search)"}
#: What a user installs for each subject's framework (the [keras] extra is Keras alone).
INSTALL = {"strict": "pip install array-api-strict",
           "torch-array": 'pip install "localnorm[torch]"',
           "jax-array": 'pip install "localnorm[flax]" (or jax alone)',
           "torch": 'pip install "localnorm[torch]"',
           "torch-cuda": 'pip install "localnorm[torch]" (a CUDA build of torch)',
           "keras": 'pip install "localnorm[keras]" and a backend (tensorflow, jax or torch)',
           "flax": 'pip install "localnorm[flax]"',
           "flax-linen": 'pip install "localnorm[flax]"'}
#: Cell outcomes, in the order a cell's cases decide it.
FAIL, PASS, NOT_DRAWN = "fail", "pass", "not drawn"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``conformance`` subcommand on the ``localnorm`` parser."""
    p = subparsers.add_parser(
        "conformance",
        help="check every backend installed here against the NumPy reference "
        "(conformance.json, conformance.md)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--subjects", default=None, metavar="LIST",
                   help="comma-separated subjects (default: all registered; those that cannot "
                   "run here are skipped with the reason), e.g. torch,torch-cuda,keras,flax")
    p.add_argument("--profile", default="dev", choices=tuple(PROFILES),
                   help="; ".join(f"{k}: {v}" for k, v in PROFILES.items()) + " (default: dev)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="where conformance.json, conformance.md and failing cases are written "
                   "(default: current directory)")
    p.set_defaults(func=run)
    return p


def extra_missing(module: str) -> Exception:
    """The error for a missing test tool: which extra brings it."""
    from localnorm import LocalNormError

    return LocalNormError(
        "`localnorm conformance` runs the conformance suite with pytest and hypothesis, "
        f"which this installation lacks. Received: cannot import {module!r}. Fix: "
        'pip install "localnorm[conformance]" (add the extra of each framework to test, '
        'e.g. "localnorm[torch,conformance]"), then run the command again.'
    )


def with_install_hint(name: str, reason: str | None) -> str | None:
    """A subject's reason for not running, with the install line when a module is missing."""
    if reason and name in INSTALL and ("not installed" in reason or "cannot import" in reason):
        return f"{reason}; install it with {INSTALL[name]}"
    return reason


def bad_subjects(problem: str, spec: str) -> Exception:
    from localnorm import LocalNormError

    return LocalNormError(f"--subjects names what the suite tests: {problem} "
                          f"Received: subjects={spec!r}. Fix: choose among the names above.")


class _Collector:
    """A pytest plugin: registers the suite's markers (an installed package has no
    pytest configuration file) and keeps each test's outcome."""

    def __init__(self) -> None:
        self.tests: list[dict] = []

    def pytest_configure(self, config) -> None:
        config.addinivalue_line("markers", "slow: long experiments")
        config.addinivalue_line("markers", "gpu: needs a CUDA/GPU device")

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            entry = {"nodeid": report.nodeid, "outcome": report.outcome}
            if report.failed:
                text = str(report.longrepr)
                entry["reproduce"] = sorted({line.strip() for line in text.splitlines()
                                             if line.strip().startswith("Reproduce:")})
            elif report.skipped and isinstance(report.longrepr, tuple):
                entry["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
            self.tests.append(entry)


def matrix(names: list[str], unavailable: dict, declared: dict, cells: list[dict]) -> dict:
    """The outcome of every (subject, mode, partition, dtype) cell a subject declares.

    A cell fails when one of its checked cases failed, passes when its cases were checked
    and none failed, and is "not drawn" when no test drew a case in it (hypothesis draws
    the cells at random; ``--profile ci`` or ``thorough`` draws more).
    """
    seen: dict = {}
    for c in cells:
        seen.setdefault((c["subject"], c["mode"], c["partition"], c["dtype"]), set()).add(
            c["outcome"])
    rows = []
    for name in names:
        if unavailable.get(name):
            rows.append({"subject": name, "status": "skipped", "reason": unavailable[name]})
            continue
        modes, partitions, dtypes = declared[name]
        out = {}
        for mode in modes:
            for partition in partitions:
                for dtype in dtypes:
                    outcomes = seen.get((name, mode, partition, dtype), set())
                    out[f"{mode}/{partition}/{dtype}"] = (FAIL if FAIL in outcomes else
                                                          PASS if outcomes else NOT_DRAWN)
        rows.append({"subject": name, "status": "ran", "modes": list(modes),
                     "partitions": list(partitions), "dtypes": list(dtypes), "cells": out})
    return {"subjects": rows}


def markdown(doc: dict) -> str:
    """The results page: one table per subject (rows mode/partition, columns dtype), the
    test counts, the skipped tests by reason, and each failure with its reproduction
    command."""
    lines = ["# localnorm conformance", "",
             (f"`{doc['command']}`: localnorm {doc['version']}, hypothesis profile "
              f"`{doc['profile']}`, {doc['seconds']} s, {doc['created']}."), "",
             "Tests: " + ", ".join(f"{n} {k}" for k, n in doc["counts"].items()) + ".", ""]
    for row in doc["matrix"]["subjects"]:
        backend = doc.get("keras_backend") if row["subject"] == "keras" else None
        lines.append(f"## {row['subject']}" + (f" (backend {backend})" if backend else ""))
        lines.append("")
        if row["status"] == "skipped":
            lines += [f"Skipped: {row['reason']}", ""]
            continue
        lines.append("| mode | partition | " + " | ".join(row["dtypes"]) + " |")
        lines.append("|---|---|" + "---|" * len(row["dtypes"]))
        for mode in row["modes"]:
            for partition in row["partitions"]:
                cells = [row["cells"][f"{mode}/{partition}/{d}"] for d in row["dtypes"]]
                lines.append(f"| {mode} | {partition} | " + " | ".join(
                    f"**{c}**" if c == FAIL else c for c in cells) + " |")
        lines.append("")
    reasons: dict = {}
    for t in doc["tests"]:
        if t["outcome"] == "skipped":
            reasons[t.get("reason", "")] = reasons.get(t.get("reason", ""), 0) + 1
    if reasons:
        lines += ["## Skipped tests", "", "| tests | reason |", "|---|---|"]
        lines += [f"| {n} | {r or 'no reason given'} |" for r, n in
                  sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("")
    failed = [t for t in doc["tests"] if t["outcome"] == "failed"]
    if failed:
        lines += ["## Failures", ""]
        for t in failed:
            lines.append(f"- `{t['nodeid']}`")
            lines += [f"  - `{r.removeprefix('Reproduce: ')}`" for r in t.get("reproduce", [])]
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the suite on the selected subjects and write ``conformance.json`` and
    ``conformance.md``; returns pytest's exit status (0 all passed or skipped, 1 a test
    failed)."""
    import datetime
    import importlib.util
    import json
    import os
    import shlex
    import sys
    import time
    from pathlib import Path

    for module in ("pytest", "hypothesis"):  # found, not imported: pytest imports them
        if importlib.util.find_spec(module) is None:
            raise extra_missing(module)
    import pytest
    from localnorm.conformance import subjects

    import localnorm

    try:
        names = subjects.parse(args.subjects)
    except ValueError as exc:
        raise bad_subjects(str(exc).split(" Received:")[0], args.subjects) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells_file = out / "conformance-cells.jsonl"
    cells_file.unlink(missing_ok=True)
    unavailable = {n: with_install_hint(n, r) for n, r in subjects.available(names).items()}
    declared = {n: (subjects.load(n).modes, subjects.load(n).partitions,
                    subjects.load(n).dtypes) for n in names if not unavailable[n]}
    for reason in unavailable.values():
        if reason:
            print(f"conformance: skipping {reason}", file=sys.stderr)
    # The suite reads these when pytest imports it, below.
    os.environ["HYPOTHESIS_PROFILE"] = args.profile
    os.environ["LOCALNORM_CONFORMANCE_FAILURES"] = str((out / "conformance-failures").resolve())
    os.environ["LOCALNORM_CONFORMANCE_CELLS"] = str(cells_file.resolve())
    suite = Path(subjects.__file__).parent
    collector = _Collector()
    t0 = time.perf_counter()
    # --rootdir: test ids read "conformance/test_...py::..." as in conformance/skips.txt
    code = pytest.main([str(suite), f"--subjects={','.join(names)}", f"--rootdir={suite.parent}",
                        "-q", "-rfE", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
                       plugins=[collector])
    seconds = round(time.perf_counter() - t0, 1)
    cells = [json.loads(line) for line in cells_file.read_text(encoding="utf-8").splitlines()
             ] if cells_file.is_file() else []
    cells_file.unlink(missing_ok=True)
    counts: dict = {}
    for t in collector.tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    argv = ["localnorm", "conformance", *getattr(args, "argv", [])[1:]]
    doc = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv), "version": localnorm.__version__, "profile": args.profile,
        "exit_status": int(code), "seconds": seconds, "counts": counts,
        "matrix": matrix(names, unavailable, declared, cells), "tests": collector.tests,
    }
    if "keras" in declared:  # Keras fixes its backend per process: say which one ran
        doc["keras_backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    (out / "conformance.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    page = markdown(doc)
    (out / "conformance.md").write_text(page, encoding="utf-8")
    print("\n" + page)
    print(f"conformance: wrote {out / 'conformance.json'} and {out / 'conformance.md'}",
          file=sys.stderr)
    return 0 if code == 0 else 1
