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


#: Datasets shown first (the paper's), when the results hold several.
PREFERRED_DATASETS = ("mnist",)


def _runs(results: Path) -> list[tuple[str, Path, dict]]:
    """``(dataset, json path, document)`` of each robustness run in docs/results/ (a JSON
    document with ``records``), the paper's datasets first."""
    runs = []
    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, Mapping) and data.get("records"):
            config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
            dataset = str(config.get("dataset") or path.stem.split("-")[-1])
            runs.append((dataset, path, data))
    rank = {name: i for i, name in enumerate(PREFERRED_DATASETS)}
    return sorted(runs, key=lambda run: (rank.get(run[0], len(rank)), run[0]))


def _image(path: Path, docs: Path, indent: str = "") -> str:
    return f"{indent}![{_title(path)}]({path.relative_to(docs).as_posix()})\n"


def robustness(root: Path, docs: Path) -> str:
    """The robustness job's output in docs/results/, one section per run (dataset): its
    Markdown report (``robustness-<dataset>.md``: the tables), its accuracy plots
    (``acc_<dataset>_*``) and its other plots (confusion matrices) collapsed; then any
    other file (CSV or record-list JSON as tables, Markdown, plots)."""
    results = docs / "results"
    if not results.is_dir():
        return _missing("The robustness results", "Run `localnorm robustness` (see the guide).")
    files = [p for p in sorted(results.iterdir())
             if p.name not in BENCH_FILES and not p.name.startswith(("_", "."))]
    used: set[Path] = set()
    parts = []
    for dataset, path, _ in _runs(results):
        used.add(path)
        mine = [p for p in files if dataset in p.stem.split("_") + p.stem.split("-")]
        used.update(mine)
        parts += [_include(p, docs) for p in mine if p.suffix == ".md"]
        plots = [p for p in mine if p.suffix in (".png", ".svg")]
        accuracy = [p for p in plots if p.stem.startswith("acc")]
        others = [p for p in plots if p not in accuracy]
        if accuracy:
            parts.append(f"### Plots: {dataset}\n")
            parts += [_image(p, docs) for p in accuracy]
        if others:
            parts.append(f'??? note "More plots: {dataset} ({len(others)})"\n')
            parts += [_image(p, docs, "    ") for p in others]
        parts.append(f"*Data: `docs/{path.relative_to(docs).as_posix()}`*\n")
    for path in files:
        if path in used:
            continue
        rel = path.relative_to(docs).as_posix()
        rows = None
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        elif path.suffix == ".json":
            rows = records(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".md":
            parts.append(_include(path, docs))
        elif path.suffix in (".png", ".svg"):
            parts.append(_image(path, docs))
        if rows is not None:
            parts.append(f"### {_title(path)}\n\n{table(rows)}\n*Source: `docs/{rel}`*\n")
    if not parts:
        return _missing("The robustness results", "Run `localnorm robustness` (see the guide).")
    return "\n".join(parts)


def headline(root: Path, docs: Path) -> str:
    """The headline robustness plot with its table: ``docs/results/headline.{svg,png}`` if
    present, else the accuracy under additive Gaussian noise (the paper's headline) of
    the first run (the paper's dataset first), with a table from that run's records."""
    results = docs / "results"
    plots = sorted(p for p in results.glob("*") if p.suffix in (".svg", ".png")) if results.is_dir() else []
    alt = "Accuracy under increasing noise, LocalNorm against BatchNorm"
    explicit = [p for p in plots if "headline" in p.stem]
    if explicit:
        return _image(explicit[0], docs).replace(_title(explicit[0]), alt, 1)
    for dataset, path, data in _runs(results):
        plot = [p for p in plots if p.stem in (f"acc_{dataset}_agn", f"acc_{dataset}-agn")]
        if plot:
            rel = plot[0].relative_to(docs).as_posix()
            return f"![{alt}]({rel})\n\n" + headline_table(path, data)
    accuracy = [p for p in plots if p.stem.startswith("acc")] or plots
    if not accuracy:
        return _missing("The robustness plots", "Run `localnorm robustness` (see Results).")
    return _image(accuracy[0], docs)


def headline_table(path: Path, data: Mapping, noise: str = "agn") -> str:
    """Accuracy (%) of every method clean, at sigma = 1 and at the largest level of
    ``noise``, from one run's records."""
    recs = data["records"]
    levels = sorted({float(r["level"]) for r in recs if r.get("noise") == noise})
    if not levels:
        return ""
    shown = [lv for lv in dict.fromkeys([1.0, levels[-1]]) if lv in levels]
    rows: dict[str, dict] = {}
    for r in recs:
        key = f"{r['method']} ({r['protocol']})"
        if r.get("noise") == "none":
            rows.setdefault(key, {})["clean"] = f"{100 * r['accuracy']:.1f}"
        elif r.get("noise") == noise and float(r["level"]) in shown:
            rows.setdefault(key, {})[f"{noise} sigma={float(r['level']):g}"] = (
                f"{100 * r['accuracy']:.1f}")
    note = data.get("data", "")
    columns = ["method (protocol)", "clean", *(f"{noise} sigma={lv:g}" for lv in shown)]
    body = [{"method (protocol)": key, **vals} for key, vals in rows.items()]
    return (f"Test accuracy (%), from `docs/results/{path.name}`{': ' + note if note else ''}"
            "\n\n" + table(body, columns))


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
