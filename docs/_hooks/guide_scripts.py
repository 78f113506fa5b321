"""mkdocs hook: each guide as one downloadable Python script.

The ```python blocks of a guide build on each other (a page's blocks run in order, in one
interpreter, as ``tests/docs`` runs them). So that a reader can run a guide without
copying block after block, this hook adds ``guides/<name>.py`` to the site for every page
listed in :data:`GUIDES`: the page's executed blocks in page order, each under a comment
naming its section and line. Which blocks run is decided by ``tests/docs/docs_blocks.py``
(the same rule the docs tests use: ``# not-run:`` blocks are left out), so the script is
exactly what the tests execute. Each guide links its script near its top.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

#: The guides offered as scripts (pages under docs/).
GUIDES = ("guides/torch.md", "guides/keras.md", "guides/flax.md")


def _blocks_module(root: Path):
    name = "localnorm_docs_blocks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, root / "tests" / "docs" / "docs_blocks.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def _heading(lines: list[str]) -> str:
    """The last Markdown heading among ``lines`` (outside fenced code)."""
    heading, fenced = "", False
    for line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip()
    return heading


def script(page: Path, root: Path) -> str:
    """The guide ``page`` as one Python script: its executed blocks, in order."""
    docs_blocks = _blocks_module(root)
    lines = page.read_text(encoding="utf-8").splitlines()
    rel = page.relative_to(root).as_posix()
    out = [f'"""The code of {rel}, as one script: every executed block of the page, in page',
           "order (each builds on the ones before). Generated when the site is built; the",
           'docs tests run the same blocks."""', ""]
    for block in docs_blocks.executed_blocks(page):
        heading = _heading(lines[: block.lineno - 1])
        out += [f"# --- {heading} ({rel}, line {block.lineno})", block.code.rstrip(), ""]
    return "\n".join(out) + "\n"


def on_files(files, config):
    root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir)
    for guide in GUIDES:
        page = docs / guide
        if page.is_file():
            files.append(File.generated(config, guide.removesuffix(".md") + ".py",
                                        content=script(page, root),
                                        inclusion=InclusionLevel.INCLUDED))
    return files
