"""Griffe extension (loaded by mkdocstrings): docstrings that static analysis cannot see.

Griffe reads sources without importing them, so two documentation idioms of this project
would render as undocumented:

- ``#:`` comments above a module constant (Sphinx's attribute doc-comments), used for
  ``DEFAULT_EPS``, ``MODES``, ``NOISES``, ``EVAL_MODES`` and the like: the comment lines
  become the attribute's docstring;
- docstrings assigned at runtime (``__doc__ = _DOC.format(...)``, one template shared by
  sibling classes so their docs cannot drift apart): the class or function is imported and
  its own ``__doc__`` is used.

Only objects without a static docstring are touched. The extension also turns Sphinx
cross-reference roles (``:func:`localnorm.local_norm```, ``:class:`Vote```, ...), which
the docstrings use and mkdocstrings would print literally, into optional autorefs: a link
where the target is rendered on the site, plain code otherwise (no build warning); and reST
math (``:math:`` roles, ``.. math::`` blocks) into the site's math notation (rendered by
the bundled KaTeX, see ``docs/javascripts/katex.js``).

So that the reference states only what the code does, and in public names only:

- every parameter's rendered "Default" is the signature's: ``, default X`` is dropped from
  the Parameters entries, so griffe reads the signature (``reference_check.py`` fails the
  build where a docstring's own words, a ``{...}`` choice set or a multi-name line, would
  disagree);
- a default or module constant written with a private name (``eps=_spec.DEFAULT_EPS``,
  ``EVAL_MODES = _spec.MODES + ...``) is shown as its value (``eps=1e-05``);
- the docstrings' ````docs/spec.md````-style mentions become links to those pages (every
  docstring is rendered on a page under ``api/``).
"""

from __future__ import annotations

import importlib
import re
import textwrap
import inspect
from pathlib import Path

from griffe import Docstring, Extension


def _doc_comment(path: Path, lineno: int) -> str | None:
    """The ``#:`` comment block directly above line ``lineno`` (1-based) of ``path``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    block = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        block.append(lines[i].strip()[2:].strip())
        i -= 1
    return "\n".join(reversed(block)) or None


def _runtime_doc(obj) -> str | None:
    """The object's own ``__doc__`` at runtime (not one inherited from a base class)."""
    try:
        value = importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1 :].split("."):
            value = getattr(value, part)
    except Exception:  # noqa: BLE001 - a module that cannot import simply keeps no docstring
        return None
    own = vars(value).get("__doc__") if isinstance(value, type) else getattr(value, "__doc__", None)
    return inspect.cleandoc(own) if isinstance(own, str) and own.strip() else None


def _docstring(text: str, obj, agent, lineno: int | None = None) -> Docstring:
    """A docstring parsed like the static ones (numpydoc, as configured in mkdocs.yml)."""
    return Docstring(text, lineno=lineno, parent=obj, parser=agent.docstring_parser,
                     parser_options=agent.docstring_options)


_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?:(?P=indent)[ \t]+.*)?\n)+)",
                             re.MULTILINE)


def _math(text: str) -> str:
    """reST math (``:math:`x``` and ``.. math::`` blocks) as arithmatex's ``$x$`` and
    ``$$ ... $$``, which the site renders with the bundled KaTeX."""
    def block(match: re.Match) -> str:
        body = textwrap.dedent(match.group("body")).strip("\n")
        indent = match.group("indent")
        lines = "\n".join(indent + line for line in ["$$", *body.splitlines(), "$$"])
        return lines + "\n\n"

    return _MATH_ROLE.sub(r"$\1$", _MATH_DIRECTIVE.sub(block, text))


def _exists(collection, path: str) -> bool:
    try:
        collection.get_member(path)
    except Exception:  # noqa: BLE001 - KeyError, or an alias that cannot be resolved
        return False
    return True


def _target(text: str, obj, collection) -> tuple[str, str]:
    """``(title, identifier)`` of a role's text, resolving short names in obj's scope."""
    title, _, explicit = text.partition(" <")
    name = explicit.rstrip(">") if explicit else text
    name = name.lstrip("~.!")
    if not explicit:
        title = name.split(".")[-1] if text.startswith("~") else name
    scopes = [o.path for o in (obj, obj.parent, obj.module) if o is not None and not o.is_alias]
    for candidate in [name, *(f"{scope}.{name}" for scope in scopes)]:
        if _exists(collection, candidate):
            return title, candidate
    return title, name


#: ``docs/<page>.md`` (with an optional ``#anchor``) in double backquotes.
_DOCS_PATH = re.compile(r"``docs/([\w/-]+)\.md(#[\w-]+)?``")


#: ``docs/<page>.md`` written without backquotes.
_BARE_DOCS_PATH = re.compile(r"(?<![`/\w>])docs/([\w/-]+)\.md\b")


def _docs_links(text: str) -> str:
    """``docs/spec.md`` (quoted or bare) as a link to that page, relative to an API page
    (``api/<name>/``)."""
    text = _DOCS_PATH.sub(lambda m: f'<a href="../../{m.group(1)}/{m.group(2) or ""}">'
                                    f"<code>docs/{m.group(1)}.md</code></a>", text)
    return _BARE_DOCS_PATH.sub(lambda m: f'<a href="../../{m.group(1)}/">docs/{m.group(1)}.md</a>',
                               text)


def _private(expr) -> bool:
    """Whether an expression's text names something private (``_spec.DEFAULT_EPS``)."""
    return re.search(r"(?:^|[.\s(\[,])_[A-Za-z]", str(expr)) is not None


def _runtime(obj):
    value = importlib.import_module(obj.module.path)
    for part in obj.path[len(obj.module.path) + 1 :].split("."):
        value = getattr(value, part)
    return value


def _public_defaults(func) -> None:
    """Show defaults written with private names as their values."""
    if not any(p.default is not None and _private(p.default) for p in func.parameters):
        return
    try:
        signature = inspect.signature(_runtime(func))
    except Exception:  # noqa: BLE001 - not importable: keep the source text
        return
    for param in func.parameters:
        real = signature.parameters.get(param.name)
        if param.default is not None and _private(param.default) and real is not None \
                and real.default is not inspect.Parameter.empty:
            param.default = repr(real.default)


_ENTRY_DEFAULT = re.compile(r"^(\s*\*{0,2}\w+ : .+?),\s+default(?: |: |=).+$")


def _signature_defaults(text: str) -> str:
    """Drop ``, default X`` from the Parameters entries, so that the rendered default is
    the signature's (griffe falls back to it when the docstring states none)."""
    lines, section = text.splitlines(), None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"\s*-{3,}\s*", lines[i + 1]) and line.strip():
            section = line.strip()
        elif section in ("Parameters", "Other Parameters"):
            lines[i] = _ENTRY_DEFAULT.sub(r"\1", line)
    return "\n".join(lines)


def _public_signatures(obj) -> None:
    """Defaults and constants written with private names, shown as their values."""
    if obj.is_alias:
        return
    if obj.is_function:
        _public_defaults(obj)
    if obj.is_attribute and obj.value is not None and _private(obj.value):
        try:  # EVAL_MODES = _spec.MODES + (_spec.RUNNING,) -> its value
            obj.value = repr(_runtime(obj))
        except Exception:  # noqa: BLE001 - not importable: keep the source text
            pass
    for member in obj.members.values():
        _public_signatures(member)


def _link_roles(obj, collection) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _signature_defaults(_docs_links(obj.docstring.value))
    if obj.docstring is not None and ":" in obj.docstring.value:
        obj.docstring.value = _math(obj.docstring.value)

        def replace(match):
            title, identifier = _target(match.group(1), obj, collection)
            return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

        obj.docstring.value = _ROLE.sub(replace, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _link_roles(member, collection)


class StaticlessDocstrings(Extension):
    def on_package(self, *, pkg, **kwargs):
        _link_roles(pkg, pkg.modules_collection)
        _public_signatures(pkg)

    def on_attribute_instance(self, *, node, attr, agent, **kwargs):
        if attr.docstring is None and attr.lineno and attr.filepath:
            text = _doc_comment(Path(attr.filepath), attr.lineno)
            if text:
                attr.docstring = _docstring(text, attr, agent, lineno=attr.lineno - 1)

    def on_class_instance(self, *, node, cls, agent, **kwargs):
        self._from_runtime(cls, agent)

    def on_function_instance(self, *, node, func, agent, **kwargs):
        self._from_runtime(func, agent)

    @staticmethod
    def _from_runtime(obj, agent):
        if obj.docstring is None:
            text = _runtime_doc(obj)
            if text:
                obj.docstring = _docstring(text, obj, agent)
