"""The executable examples of the docs: ```python blocks of docs/**/*.md.

Rules (docs/index.md, "Build this site", and the project's shared decisions):

- every ```python block of a page is executed, in page order, in one fresh interpreter per
  page (so a page's blocks share variables, and pages do not share anything);
- a block whose first line is ``# not-run: <reason>`` is shown but not executed
  (``bash``/``text`` blocks are never executed);
- a page whose blocks import a framework that is not installed here is skipped, naming it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NOT_RUN = "# not-run:"

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<rest>.*)$")

#: Import roots that stand for a framework (an adapter import needs its framework).
FRAMEWORK_OF = {
    "localnorm.torch": ("torch",),
    "localnorm.keras": ("keras",),
    "localnorm.flax": ("flax", "jax"),
}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first code line (1-based) and source."""

    lang: str
    lineno: int
    code: str

    @property
    def executed(self) -> bool:
        return self.lang in ("python", "py") and not self.code.lstrip().startswith(NOT_RUN)


def blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown text, dedented to its fence's indentation."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        close = re.compile(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[i + 1 : j]]
        out.append(Block(lang, i + 2, textwrap.dedent("\n".join(body)) + "\n"))
        i = j + 1
    return out


def pages() -> list[Path]:
    """The Markdown pages of the site (hooks and other non-page files excluded)."""
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def executed_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page.read_text(encoding="utf-8")) if b.executed]


def imported_modules(code: str) -> set[str]:
    """Dotted names imported by a block (empty if the block is not valid Python: running
    it will report the syntax error with its line)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def required_frameworks(page_blocks: list[Block]) -> set[str]:
    """Top-level modules a page needs (frameworks of adapters included), except the
    standard library and localnorm itself."""
    needed: set[str] = set()
    for block in page_blocks:
        for name in imported_modules(block.code):
            for prefix, frameworks in FRAMEWORK_OF.items():
                if name == prefix or name.startswith(prefix + "."):
                    needed.update(frameworks)
            root = name.split(".")[0]
            if root != "localnorm" and root not in sys.stdlib_module_names:
                needed.add(root)
    return needed


def missing_modules(names: set[str]) -> list[str]:
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


#: The program run in a fresh interpreter for one page: reads the page path and its blocks
#: as JSON on stdin, executes them in order in one namespace, with tracebacks that point at
#: the Markdown file and line.
RUNNER = r"""
import json, sys, traceback
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for lineno, code in blocks:
    print(f"--- {page}:{lineno}", flush=True)
    try:
        exec(compile("\n" * (lineno - 1) + code, page, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the python block at {page}:{lineno}", file=sys.stderr, flush=True)
        sys.exit(1)
"""
