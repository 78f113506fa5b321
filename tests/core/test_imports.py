"""``import localnorm`` stays light: no framework is imported (checked in a fresh
interpreter, since this test process may already hold them)."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "jaxlib", "optax")

SCRIPT = f"""
import json, sys
import localnorm
import localnorm.noise, localnorm.protocols, localnorm.reference
x = __import__("numpy").ones((4, 3, 2))
localnorm.local_norm(x + __import__("numpy").arange(2), x[:2, :, 0], x[:2, :, 0], axis=1)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})))
"""


def test_import_localnorm_imports_no_framework():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import localnorm pulled in: {loaded}"


def test_public_names():
    import localnorm

    for name in localnorm.__all__:
        assert hasattr(localnorm, name), name
    assert localnorm.__version__
