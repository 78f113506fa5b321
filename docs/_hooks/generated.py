"""mkdocs hook: fill generated sections of pages from their sources at build time.

A page asks for generated content with a marker line ``<!-- generated: NAME -->``; the
marker is replaced by the Markdown that ``GENERATORS[NAME]`` returns. Numbers on the site
are therefore never copied by hand:

- ``support-matrix``: the conformance support matrix, from
  ``localnorm.conformance.matrix.support_matrix()`` (what each subject runs, skips and why);
- ``headline``: the headline robustness plot of the home page, from the default run's
  folder ``docs/results/digits/`` (see :data:`HEADLINE_RUN`);
- ``robustness``: the index of the main job's runs (one folder each under
  ``docs/results/``, written verbatim by ``localnorm robustness --out
  docs/results/<name>``): settings, wall time, the expectations checked, a link to the
  run on its dataset's page;
- ``code-size``: the adapters' lines of code (``docs/_hooks/code_size.py``), so the
  "Adding a backend" page follows every change of an adapter without a hand edit;
- ``benchmarks``: the benchmark tables, rendered from ``docs/results/bench.json`` by the
  benchmarks' own page builder (``localnorm.benchmarks._report.markdown``), else
  ``docs/results/bench.md``.

The Results section is split into pages generated from the committed runs, so that a new
run or dataset appears without a hand edit: ``results/robustness-<dataset>.md``, one per
dataset of the runs (each run plots first, then its tables collapsed), and
``results/benchmarks.md``; ``on_config`` puts them in the nav under Results, after
``results.md`` (the overview), and ``on_files`` adds them to the build. Machine paths in
the runs' texts and commands (the data folder, a scratch output folder) and "do not edit
by hand" notes are not shown to readers (:func:`scrub`).

An unknown marker, or a support matrix that cannot be computed, fails the build.
Results that have not been produced yet are reported on the page, not invented.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import re
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
    try:
        matrix = importlib.import_module("localnorm.conformance.matrix")
        data = matrix.support_matrix()
    except Exception as exc:  # noqa: BLE001 - any failure must fail the build
        raise PluginError(
            "The conformance support matrix could not be generated "
            f"(localnorm.conformance.matrix.support_matrix()): {type(exc).__name__}: {exc}"
        ) from exc
    return _matrix_for_readers(render(data))


def _matrix_for_readers(text: str) -> str:
    """The support matrix as the site shows it: the gradients column second (the last
    column of a wide table is the one a narrow screen cuts off), and subjects that cannot
    load said in terms of what they need, not of the machine that built the page."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if len(cells) > 2 and (cells[-1].strip() in ("gradients", "yes", "no")
                                   or set(cells[-1].strip()) <= {"-"}):
                cells = [cells[0], cells[-1], *cells[1:-1]]
                lines[i] = "|" + "|".join(cells) + "|"
    text = "\n".join(lines) + "\n"

    def needs(match: re.Match) -> str:
        reason = re.sub(r"^[\w-]+: ", "", match.group(2))
        need = re.sub(r"^no ", "a ", reason)
        return (f"- `{match.group(1)}` is not in the table: it needs {need}; the suite runs it "
                "wherever that is present and skips it elsewhere, with that reason.")

    return re.sub(r"^- `([^`]+)`: not available here \((.*)\)$", needs, text, flags=re.M)


def _title(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


#: Run folders (``docs/results/<name>/``) shown first on the Results page, in this order;
#: the others follow by name: the paper's dataset (our defaults, then the paper's batch and
#: K), the default run, then the default run on the other backends.
RUN_ORDER = ("mnist", "mnist-paper", "cifar10-full", "cifar10-full-seed1", "cifar10-full-seed2",
             "cifar10-vgg", "cifar10-vgg-seed1", "cifar10-vgg-seed2", "cifar10-resnet", "digits",
             "digits-keras", "digits-flax")

#: Study folders of docs/results/ (``localnorm ablate-groups`` and ``localnorm
#: summarize-seeds`` outputs): the Markdown and plots each holds, shown after the runs.
STUDY_FILES = ("seeds.md", "ablation.md", "ablation.png")

#: The run whose AGN plot heads the home page: the default run (the README's first command).
HEADLINE_RUN = "digits"


def _runs(results: Path) -> list[tuple[str, Path, dict]]:
    """``(name, folder, results.json document)`` of every run folder of docs/results/:
    a sub-folder holding the ``results.json`` that ``localnorm robustness --out`` writes
    (with records), in :data:`RUN_ORDER`, then by name."""
    runs = []
    folders = sorted(p for p in results.iterdir() if p.is_dir()) if results.is_dir() else []
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, Mapping) and data.get("records"):
            runs.append((folder.name, folder, data))
    rank = {name: i for i, name in enumerate(RUN_ORDER)}
    return sorted(runs, key=lambda run: (rank.get(run[0], len(rank)), run[0]))


def _image(path: Path, docs: Path, indent: str = "") -> str:
    return f"{indent}![{_title(path)}]({path.relative_to(docs).as_posix()})\n"


def _config(data: Mapping) -> Mapping:
    return data.get("config") if isinstance(data.get("config"), Mapping) else {}


def _claims(data: Mapping) -> list[dict]:
    """The issue's expectations checked on a run (the CLI's own rule, so the page and the
    run's results.md agree)."""
    from localnorm.experiments.report import claims

    return claims(list(data["records"]))


def _minutes(config: Mapping) -> str:
    wall = config.get("wall_seconds")
    return "" if wall is None else f"{wall / 60:.1f} min"


def run_index(runs: Sequence[tuple[str, Path, dict]], docs: Path) -> str:
    """One row per run (folder, dataset, backend, settings, wall time, and the two
    expectations of the issue: clean accuracy within 1 point, >= 1.5x under AGN sigma=1),
    then the exact command of every run."""
    rows, commands = [], []
    verdict = {True: "met", False: "**not met**"}
    for name, folder, data in runs:
        cfg = _config(data)
        checked = {c["claim"].split(":")[0]: c for c in _claims(data) if c["met"] is not None}
        row = {
            "run": f"[{run_title(name, data)}](results/{dataset_page(data)}#{anchor(name)})",
            "dataset": cfg.get("dataset"),
            "backend": cfg.get("framework") or cfg.get("backend"),
            "settings": f"{cfg.get('model')}, {cfg.get('epochs')} epochs, batch "
                        f"{cfg.get('batch_size')}, K={cfg.get('groups')}",
            "wall time": _minutes(cfg),
        }
        for key, title in (("clean", "clean: LocalNorm (BATCH) vs BatchNorm"),
                           ("AGN sigma=1", "AGN sigma=1: LocalNorm (BATCH) / BatchNorm")):
            c = checked.get(key)
            row[title] = "" if c is None else f"{c['measured']}: {verdict[c['met']]}"
        rows.append(row)
        if cfg.get("command"):
            commands.append(scrub(cfg["command"], cfg))
    text = table(rows)
    if commands:
        text += ("\nThe exact commands (from each run's `config.command`; run from the "
                 "repository root):\n\n```bash\n" + "\n".join(commands) + "\n```\n")
    return text


def robustness(root: Path, docs: Path) -> str:
    """The index of the robustness job's runs in docs/results/ (settings, wall time, the
    expectations checked, the commands), each linked to its dataset's page."""
    results = docs / "results"
    if not results.is_dir():
        return _missing("The robustness results", "Run `localnorm robustness` (see the guide).")
    runs = _runs(results)
    parts = []
    if runs:
        pages = dict.fromkeys(dataset_page(data) for _, _, data in runs)
        links = ", ".join(f"[{dataset_name(p)}](results/{p})" for p in pages)
        parts.append(f"One page per dataset: {links}.\n\n" + run_index(runs, docs))
    # Studies over several runs (seeds, the groups ablation), each in its own folder.
    studies = [f for d in (sorted(p for p in results.iterdir() if p.is_dir()))
               for f in (d / name for name in STUDY_FILES) if f.is_file()]
    for path in studies:
        parts.append(scrub(_include(path, docs)) if path.suffix == ".md"
                     else _image(path, docs))
    # Loose files of docs/results/ (not a run folder, not the benchmarks'): shown here.
    files = [p for p in sorted(results.iterdir())
             if p.is_file() and p.name not in BENCH_FILES and not p.name.startswith(("_", "."))]
    for path in files:
        rel = path.relative_to(docs).as_posix()
        rows = None
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        elif path.suffix == ".json":
            rows = records(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".md":
            parts.append(scrub(_include(path, docs)))
        elif path.suffix in (".png", ".svg") and "headline" not in path.stem:
            parts.append(_image(path, docs))
        if rows is not None:
            parts.append(f"### {_title(path)}\n\n{table(rows)}\n*Source: `docs/{rel}`*\n")
    if not parts:
        return _missing("The robustness results", "Run `localnorm robustness` (see the guide).")
    return "\n".join(parts)


_ABSOLUTE = re.compile(r"(?<![\w.:/-])/(?:tmp|work|home|root|mnt|data|Users|var|srv|opt)/[^\s`'\")\],;]*")


def scrub(text: str, config: Mapping | None = None) -> str:
    """A run's text without the machine's paths: ``--data-dir <path>`` and ``--out-dir
    <path>`` become ``DATA_DIR`` and ``OUT_DIR``, the data folder of the config and any
    other absolute path become "the data folder"; lines saying "do not edit by hand" (a
    note for maintainers) are dropped."""
    # a path ends where a code span, quote, parenthesis or list does (as _ABSOLUTE's)
    text = re.sub(r"(--data-dir[ =])[^\s`'\")\],;]+", r"\1DATA_DIR", text)
    text = re.sub(r"(--out-dir[ =])/[^\s`'\")\],;]+", r"\1OUT_DIR", text)
    data_dir = (config or {}).get("data_dir")
    if isinstance(data_dir, str) and data_dir.startswith("/"):
        text = text.replace(data_dir, "the data folder (`--data-dir`)")
    text = _ABSOLUTE.sub("the data folder", text)
    return "\n".join(line for line in text.splitlines()
                     if "do not edit by hand" not in line.lower()) + "\n"


def dataset_page(data: Mapping) -> str:
    """The page of a run's dataset: ``robustness-<dataset>.md``."""
    dataset = str(_config(data).get("dataset") or "other")
    return f"robustness-{re.sub(r'[^a-z0-9-]+', '-', dataset.lower())}.md"


#: How dataset names read in the nav and headings (others: the name capitalized).
DATASET_NAMES = {"digits": "Digits (8x8)", "mnist": "MNIST", "cifar10": "CIFAR-10",
                 "cifar-10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST"}


def dataset_name(page: str) -> str:
    key = page.removeprefix("robustness-").removesuffix(".md")
    return DATASET_NAMES.get(key, DATASET_NAMES.get(key.replace("-", ""), key.capitalize()))


def anchor(name: str) -> str:
    return "run-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_title(name: str, data: Mapping) -> str:
    """A distinct title per run: dataset, backend, settings, and its folder."""
    cfg = _config(data)
    backend = str(cfg.get("backend") or cfg.get("framework") or "").split(" ")[0]
    return (f"{dataset_name(dataset_page(data))}, {backend}, batch {cfg.get('batch_size')}, "
            f"K={cfg.get('groups')} ({name})")


def _tables(md: Path, docs: Path, config: Mapping) -> str:
    """A run's results.md as the body of a collapsed block: its title dropped (the page
    gives one), its headings as bold lines (so the page's table of contents lists runs,
    not tables), links rebased, machine paths scrubbed, indented into the block."""
    text = scrub(_include(md, docs), config)
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.*)$", line)):
            line = f"**{m.group(1).strip()}**"
        lines.append(line)
    while lines and (not lines[0].strip() or lines[0].startswith("**LocalNorm robustness")):
        lines.pop(0)
    return "\n".join(("    " + line) if line.strip() else "" for line in lines) + "\n"


def dataset_pages(docs: Path) -> dict[str, str]:
    """``{page: markdown}``: one robustness page per dataset of the committed runs. Per
    run: a heading with its distinct title, its settings and command, its accuracy plots
    (additive Gaussian noise first), then its tables and confusion matrices collapsed."""
    results = docs / "results"
    runs = _runs(results) if results.is_dir() else []
    pages: dict[str, list[str]] = {}
    for name, folder, data in runs:
        page = dataset_page(data)
        cfg = _config(data)
        parts = pages.setdefault(page, [
            f"# Robustness: {dataset_name(page)}\n",
            f"Generated at build time from the committed runs on {dataset_name(page)} "
            "(one folder each under `docs/results/`, written by `localnorm robustness`); "
            "what the experiment does and how to read it is on the "
            "[Results overview](../results.md) and in the "
            "[robustness guide](../guides/robustness.md).\n"])
        parts.append(f'## {run_title(name, data)} {{ #{anchor(name)} }}\n')
        if data.get("data"):
            parts.append(scrub(str(data["data"]), cfg))
        parts.append(f"{cfg.get('model')} network, {cfg.get('epochs')} epochs, batch "
                     f"{cfg.get('batch_size')}, K={cfg.get('groups')} groups along the batch "
                     f"axis, seed {cfg.get('seed')}, {cfg.get('framework') or cfg.get('backend')}"
                     f" on {cfg.get('device')}"
                     + (f", {_minutes(cfg)} wall time" if cfg.get("wall_seconds") else "")
                     + ".\n")
        if cfg.get("command"):
            parts.append(f"```bash\n{scrub(cfg['command'], cfg).strip()}\n```\n")
        accuracy = sorted(folder.glob("acc_*.png")) + sorted(folder.glob("acc_*.svg"))
        accuracy.sort(key=lambda p: (p.stem != "acc_agn", p.stem))
        for plot in accuracy:
            noise = plot.stem.removeprefix("acc_")
            parts.append(f"![Accuracy under {noise}, {run_title(name, data)}]"
                         f"({plot.relative_to(results).as_posix()})\n")
        for plot in (folder / "uncertainty_agn.png", folder / "risk_coverage.png"):
            if plot.is_file():
                parts.append(f"![{_title(plot)}, {run_title(name, data)}]"
                             f"({plot.relative_to(results).as_posix()})\n")
        md = folder / "results.md"
        if md.is_file():
            parts.append(f'??? abstract "Tables: {run_title(name, data)}"\n\n'
                         + _tables(md, docs, cfg).replace("](results/", "]("))
        confusion = sorted(folder.glob("confusion_*.png"))
        if confusion:
            parts.append(f'??? note "Confusion matrices: {run_title(name, data)} '
                         f'({len(confusion)})"\n')
            parts += [f"    ![{_title(p)}]({p.relative_to(results).as_posix()})\n"
                      for p in confusion]
        parts.append(f"*Data: [`results.json`]({folder.name}/results.json)*\n")
    return {page: "\n".join(parts) for page, parts in pages.items()}


def benchmarks_page(root: Path, docs: Path) -> str:
    return ("# Benchmarks\n\nThe cost of LocalNorm against each framework's native "
            "BatchNorm, measured by the benchmarks in `benchmarks/` (ratios from "
            "interleaved repetitions in one run, on the machine named below), generated at "
            "build time from `docs/results/bench.json`.\n\n"
            + benchmarks(root, docs, levels=0))


def headline(root: Path, docs: Path) -> str:
    """The headline robustness plot with its table: ``docs/results/headline.{svg,png}`` if
    present, else the accuracy under additive Gaussian noise (the paper's headline) of the
    :data:`HEADLINE_RUN` folder (else the first run), named with its command, and a table
    from that run's records."""
    results = docs / "results"
    alt = "Accuracy under increasing noise, LocalNorm against BatchNorm"
    explicit = sorted(p for p in results.glob("headline.*") if p.suffix in (".svg", ".png")) \
        if results.is_dir() else []
    if explicit:
        return _image(explicit[0], docs).replace(_title(explicit[0]), alt, 1)
    runs = _runs(results)
    runs = [r for r in runs if r[0] == HEADLINE_RUN] + [r for r in runs if r[0] != HEADLINE_RUN]
    for name, folder, data in runs:
        plot = folder / "acc_agn.png"
        if not plot.is_file():
            continue
        cfg = _config(data)
        what = "the default run" if name == HEADLINE_RUN else "the run"
        command = f", `{scrub(cfg['command'], cfg).strip()}`" if cfg.get("command") else ""
        backend = cfg.get("framework") or cfg.get("backend")
        wall = f", {_minutes(cfg)} wall time" if cfg.get("wall_seconds") is not None else ""
        caption = (f"From {what}, [{run_title(name, data)}](results/{dataset_page(data)}"
                   f"#{anchor(name)}){command} ({backend} on "
                   f"{cfg.get('device')}{wall}).")
        return (f"![{alt}]({plot.relative_to(docs).as_posix()})\n\n{caption}\n\n"
                + headline_table(folder / "results.json", data, docs=docs))
    return _missing("The robustness plots", "Run `localnorm robustness` (see Results).")


def headline_table(path: Path, data: Mapping, noise: str = "agn", docs: Path | None = None) -> str:
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
    note = scrub(data.get("data", ""), _config(data)).strip()
    where = path.relative_to(docs).as_posix() if docs is not None else path.name
    columns = ["method (protocol)", "clean", *(f"{noise} sigma={lv:g}" for lv in shown)]
    body = [{"method (protocol)": key, **vals} for key, vals in rows.items()]
    return (f"Test accuracy (%), from `docs/{where}`{': ' + note if note else ''}"
            "\n\n" + table(body, columns))


def benchmarks(root: Path, docs: Path, levels: int = 2) -> str:
    results = docs / "results"
    parts = []
    md, js = results / "bench.md", results / "bench.json"
    if js.is_file():
        # Rendered from the data with the benchmarks' own page builder, so the page can
        # never disagree with bench.json (bench.md is that same page, written by the run).
        try:
            builder = importlib.import_module("localnorm.benchmarks._report").markdown
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"Cannot render docs/results/bench.json: {exc}") from exc
        text = builder(json.loads(js.read_text(encoding="utf-8")))
        text = re.sub(r"\A# [^\n]*\n", "", text) if levels == 0 else text  # the page has one
        parts.append(scrub(_demote(text, levels)))
    elif md.is_file():
        parts.append(scrub(_include(md, docs)))
    if not parts:
        return _missing("The benchmark tables", "Run the benchmarks: `localnorm bench --out-dir "
                        "docs/results` (see benchmarks/README.md).")
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


def code_size(root: Path, docs: Path) -> str:
    spec = importlib.util.spec_from_file_location("code_size", docs / "_hooks" / "code_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table()


GENERATORS: dict[str, Callable[[Path, Path], str]] = {
    "support-matrix": support_matrix,
    "code-size": code_size,
    "headline": headline,
    "robustness": robustness,
    "benchmarks": benchmarks,
}


def _results_nav(pages: Sequence[str]) -> list:
    return ([{"Overview": "results.md"}]
            + [{f"Robustness: {dataset_name(p)}": f"results/{p}"} for p in pages]
            + [{"Benchmarks": "results/benchmarks.md"}])


def on_config(config):
    """Results in the nav: the overview, a robustness page per dataset, the benchmarks."""
    docs = Path(config.docs_dir)
    pages = list(dataset_pages(docs))
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, Mapping) and "Results" in entry:
            config.nav[i] = {"Results": _results_nav(pages)}
    return config


def on_files(files, config):
    """The generated Results pages, as files of the build."""
    from mkdocs.structure.files import File

    root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir)
    generated = {**dataset_pages(docs), "benchmarks.md": benchmarks_page(root, docs)}
    for page, text in generated.items():
        files.append(File.generated(config, f"results/{page}", content=text))
    return files


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
