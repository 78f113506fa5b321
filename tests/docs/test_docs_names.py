"""The names and paths the pages (and the README) give a user are real.

- Every ``localnorm`` name a page's Python examples import or reach through an alias
  (``import localnorm.torch as lt`` then ``lt.localnorm_layers``), and every inline code span
  that is a dotted ``localnorm.…`` name, is public: in its module's ``__all__``, or a
  submodule. (The torch guide called the earlier alias ``local_norm_layers``.)
- Every path into the repository a page names (``backends/torch/_triton.py``,
  ``tests/core/test_rooms.py``, ``bash benchmarks/cuda_session.sh``) exists. (The torch guide
  named ``localnorm/torch/_triton.py``, the installed path, which a checkout does not have.)

The changelog is left out: it names what changed, old names included.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from docs_blocks import DOCS, ROOT, blocks, missing_modules, pages, required_frameworks

PAGES = [p for p in pages() if p.name != "changelog.md"] + [ROOT / "README.md"]
IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]

#: The top-level folders of the repository: a path that starts with one of them names a file.
ROOMS = ("localnorm", "backends", "benchmarks", "conformance", "experiments", "tests", "docs",
         ".ci")
_PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(re.escape(r) for r in ROOMS)})/[\w./-]*[\w/])")
_DOTTED = re.compile(r"`(localnorm(?:\.\w+)+)`")


def _spec(name: str):
    """``importlib.util.find_spec``, None where a parent package cannot be imported."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _python_uses(codes: list[str]) -> set[tuple[str, str]]:
    """(module, name) pairs a page's blocks take from localnorm modules: imported names,
    and attributes read through an alias of a localnorm module (the blocks of a page run
    in one namespace, so an alias of one block serves the next)."""
    trees = []
    for code in codes:
        try:
            trees.append(ast.parse(code))
        except SyntaxError:
            pass  # the examples test reports it
    aliases, uses = {}, set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("localnorm.") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "localnorm":
            for a in node.names:
                uses.add((node.module, a.name))
                if _spec(f"{node.module}.{a.name}") is not None:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            uses.add((aliases[node.value.id], node.attr))
    return uses


def _inline_uses(text: str) -> set[tuple[str, str]]:
    """(module, name) of each inline code span that is a dotted localnorm name, split at
    its longest importable module prefix."""
    outside_code = "\n".join(b for i, b in enumerate(re.split(r"^```.*$", text, flags=re.M))
                             if i % 2 == 0)
    uses = set()
    for dotted in _DOTTED.findall(outside_code):
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if _spec(module) is not None:
                uses.add((module, parts[cut]))
                break
    return uses


def _is_public(module: str, name: str) -> bool:
    if _spec(f"{module}.{name}") is not None:
        return True  # a submodule (localnorm.flax.linen)
    mod = importlib.import_module(module)
    return name in getattr(mod, "__all__", ())


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_pages_use_public_names(page):
    text = page.read_text(encoding="utf-8")
    code = [b for b in blocks(text) if b.lang in ("python", "py")]
    uses = _python_uses([b.code for b in code]) | _inline_uses(text)
    # a name of a framework's adapter can be checked only where the framework is installed
    frameworks = {"localnorm.torch": {"torch"}, "localnorm.keras": {"keras"},
                  "localnorm.flax": {"flax", "jax"}}
    checked = []
    for module, name in sorted(uses):
        needs = next((f for prefix, f in frameworks.items()
                      if module == prefix or module.startswith(prefix + ".")), set())
        if any(part.startswith("_") for part in f"{module}.{name}".split(".")):
            continue  # private names belong to the architecture text (Adding a backend)
        if missing_modules(needs):
            continue  # the framework is not installed here
        assert _is_public(module, name), (
            f"{page.relative_to(ROOT)} uses {module}.{name}, which is not public (not in "
            f"{module}.__all__ nor a submodule): use the public name")
        checked.append((module, name))
    if required_frameworks(code) and not missing_modules(required_frameworks(code)):
        assert checked, "no localnorm name found in a page with examples"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_paths_into_the_repository_exist(page):
    text = page.read_text(encoding="utf-8")
    for path in _PATH.findall(text):
        path = path.split("::")[0]  # a test id: tests/x.py::test_name
        assert (ROOT / path).exists(), (
            f"{page.relative_to(ROOT)} names {path}, which is not in the repository")


def test_the_checks_see_names_and_paths():
    """The scanners find what they look for (a broken pattern would check nothing)."""
    code = ["import localnorm.torch as lt\nfrom localnorm.flax import linen as lnn\n",
            "from localnorm import vote\nlt.local_norm_layers(m)\nlnn.LocalNorm()\n"]
    assert _python_uses(code) >= {("localnorm.torch", "local_norm_layers"),
                                  ("localnorm.flax.linen", "LocalNorm"), ("localnorm", "vote")}
    text = "See `localnorm.protocols.run_protocol` and `backends/torch/_triton.py`.\n"
    assert ("localnorm.protocols", "run_protocol") in _inline_uses(text)
    assert _PATH.findall(text) == ["backends/torch/_triton.py"]
    assert _PATH.findall("not `results/results.json` nor LocalNorm1d/2d/3d") == []
    assert not _is_public("localnorm", "surely_not_a_name")
    assert any(_PATH.findall(p.read_text(encoding="utf-8")) for p in PAGES)
    assert DOCS.is_dir()
