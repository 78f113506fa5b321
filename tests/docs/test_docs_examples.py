"""Execute every ```python block of the docs, page by page (see docs_blocks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from docs_blocks import DOCS, ROOT, RUNNER, Block, blocks, executed_blocks, missing_modules, pages
from docs_blocks import required_frameworks

PAGES = [p for p in pages() if executed_blocks(p)]

#: A hang guard, not a timing assertion: a page's examples should take seconds.
TIMEOUT_S = 600

#: Extra environment of a page's interpreter. The Flax guide's group-per-device example
#: needs several devices: 4 emulated CPU devices (read when jax starts), as tests/flax.
PAGE_ENV = {
    "guides/flax.md": {"XLA_FLAGS": " ".join(filter(None, [
        os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]))},
}


#: The README's examples run like a page's.
README = ROOT / "README.md"


@pytest.mark.parametrize("page", PAGES + [README],
                         ids=[p.relative_to(DOCS).as_posix() for p in PAGES] + ["README.md"])
def test_page_examples_run(page, tmp_path):
    page_blocks = executed_blocks(page)
    missing = missing_modules(required_frameworks(page_blocks))
    if missing:
        pytest.skip(f"{page.relative_to(ROOT)} needs {', '.join(missing)} (not installed)")
    rel = page.relative_to(ROOT).as_posix()
    payload = json.dumps([rel, [(b.lineno, b.code) for b in page_blocks]])
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           **PAGE_ENV.get(rel.removeprefix("docs/"), {})}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=payload, capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"An example of {rel} failed (blocks run in order in one fresh interpreter, cwd a "
        f"temporary directory).\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )


def test_the_site_has_executed_examples():
    """The runner finds the examples (a broken fence parser would silently run nothing)."""
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.md", "concepts.md"} <= names
    assert executed_blocks(README), "the README's first look no longer has a python block"


# -- the rules of the runner itself ------------------------------------------------------

PAGE = '''# Title

```python
a = 1
```

```bash
pip install nothing
```

!!! note
    ```python
    b = a + 1
    ```

```python
# not-run: needs a GPU
c = 3
```

````python
d = "```"
````
'''


def test_blocks_finds_languages_lines_and_indented_fences():
    found = blocks(PAGE)
    assert [b.lang for b in found] == ["python", "bash", "python", "python", "python"]
    assert found[0] == Block("python", 4, "a = 1\n")
    assert found[2].code == "b = a + 1\n" and found[2].lineno == 13
    assert found[4].code == 'd = "```"\n'


def test_not_run_blocks_and_other_languages_are_not_executed():
    found = blocks(PAGE)
    assert [b.executed for b in found] == [True, False, True, False, True]


def test_frameworks_are_inferred_from_imports():
    page_blocks = [Block("python", 1, "import numpy as np\nfrom localnorm.torch import LocalNorm2d\n"),
                   Block("python", 5, "import os, json\nimport localnorm\nfrom localnorm.flax import linen\n")]
    assert required_frameworks(page_blocks) == {"numpy", "torch", "flax", "jax"}
    assert missing_modules({"numpy", "surely_not_a_module_xyz"}) == ["surely_not_a_module_xyz"]


def test_runner_reports_the_markdown_line_of_a_failure(tmp_path):
    payload = json.dumps(["page.md", [(3, "x = 1\n"), (9, "y = x\nraise ValueError('boom')\n")]])
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=payload, capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert 'File "page.md", line 10' in proc.stderr and "page.md:9" in proc.stderr


def test_runner_shares_a_namespace_between_blocks_of_a_page(tmp_path):
    payload = json.dumps(["page.md", [(1, "x = 41\n"), (5, "assert x + 1 == 42\n")]])
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=payload, capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
