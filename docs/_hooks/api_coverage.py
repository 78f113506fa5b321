"""mkdocs hook: fail the build when a public name is missing from the API reference.

Modelled on optax's ``docs/ext/coverage_check.py``. After the build, every name in the
``__all__`` of each public module below must have been rendered by mkdocstrings on some
page under ``api/`` (mkdocstrings gives each rendered object an HTML anchor equal to its
dotted path). A name counts as documented under the module that exports it
(``localnorm.torch.LocalNorm2d``) or under its defining path (``localnorm.protocols.Prediction``
re-exported as ``localnorm.Prediction``). Only objects with a docstring are rendered
(``show_if_no_docstring: false``), so "documented" means "has a docstring and is on a page".

A public module that cannot be imported fails the build too: the reference would silently
lose its pages otherwise (install every extra: ``bash .ci/install``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

#: The modules whose ``__all__`` is the public API.
PUBLIC_MODULES = (
    "localnorm",
    "localnorm.noise",
    "localnorm.protocols",
    "localnorm.reference",
    "localnorm.torch",
    "localnorm.keras",
    "localnorm.flax",
    "localnorm.flax.linen",
)

_ID = re.compile(r'\bid="([^"]+)"')


def rendered_ids(site_dir: Path) -> set[str]:
    """Every HTML anchor id on the API pages of a built site."""
    ids: set[str] = set()
    for page in (site_dir / "api").rglob("*.html"):
        ids.update(_ID.findall(page.read_text(encoding="utf-8")))
    return ids


def canonical_path(obj) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def missing_names(ids: set[str], modules=PUBLIC_MODULES) -> list[str]:
    """Public names (``module.name``) without an anchor in ``ids``, plus import failures."""
    missing = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure must fail the build
            missing.append(f"{name} (cannot be imported: {type(exc).__name__}: {exc})")
            continue
        if name not in ids:
            missing.append(f"{name} (the module itself: add `::: {name}` to a page in docs/api/)")
        if not hasattr(module, "__all__"):
            missing.append(f"{name} (no __all__: list its public names)")
        for public in getattr(module, "__all__", ()):
            path = f"{name}.{public}"
            canonical = canonical_path(getattr(module, public, None))
            if path not in ids and canonical not in ids:
                missing.append(path)
    return missing


def on_post_build(config):
    missing = missing_names(rendered_ids(Path(config.site_dir)))
    if missing:
        raise PluginError(
            "API reference coverage: these public names (in a module's __all__) are not "
            "documented on any page under docs/api/. Give each a numpydoc docstring and make "
            "sure its module's page renders it (e.g. `::: localnorm.torch`).\n  "
            + "\n  ".join(missing)
        )
