"""The site builds with ``mkdocs build --strict``, and its build hooks do their job."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "docs" / "_hooks"

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings_handlers.python")


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once for this module with --strict (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if re.match(r"(ERROR|WARNING|Aborted|\s{2}\S)", line))
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log or proc.stderr[-6000:]}"
    return out


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_strict_build_renders_every_page(site):
    for page in ("index.html", "concepts/index.html", "spec/index.html",
                 "conformance/index.html", "results/index.html", "api/localnorm/index.html",
                 "api/torch/index.html", "api/keras/index.html", "api/flax/index.html"):
        assert (site / page).is_file(), page


def test_generated_sections_are_filled(site):
    for page in ("index.html", "conformance/index.html", "results/index.html"):
        assert "<!-- generated:" not in _text(site / page), page


def test_api_reference_renders_docstrings_and_links(site):
    api = _text(site / "api" / "localnorm" / "index.html")
    assert 'id="localnorm.local_norm"' in api and "biased" in api
    assert 'id="localnorm.DEFAULT_EPS"' in api  # a `#:` doc-comment became its docstring
    torch_page = _text(site / "api" / "torch" / "index.html")
    assert 'id="localnorm.torch.LocalNorm2d"' in torch_page  # a runtime (__doc__ =) docstring
    assert ":func:`" not in torch_page and ":class:`" not in torch_page  # Sphinx roles linked
    assert ":math:" not in api and ".. math::" not in api and 'class="arithmatex"' in api


def test_the_spec_page_holds_the_formula_and_the_framework_table(site):
    spec = _text(site / "spec" / "index.html")
    assert "arithmatex" in spec
    for name in ("num_groups=4", "epsilon=1e-05", "momentum=0.1", "track_running_stats"):
        assert name in spec


def _row(page: str, name: str) -> str:
    """The parameters-table row of ``name`` (the first one on the page)."""
    match = re.search(rf"<tr[^>]*>\s*<td>\s*<code>{name}</code>.*?</tr>", page, flags=re.S)
    assert match, f"no table row for {name}"
    return match.group(0)


def test_api_reference_shows_true_defaults_and_public_names_only(site):
    keras_page = _text(site / "api" / "keras" / "index.html")
    assert "ones" in _row(keras_page, "gamma_initializer")
    assert "zeros" not in _row(keras_page, "gamma_initializer")
    for name in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"):
        assert "None" in _row(keras_page, name) and "zeros" not in _row(keras_page, name)
    flax_page = _text(site / "api" / "flax" / "index.html")
    assert "ones_init" in _row(flax_page, "scale_init")
    protocols = _text(site / "api" / "protocols" / "index.html")
    assert "required" in _row(protocols, "protocol")
    for page in ("torch", "keras", "flax"):
        html = _text(site / "api" / page / "index.html")
        set_eval_mode = html[html.index(f'id="localnorm.{page}.set_eval_mode"'):]
        assert "required" in _row(set_eval_mode, "mode"), page
        assert "_spec." not in html and "_LocalNorm" not in html, page  # public names only
        assert "&lt;autoref" not in html and "<autoref" not in html, page
        assert "docs/spec.md</code></a>" in html or page == "keras", page  # linked, not plain
        assert "Shape" in html and "github.com/localnorm/localnorm/blob/main/backends" in html
    torch_page = _text(site / "api" / "torch" / "index.html")
    # Methods are listed once, under LocalNorm2d, not repeated under every class.
    assert torch_page.count('id="localnorm.torch.LocalNorm2d.set_mode"') == 1
    assert 'id="localnorm.torch.LocalNorm1d.set_mode"' not in torch_page


def test_math_needs_no_network(site):
    for page in site.rglob("*.html"):
        html = _text(page)
        assert not re.search(r"<script[^>]+src=\"https?://", html), page  # no CDN script
        assert "mathjax" not in html.lower(), page
    assert (site / "javascripts" / "katex" / "katex.min.js").is_file()
    assert list((site / "javascripts" / "katex" / "fonts").glob("*.woff2"))


def test_math_renders_offline_in_a_browser(site):
    """Headless Chromium, every host name unresolvable: KaTeX typesets the spec page."""
    spec = importlib.util.spec_from_file_location("take", ROOT / "docs" / "screenshots" / "take.py")
    take = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(take)
    browser = take.chromium()
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    server, base = take.serve(site)
    try:
        dom = take.dump_dom(browser, base + "spec/", site.parent / "chromium-profile")
    finally:
        server.shutdown()
    assert dom.count('class="katex"') > 10  # inline and display math typeset
    assert "katex-error" not in dom


def test_results_are_split_and_show_no_machine_paths(site):
    results = site / "results"
    for page in ("robustness-mnist", "robustness-digits", "benchmarks"):
        assert (results / page / "index.html").is_file(), page
    mnist = _text(results / "robustness-mnist" / "index.html")
    assert mnist.index("acc_agn.png") < mnist.index("Tables:")  # plots first
    for page in [site / "index.html", *results.rglob("*.html")]:
        html = _text(page)
        assert "/work/" not in html and "/tmp/" not in html, page
        assert "do not edit by hand" not in html, page


def test_each_guide_is_offered_as_one_script(site):
    import ast

    for guide in ("torch", "keras", "flax"):
        script = site / "guides" / f"{guide}.py"
        ast.parse(_text(script))  # valid Python
        assert f'href="../{guide}.py"' in _text(site / "guides" / guide / "index.html")


# -- the hooks, without a build ------------------------------------------------------------


def test_package_tree_follows_pyproject_package_dir(tmp_path):
    packages = _hook("packages")
    layout = packages.package_layout(ROOT)
    assert layout["localnorm.torch"] == ROOT / "backends" / "torch"
    packages.build_tree(ROOT, tmp_path)
    assert (tmp_path / "localnorm" / "_core.py").resolve() == ROOT / "localnorm" / "_core.py"
    assert (tmp_path / "localnorm" / "torch" / "__init__.py").resolve() == (
        ROOT / "backends" / "torch" / "__init__.py")
    # the rooms above the adapters, a nested mapped package included
    assert (tmp_path / "localnorm" / "experiments" / "_cli.py").resolve() == (
        ROOT / "experiments" / "_cli.py")
    harness = Path("conformance", "harnesses", "torch_layers.py")
    assert (tmp_path / "localnorm" / harness).resolve() == ROOT / harness


def test_api_coverage_names_what_is_missing():
    coverage = _hook("api_coverage")
    ids = {"localnorm.noise", "localnorm.noise.agn", "localnorm.noise.apn", "localnorm.noise.mbn",
           "localnorm.noise.uniform"}
    missing = coverage.missing_names(ids, modules=("localnorm.noise",))
    assert missing == ["localnorm.noise.NOISES"]
    missing = coverage.missing_names(set(), modules=("localnorm.protocols", "no_such_module_xyz"))
    assert "localnorm.protocols (the module itself: add `::: localnorm.protocols` to a page in docs/api/)" in missing
    assert "localnorm.protocols.run_protocol" in missing
    assert any(m.startswith("no_such_module_xyz (cannot be imported") for m in missing)


def test_api_coverage_fails_the_build(tmp_path):
    """The hook itself raises (mkdocs aborts the build), naming the missing names."""
    import types

    from mkdocs.exceptions import PluginError

    coverage = _hook("api_coverage")
    page = tmp_path / "api" / "noise" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text('<h2 id="localnorm.noise">noise</h2><div id="localnorm.noise.agn"></div>')
    with pytest.raises(PluginError, match="localnorm.noise.apn"):
        coverage.on_post_build(types.SimpleNamespace(site_dir=str(tmp_path)))


def test_api_coverage_refuses_a_module_without_all(tmp_path, monkeypatch):
    import sys
    import types

    coverage = _hook("api_coverage")
    monkeypatch.setitem(sys.modules, "fake_public_xyz", types.ModuleType("fake_public_xyz"))
    missing = coverage.missing_names({"fake_public_xyz"}, modules=("fake_public_xyz",))
    assert missing == ["fake_public_xyz (no __all__: list its public names)"]


def test_api_coverage_accepts_the_defining_path_of_a_reexport():
    coverage = _hook("api_coverage")
    ids = {"localnorm.protocols", "localnorm.protocols.Prediction", "localnorm.protocols.run_protocol",
           "localnorm.protocols.chunks", "localnorm.protocols.draw_groups"}
    assert coverage.missing_names(ids, modules=("localnorm.protocols",)) == []
    import localnorm
    assert coverage.canonical_path(localnorm.Prediction) == "localnorm.protocols.Prediction"


def test_generated_markers_are_replaced_and_unknown_ones_fail(tmp_path):
    from mkdocs.exceptions import PluginError

    generated = _hook("generated")
    page = type("Page", (), {"file": type("F", (), {"src_path": "x.md"})()})()
    config = type("C", (), {"config_file_path": str(ROOT / "mkdocs.yml"),
                            "docs_dir": str(tmp_path)})()
    generated.GENERATORS["test-marker"] = lambda root, docs: "| a |\n|---|\n| 1 |\n"
    try:
        out = generated.on_page_markdown("before\n<!-- generated: test-marker -->\nafter\n",
                                         page, config, None)
    finally:
        del generated.GENERATORS["test-marker"]
    assert out == "before\n| a |\n|---|\n| 1 |\n\nafter\n"
    with pytest.raises(PluginError, match="no-such-section"):
        generated.on_page_markdown("<!-- generated: no-such-section -->\n", page, config, None)


def test_generated_tables_and_missing_results(tmp_path):
    generated = _hook("generated")
    assert generated.table([{"a": 1, "b": 0.123456}, {"a": 2}]) == (
        "| a | b |\n|---|---|\n| 1 | 0.1235 |\n| 2 |  |\n")
    assert generated.records({"x": {"acc": 0.5}}) == [{"": "x", "acc": 0.5}]
    # Nothing produced yet: the page says so instead of inventing numbers.
    assert "Not produced yet" in generated.robustness(ROOT, tmp_path)
    assert "Not produced yet" in generated.benchmarks(ROOT, tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "acc.csv").write_text("noise,sigma,accuracy\nagn,0.5,0.9\n")
    (tmp_path / "results" / "headline.svg").write_text("<svg/>")
    out = generated.robustness(ROOT, tmp_path)
    assert "| noise | sigma | accuracy |" in out and "| agn | 0.5 | 0.9 |" in out
    assert "(results/headline.svg)" in generated.headline(ROOT, tmp_path)


def test_included_markdown_headings_are_demoted_outside_code():
    generated = _hook("generated")
    text = "# Bench\n\n```python\n# a comment\n```\n## Table\n"
    assert generated._demote(text) == "### Bench\n\n```python\n# a comment\n```\n#### Table\n"


def test_figure_script_draws_every_figure_of_the_concepts_page(tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "make_figures", ROOT / "docs" / "figures" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    concepts = _text(ROOT / "docs" / "concepts.md")
    for path in written:
        assert path.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert f"figures/{path.name}" in concepts
        assert (ROOT / "docs" / "figures" / path.name).is_file()  # committed with the script


def test_included_results_markdown_has_its_links_rebased(tmp_path):
    generated = _hook("generated")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.md").write_text(
        "# Bench\n\n![plot](bench.svg) [raw](bench.json) [site](https://x.org/a) [top](#bench)\n")
    out = generated.benchmarks(ROOT, tmp_path)
    assert "![plot](results/bench.svg)" in out and "[raw](results/bench.json)" in out
    assert "(https://x.org/a)" in out and "(#bench)" in out and out.startswith("### Bench")


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    import yaml

    # mkdocs.yml may hold python tags in other projects; ours is plain YAML.
    config = yaml.safe_load(_text(ROOT / "mkdocs.yml"))
    nav = _nav_files(config["nav"])
    docs = ROOT / "docs"
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")
             if "_hooks" not in p.parts and p.relative_to(docs).parts[0] != "results"}
    assert sorted(pages - set(nav)) == [], "pages missing from the nav of mkdocs.yml"
    assert sorted(set(nav) - pages) == [], "nav entries without a page"


def _write_run(results, name, recs, config=None):
    import json

    folder = results / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"config": config or {}, "data": "toy",
                                                     "records": recs}))
    return folder


_RECS = [{"method": "batchnorm", "protocol": "running", "noise": "none", "level": 0, "accuracy": 0.9},
         {"method": "batchnorm", "protocol": "running", "noise": "agn", "level": 1.0, "accuracy": 0.5},
         {"method": "batchnorm", "protocol": "running", "noise": "agn", "level": 4.0, "accuracy": 0.125},
         {"method": "batchnorm", "protocol": "running", "noise": "agn", "level": 2.0, "accuracy": 0.3},
         {"method": "localnorm", "protocol": "batch", "noise": "none", "level": 0, "accuracy": 0.895},
         {"method": "localnorm", "protocol": "batch", "noise": "agn", "level": 1.0, "accuracy": 0.6}]


def test_headline_comes_from_the_default_run_folder(tmp_path):
    generated = _hook("generated")
    results = tmp_path / "results"
    cfg = {"command": "localnorm robustness --out docs/results/digits", "backend": "torch",
           "framework": "torch 2.13.0", "device": "cpu", "wall_seconds": 150.0}
    for name in ("digits", "mnist"):
        folder = _write_run(results, name, _RECS, cfg)
        (folder / "acc_agn.png").write_bytes(b"")
    out = generated.headline(ROOT, tmp_path)
    assert "(results/digits/acc_agn.png)" in out and "docs/results/digits/results.json" in out
    assert "the default run" in out and "`localnorm robustness --out docs/results/digits`" in out
    assert "2.5 min wall time" in out
    assert "| method (protocol) | clean | agn sigma=1 | agn sigma=4 |" in out
    assert "| batchnorm (running) | 90.0 | 50.0 | 12.5 |" in out


def test_robustness_runs_get_an_index_and_a_page_per_dataset(tmp_path):
    generated = _hook("generated")
    results = tmp_path / "results"
    cfg = {"command": "localnorm robustness --dataset mnist --data-dir /work/data/mnist "
                      "--out docs/results/mnist", "data_dir": "/work/data/mnist",
           "dataset": "mnist", "framework": "torch 2.13.0", "backend": "torch",
           "model": "mnistnet", "epochs": 8, "batch_size": 64, "groups": 4,
           "wall_seconds": 600.0}
    folder = _write_run(results, "mnist", _RECS, cfg)
    (folder / "results.md").write_text(
        "# LocalNorm robustness: mnist\n\nOnly t10k is in /work/data/mnist.\n\n"
        "## Clean\n\n![x](acc_agn.png)\n")
    for name in ("acc_mbn.png", "acc_agn.png", "confusion_agn_1.png"):
        (folder / name).write_bytes(b"")
    _write_run(results, "mnist-paper", _RECS, {**cfg, "batch_size": 100, "groups": 10})
    _write_run(results, "digits", _RECS, {**cfg, "dataset": "digits"})
    (results / "bench.json").write_text("{}")  # the benchmarks' file is not a run
    index = generated.robustness(ROOT, tmp_path)
    assert "[MNIST](results/robustness-mnist.md)" in index and "robustness-digits.md" in index
    assert "| mnistnet, 8 epochs, batch 64, K=4 | 10.0 min |" in index
    assert "89.50 vs 90.00 (-0.50 points): met" in index and "(1.20x): **not met**" in index
    assert "--data-dir DATA_DIR" in index and "/work/" not in index  # no machine paths
    pages = generated.dataset_pages(tmp_path)
    assert sorted(pages) == ["robustness-digits.md", "robustness-mnist.md"]
    page = pages["robustness-mnist.md"]
    titles = re.findall(r"^## (.*) \{ #", page, flags=re.M)
    assert len(titles) == 2 and len(set(titles)) == 2  # one distinct title per run
    # Plots first (AGN first), then the run's tables collapsed, their links rebased.
    assert page.index("(mnist/acc_agn.png)") < page.index("(mnist/acc_mbn.png)") \
        < page.index('??? abstract "Tables')
    assert "    ![x](mnist/acc_agn.png)" in page and "    **Clean**" in page
    assert "    ![Confusion agn 1](mnist/confusion_agn_1.png)" in page
    assert "/work/" not in page and "LocalNorm robustness: mnist" not in page


def test_scrub_drops_machine_paths_and_maintainer_notes():
    generated = _hook("generated")
    text = ("Generated by x; do not edit by hand.\n"
            "- command: `localnorm bench --out-dir /tmp/bench_out`, 17 minutes\n"
            "data in /srv/data/mnist (10000 images)\n")
    out = generated.scrub(text)
    assert "edit by hand" not in out and "/tmp/" not in out and "/srv/" not in out
    assert "--out-dir OUT_DIR" in out and "17 minutes" in out and "10000 images" in out
    # a path inside a code span in parentheses: the span and the parenthesis stay closed
    out = generated.scrub("(the run, `localnorm bench --out-dir /tmp/b`) and "
                          "(`localnorm robustness --data-dir /srv/d`).")
    assert out == ("(the run, `localnorm bench --out-dir OUT_DIR`) and "
                   "(`localnorm robustness --data-dir DATA_DIR`).\n")


def test_benchmarks_are_rendered_from_bench_json(tmp_path):
    import json

    generated = _hook("generated")
    report = pytest.importorskip("localnorm.benchmarks._report")
    (tmp_path / "results").mkdir()
    doc = {"schema": report.SCHEMA, "created": "2026-01-01", "quick": True, "settings": {},
           "machine": {}, "sections": []}
    (tmp_path / "results" / "bench.json").write_text(json.dumps(doc))
    (tmp_path / "results" / "bench.md").write_text("# stale page\n")
    out = generated.benchmarks(ROOT, tmp_path)
    assert "stale page" not in out and "### Benchmark results" in out and "2026-01-01" in out
