"""The source tree's rooms import downwards only (docs/adding-a-backend.md draws them).

The core package (``localnorm/``) imports no adapter and nothing above it; each adapter
imports the core only; the benchmarks and the conformance suite import the core and the
adapters; the application (``experiments/``: the robustness experiment and the command
line) imports all of them. Checked twice: statically, every import statement (and every
``importlib.import_module`` of a literal name) of every file, wherever it sits (inside a
function too); and at run time, by importing every core module in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: room -> (folder, installed package, the rooms it may import besides itself)
ADAPTERS = ("torch", "keras", "flax")
ROOMS = {
    "core": ("localnorm", "localnorm", ()),
    **{a: (f"backends/{a}", f"localnorm.{a}", ("core",)) for a in ADAPTERS},
    "benchmarks": ("benchmarks", "localnorm.benchmarks", ("core", *ADAPTERS)),
    "conformance": ("conformance", "localnorm.conformance", ("core", *ADAPTERS)),
    "experiments": ("experiments", "localnorm.experiments",
                    ("core", *ADAPTERS, "benchmarks", "conformance")),
}
#: Imports allowed across the rule, each with its reason.
EXCEPTIONS = {
    # ``python -m localnorm`` runs the command line; importing the launcher runs nothing.
    ("localnorm/__main__.py", "localnorm.experiments._cli"),
}
#: Names the rooms had before they were installed under localnorm.*.
OLD_NAMES = ("benchmarks", "conformance")


def room_of(module: str) -> str | None:
    """The room a module name belongs to (None for a third-party module)."""
    if module.split(".")[0] in OLD_NAMES:
        return "old name"
    best = None
    for room, (_, package, _) in ROOMS.items():
        if (module == package or module.startswith(package + ".")) and (
                best is None or len(package) > len(ROOMS[best][1])):
            best = room
    return best


def _package_of(path: Path, folder: str, package: str) -> str:
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    parts = parts if path.name == "__init__.py" else parts[:-1]
    return ".".join([package, *[p for p in parts if p != "__init__"]])


def imports(path: Path, folder: str, package: str):
    """``(line, absolute module name)`` of every import in a file."""
    here = _package_of(path, folder, package)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                name = f"{base}.{node.module}" if node.module else base
                if not node.module:  # from . import a, b: each is a module or a name
                    for alias in node.names:
                        yield node.lineno, f"{base}.{alias.name}"
                    continue
            else:
                name = node.module
            yield node.lineno, name
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            yield node.lineno, node.args[0].value


def violations() -> list[str]:
    out = []
    for room, (folder, package, allowed) in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, name in imports(path, folder, package):
                target = room_of(name)
                if target in (None, room, *allowed) or (rel, name) in EXCEPTIONS:
                    continue
                out.append(f"{rel}:{line}: the {room} room imports {name} ({target})")
    return out


def test_rooms_import_downwards_only():
    found = violations()
    assert not found, "imports against the rooms' order:\n" + "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The static check is not vacuous: a core module importing the application, an
    adapter importing another, and an old top-level name are each reported."""
    core = tmp_path / "localnorm"
    core.mkdir()
    (core / "a.py").write_text("def f():\n    from localnorm.experiments import bench\n")
    (tmp_path / "backends" / "keras").mkdir(parents=True)
    (tmp_path / "backends" / "keras" / "k.py").write_text(
        "from ..torch import _layers\nimport importlib\nimportlib.import_module('benchmarks')\n")
    for folder, _, _ in ROOMS.values():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = "\n".join(violations())
    assert "localnorm/a.py:2: the core room imports localnorm.experiments" in found
    assert "backends/keras/k.py:1: the keras room imports localnorm.torch" in found
    assert "k.py:3" in found and "old name" in found


def test_core_modules_import_nothing_above_the_core():
    """Every module of the core package, imported in a fresh interpreter, pulls in no
    adapter, benchmark, conformance or application module."""
    names = sorted(f"localnorm.{p.stem}" for p in (ROOT / "localnorm").glob("*.py")
                   if p.stem != "__init__")
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "localnorm.__main__" in loaded and "localnorm.reference" in loaded
    above = [m for m in loaded if room_of(m) not in (None, "core")]
    assert not above, f"importing the core pulled in: {above}"


@pytest.mark.parametrize("room", list(ROOMS))
def test_every_room_is_installed(room):
    """pyproject.toml maps each room's folder to its package (the wheel carries it)."""
    import tomllib

    folder, package, _ = ROOMS[room]
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert package in cfg["packages"]
    assert cfg["package-dir"][package] == folder
