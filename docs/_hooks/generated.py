"""mkdocs hook: fill generated sections of pages from their sources at build time.

A page asks for generated content with a marker line ``<!-- generated: NAME -->``; the
marker is replaced by the Markdown that ``GENERATORS[NAME]`` returns. Numbers on the site
are therefore never copied by hand:

- ``support-matrix``: the conformance support matrix, from
  ``conformance.matrix.support_matrix()`` (what each subject runs, skips and why);
- ``headline``: the headline robustness plot of the home page, from ``docs/results/``;
- ``robustness``: the main job's tables and plots, from ``docs/results/`` (written by
  ``localnorm robustness``);
- ``benchmarks``: the benchmark tables, rendered from ``docs/results/bench.json`` by the
  benchmarks' own page builder (``benchmarks._report.markdown``), else
  ``docs/results/bench.md``.

An unknown marker, or a support matrix that cannot be computed, fails the build.
Results that have not been produced yet are reported on the page, not invented.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mkdocs.exceptions import PluginError

_MARKER = re.compile(r"^<!--\s*generated:\s*([\w-]+)\s*-->\s*$", re.MULTILINE)

#: Files in docs/results/ that belong to the benchmarks, not to the robustness job.
BENCH_FILES = ("bench.json", "bench.md")


# -- small Markdown helpers ------------------------------------------------------------------


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif value is None:
        text = ""
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", r"\|").replace("\n", " ")


def table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of records (columns: the union of keys, in first-seen order)."""
    if not rows:
        return "*(empty)*\n"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def records(data) -> list[dict] | None:
    """Records from common JSON/object shapes: a list of dicts, a dict of dicts
    (key becomes the first column), or an object with ``to_records()``/``rows``."""
    if hasattr(data, "to_records") and callable(data.to_records):
        data = data.to_records()
    elif hasattr(data, "rows") and not isinstance(data, Mapping):
        data = data.rows
    if isinstance(data, Sequence) and not isinstance(data, str) and all(
        isinstance(r, Mapping) for r in data
    ):
        return [dict(r) for r in data]
    if isinstance(data, Mapping) and data and all(isinstance(v, Mapping) for v in data.values()):
        return [{"": key, **value} for key, value in data.items()]
    return None


def render(data) -> str:
    """Markdown for a generated object: a string as is, records as a table, a mapping of
    named parts as sections."""
    if hasattr(data, "to_markdown") and callable(data.to_markdown):
        return data.to_markdown()
    if isinstance(data, str):
        return data
    rows = records(data)
    if rows is not None:
        return table(rows)
    if isinstance(data, Mapping):
        return "\n".join(f"**{key}**\n\n{render(value)}" for key, value in data.items())
    raise PluginError(f"Cannot render generated content of type {type(data).__name__}.")


def _missing(what: str, how: str) -> str:
    return f'!!! note "Not produced yet"\n    {what} are not in this build yet. {how}\n'


# -- generators -----------------------------------------------------------------------------


def support_matrix(root: Path, docs: Path) -> str:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        matrix = importlib.import_module("conformance.matrix")
        data = matrix.support_matrix()
    except Exception as exc:  # noqa: BLE001 - any failure must fail the build
        raise PluginError(
            "The conformance support matrix could not be generated "
            f"(conformance.matrix.support_matrix()): {type(exc).__name__}: {exc}"
        ) from exc
    return render(data)


def _title(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


def robustness(root: Path, docs: Path) -> str:
    """The robustness job's output in docs/results/: its Markdown report (``results.md``,
    tables), the accuracy plots (``acc_*``), any CSV or record-list JSON as tables, and the
    remaining plots (confusion matrices) in a collapsed block."""
    results = docs / "results"
    files = sorted(p for p in results.iterdir()) if results.is_dir() else []
    files = [p for p in files if p.name not in BENCH_FILES and not p.name.startswith(("_", "."))]
    plots = [p for p in files if p.suffix in (".png", ".svg")]
    main_plots = [p for p in plots if p.stem.startswith(("acc", "headline"))]
    other_plots = [p for p in plots if p not in main_plots]
    parts = [_include(p, docs) for p in files if p.suffix == ".md"]
    for path in files:
        rel = path.relative_to(docs).as_posix()
        rows = None
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        elif path.suffix == ".json":
            rows = records(json.loads(path.read_text(encoding="utf-8")))
        if rows is not None:
            parts.append(f"### {_title(path)}\n\n{table(rows)}\n*Source: `docs/{rel}`*\n")
    if main_plots:
        parts.append("### Plots\n")
        parts += [f"![{_title(p)}]({p.relative_to(docs).as_posix()})\n" for p in main_plots]
    if other_plots:
        parts.append('??? note "More plots (' + str(len(other_plots)) + ')"\n')
        parts += [f"    ![{_title(p)}]({p.relative_to(docs).as_posix()})\n" for p in other_plots]
    if not parts:
        return _missing("The robustness results", "Run `localnorm robustness` (see the guide).")
    return "\n".join(parts)


def headline(root: Path, docs: Path) -> str:
    """The headline robustness plot: ``docs/results/headline.{svg,png}``, else the accuracy
    under additive Gaussian noise (``acc*agn``, the paper's headline), else the first plot."""
    results = docs / "results"
    plots = sorted(p for p in results.glob("*") if p.suffix in (".svg", ".png")) if results.is_dir() else []
    accuracy = [p for p in plots if p.stem.startswith("acc")]
    preferred = ([p for p in plots if "headline" in p.stem]
                 or [p for p in accuracy if p.stem.endswith("agn")] or accuracy or plots)
    if not preferred:
        return _missing("The robustness plots", "Run `localnorm robustness` (see Results).")
    rel = preferred[0].relative_to(docs).as_posix()
    return (f"![Accuracy under increasing noise, LocalNorm against BatchNorm]({rel})\n\n"
            + headline_table(results))


def headline_table(results: Path, noise: str = "agn") -> str:
    """Accuracy (%) of every method clean, at sigma = 1 and at the largest level of
    ``noise``, from the records of the first ``*.json`` in docs/results/ that has them."""
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        recs = data.get("records") if isinstance(data, Mapping) else None
        if not recs or not any(r.get("noise") == noise for r in recs):
            continue
        levels = sorted({float(r["level"]) for r in recs if r.get("noise") == noise})
        shown = [lv for lv in dict.fromkeys([1.0, levels[-1]]) if lv in levels]
        rows = {}
        for r in recs:
            key = f"{r['method']} ({r['protocol']})"
            if r.get("noise") == "none":
                rows.setdefault(key, {})["clean"] = f"{100 * r['accuracy']:.1f}"
            elif r.get("noise") == noise and float(r["level"]) in shown:
                rows.setdefault(key, {})[f"{noise} sigma={float(r['level']):g}"] = (
                    f"{100 * r['accuracy']:.1f}")
        data_note = data.get("data", "") if isinstance(data, Mapping) else ""
        columns = ["method (protocol)", "clean", *(f"{noise} sigma={lv:g}" for lv in shown)]
        body = [{"method (protocol)": key, **vals} for key, vals in rows.items()]
        return (f"Test accuracy (%), from `docs/{path.relative_to(results.parent).as_posix()}`"
                f"{': ' + data_note if data_note else ''}\n\n" + table(body, columns))
    return ""


def benchmarks(root: Path, docs: Path) -> str:
    results = docs / "results"
    parts = []
    md, js = results / "bench.md", results / "bench.json"
    if js.is_file():
        # Rendered from the data with the benchmarks' own page builder, so the page can
        # never disagree with bench.json (bench.md is that same page, written by the run).
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            builder = importlib.import_module("benchmarks._report").markdown
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"Cannot render docs/results/bench.json: {exc}") from exc
        parts.append(_demote(builder(json.loads(js.read_text(encoding="utf-8")))))
    elif md.is_file():
        parts.append(_include(md, docs))
    if not parts:
        return _missing("The benchmark tables", "Run the benchmarks (see Conformance).")
    return "\n".join(parts)


_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)")


def _include(path: Path, docs: Path) -> str:
    """A Markdown file of docs/results/ included in a page at the docs root: headings
    demoted, relative links and images rebased onto the file's directory."""
    base = path.parent.relative_to(docs).as_posix()

    def rebase(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^([a-z][\w+.-]*:|/|#)", target):
            return match.group(0)
        return f"{match.group(1)}{base}/{target}"

    return _LINK.sub(rebase, _demote(path.read_text(encoding="utf-8")))


def _demote(text: str, levels: int = 2) -> str:
    """Shift Markdown headings down so an included file nests under the page's sections
    (lines inside fenced code blocks are left alone)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6}) ", line)):
            line = "#" * min(len(m.group(1)) + levels, 6) + line[len(m.group(1)):]
        out.append(line)
    return "\n".join(out) + "\n"


GENERATORS: dict[str, Callable[[Path, Path], str]] = {
    "support-matrix": support_matrix,
    "headline": headline,
    "robustness": robustness,
    "benchmarks": benchmarks,
}


def on_page_markdown(markdown, page, config, files):
    root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(
                f"{page.file.src_path}: unknown generated section {name!r}; "
                f"known: {', '.join(GENERATORS)}."
            )
        return GENERATORS[name](root, docs)

    return _MARKER.sub(replace, markdown)
