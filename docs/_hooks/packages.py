"""mkdocs hook: let mkdocstrings find ``localnorm.torch``, ``localnorm.keras``, ``localnorm.flax``
(and the rooms above them: ``localnorm.experiments``, ``.benchmarks``, ``.conformance``).

The adapters live under ``backends/`` (the rooms above in ``experiments/``,
``benchmarks/``, ``conformance/``) and import as ``localnorm.<framework>`` through the
setuptools ``package-dir`` mapping of pyproject.toml. Griffe (mkdocstrings' loader) reads
sources statically and does not follow that mapping, so this hook builds, in a temporary
directory, a symlink tree with the import layout (``localnorm/`` with ``torch`` ->
``backends/torch`` and so on) and puts it first on the Python handler's search ``paths``.
The tree is derived from pyproject.toml on every build, so new mapped packages are picked
up without touching this file; the symlinks point at the working tree, so ``mkdocs serve``
sees edits live.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

_TREE: Path | None = None


def package_layout(root: Path) -> dict[str, Path]:
    """Map each package name of pyproject.toml's ``[tool.setuptools]`` to its source dir."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    layout = {}
    for name in setuptools.get("packages", []):
        layout[name] = root / package_dir.get(name, name.replace(".", "/"))
    return layout


def build_tree(root: Path, dest: Path) -> None:
    """Materialize the import layout of ``root``'s packages under ``dest`` with symlinks."""
    for name, src in sorted(package_layout(root).items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*name.split("."))
        if target.is_symlink() and target.resolve() == src.resolve():
            continue  # already reachable through its parent's symlinked directory
        if target.is_symlink():
            target.unlink()
        target.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            link = target / entry.name
            if entry.name == "__pycache__" or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


# Before mkdocstrings' own on_config, which instantiates the Python handler with its paths.
@event_priority(100)
def on_config(config):
    global _TREE
    root = Path(config.config_file_path).resolve().parent
    if _TREE is not None:
        shutil.rmtree(_TREE, ignore_errors=True)
    _TREE = Path(tempfile.mkdtemp(prefix="localnorm-docs-"))
    build_tree(root, _TREE)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(_TREE), *python.get("paths", [])]
    return config


def on_shutdown():
    if _TREE is not None:
        shutil.rmtree(_TREE, ignore_errors=True)
