"""The ``Examples`` sections of the docstrings run and print what they show.

mkdocstrings renders every public docstring on the API pages, examples included, so they
are docs like the pages' ```python blocks (test_docs_examples.py). Every module of the
core and the adapters whose source holds a ``>>>`` example is run through ``doctest``, one
fresh interpreter per framework (the core with torch; Keras on the ``KERAS_BACKEND`` of
this process). The Flax modules' examples are run by ``tests/flax/test_layers.py``
(``test_docstring_examples_run``), in the suite that has jax's settings.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from docs_blocks import ROOT, missing_modules

#: Source folder -> the import name of its modules.
PACKAGES = {"localnorm": "localnorm", "backends/torch": "localnorm.torch",
            "backends/keras": "localnorm.keras"}

#: Which framework a group of modules needs (the core needs none).
FRAMEWORK = {"localnorm": None, "backends/torch": "torch", "backends/keras": "keras"}

RUNNER = r"""
import doctest, importlib, sys
failed = 0
for name in sys.argv[1:]:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    print(f"{name}: {result.attempted} examples, {result.failed} failed", flush=True)
    failed += result.failed or not result.attempted
sys.exit(1 if failed else 0)
"""


def modules_with_examples(folder: str) -> list[str]:
    """The modules of ``folder`` whose source has a ``>>>`` example, by import name."""
    names = []
    for path in sorted((ROOT / folder).glob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8") and path.stem != "__main__":
            names.append(PACKAGES[folder] + ("" if path.stem == "__init__" else f".{path.stem}"))
    return names


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_docstring_examples_run(folder, tmp_path):
    framework = FRAMEWORK[folder]
    if framework and missing_modules({framework}):
        pytest.skip(f"{folder} needs {framework} (not installed)")
    names = modules_with_examples(folder)
    assert names, f"no docstring example found under {folder}: the scan is broken"
    proc = subprocess.run([sys.executable, "-c", RUNNER, *names], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, (
        f"A docstring example under {folder} failed (or a module had none).\n--- stdout\n"
        f"{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-3000:]}")


def test_the_scan_finds_the_documented_functions():
    """The public functional and the torch layers carry examples: the scan sees them."""
    assert "localnorm._core" in modules_with_examples("localnorm")
    assert "localnorm.torch._layers" in modules_with_examples("backends/torch")
