"""mkdocs hook: fail the build when the API reference would state a wrong parameter.

The reference renders each parameter's "Default" from the docstring, and numpydoc lets a
docstring state a default three ways that can silently disagree with the code: ``x : int,
default 4``, a choice set whose first entry is taken as the default (``mode : {"batch",
"set"}``), and several parameters on one line (``a, b : str``), where the default of the
first is shown for all. This check reads every public callable of every public module (the
functions in each ``__all__``, each public class's constructor and its public methods,
inherited ones included) at run time, and reports:

- an entry that documents several parameters on one line (write one entry per parameter);
- a documented parameter that is not in the signature;
- a parameter of the signature without an entry;
- a documented default that differs from the signature's, or a default documented for a
  required parameter (numpydoc reads a ``{...}`` choice set as "the first is the default",
  so a required choice is written ``str`` with the choices named in its description).

It runs in ``on_post_build`` (after the pages) and raises, so ``mkdocs build --strict``
fails; ``tests/docs/test_reference_check.py`` proves it catches each kind of mistake.
The rendered "Default" column itself is taken from the signature by
``griffe_docstrings.py``; this check keeps the docstrings' own words honest.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from typing import Any, Callable, Iterable

from mkdocs.exceptions import PluginError

#: The modules whose ``__all__`` is the public API (as in api_coverage.py).
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

#: Signature parameters that need no docstring entry: the receiver, and the two fields every
#: Flax Linen module inherits from ``nn.Module`` (documented by Flax).
_IMPLICIT = {"self", "cls", "parent", "name"}
_SECTION = re.compile(r"^(Parameters|Other Parameters|Attributes)\n-+\n", re.MULTILINE)
_NEXT_SECTION = re.compile(r"^\S[^\n]*\n-+\n", re.MULTILINE)
_ENTRY = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)(?:\s+:\s+(.*))?$")


def _sections(doc: str, names: tuple[str, ...]) -> list[str]:
    """The bodies of the sections called one of ``names`` in a numpydoc docstring."""
    bodies = []
    for match in _SECTION.finditer(doc):
        if match.group(1) not in names:
            continue
        rest = doc[match.end():]
        end = _NEXT_SECTION.search(rest)
        bodies.append(rest[: end.start()] if end else rest)
    return bodies


def documented(doc: str, names: tuple[str, ...] = ("Parameters", "Other Parameters")):
    """``[(names, type_text)]``: each entry line of the given sections, as written."""
    entries = []
    for body in _sections(doc, names):
        for line in body.splitlines():
            if not line.strip() or line[0].isspace():
                continue  # a description line, or a blank one
            match = _ENTRY.match(line.strip())
            if match:
                names_ = [n.strip().lstrip("*") for n in match.group(1).split(",")]
                entries.append((names_, (match.group(2) or "").strip()))
    return entries


_NO_DEFAULT = object()


def documented_default(type_text: str) -> Any:
    """The default numpydoc (and griffe) read from a type text, as its source text; or
    ``_NO_DEFAULT``. ``{"a", "b"}`` means ``"a"``; ``int, default 4`` means ``4``."""
    choices = re.match(r"^\{(.+)\}", type_text)
    if choices:
        return choices.group(1).split(", ", 1)[0].strip()
    match = re.match(r"^.+?,\s+default(?: |: |=)(.+)$", type_text)
    if match:
        return match.group(1).strip()
    return _NO_DEFAULT


def _source_defaults(func: Callable) -> dict[str, str]:
    """Each parameter's default as written in the source (``_spec.DEFAULT_EPS``); for a
    dataclass (a Flax Linen module), its fields' defaults."""
    fields = getattr(func, "__dataclass_fields__", None)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return {}
    if fields is not None:
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        return {n.target.id: ast.unparse(n.value) for n in body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.value}
    node = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))),
                None)
    if node is None:
        return {}
    args = node.args
    positional = args.posonlyargs + args.args
    out = {a.arg: ast.unparse(d) for a, d in zip(positional[len(positional) - len(args.defaults):],
                                                  args.defaults)}
    out.update({a.arg: ast.unparse(d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d})
    return out


def _same_default(text: str, value: Any, source: str | None, namespace: dict) -> bool:
    """Whether a documented default ``text`` names the signature's ``value``."""
    spellings = {repr(value), str(value)}
    if source:
        spellings |= {source, source.rsplit(".", 1)[-1]}
    name = getattr(value, "__name__", None)
    if isinstance(name, str):
        spellings.add(name)
    if text in spellings or text.strip("`") in spellings:
        return True
    for evaluate in (ast.literal_eval, lambda t: eval(t, dict(namespace))):  # noqa: S307
        try:
            documented_value = evaluate(text.strip("`"))
        except Exception:  # noqa: BLE001 - not an expression: compared by spelling above
            continue
        try:
            return bool(documented_value == value) and type(documented_value) is type(value) \
                or (isinstance(value, float) and documented_value == value)
        except Exception:  # noqa: BLE001 - an array or the like: not a default we document
            return False
    return False


def check_callable(label: str, doc: str | None, func: Callable, signature: inspect.Signature,
                   namespace: dict, sections=("Parameters", "Other Parameters"),
                   owner: type | None = None) -> list[str]:
    """The problems of one callable's documented parameters against its signature."""
    if not doc:
        return []
    doc = inspect.cleandoc(doc)
    problems = []
    params = {n: p for n, p in signature.parameters.items() if n not in _IMPLICIT}
    sources = _source_defaults(owner or func)
    seen = set()
    for names, type_text in documented(doc, sections):
        if len(names) > 1:
            problems.append(f"{label}: the entry `{', '.join(names)}` documents {len(names)} "
                            "parameters on one line; the reference would show the first one's "
                            "default for all. Write one entry per parameter.")
        for name in names:
            seen.add(name)
            if name not in params:
                problems.append(f"{label}: documents `{name}`, which is not a parameter of the "
                                f"signature {signature}.")
                continue
            default = documented_default(type_text)
            if default is _NO_DEFAULT:
                continue
            real = params[name].default
            if real is inspect.Parameter.empty:
                problems.append(f"{label}: `{name}` is required, but its entry `{type_text}` "
                                f"states a default of {default}. Received: documented "
                                f"default={default}, expected: none (required); numpydoc reads "
                                "the first entry of a `{...}` choice set as the default, so "
                                "write the type as `str` and name the choices in the text.")
            elif not _same_default(default, real, sources.get(name), namespace):
                problems.append(f"{label}: `{name}` is documented with default {default}, but "
                                f"the signature's default is {sources.get(name, repr(real))}. "
                                "Fix the docstring (or the signature).")
    if documented(doc, sections) or "Parameters" in sections:
        for name, param in params.items():
            if name in seen or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if documented(doc, sections):
                problems.append(f"{label}: parameter `{name}` has no docstring entry (one entry "
                                "per parameter).")
    return problems


def _public_methods(cls: type) -> Iterable[tuple[str, Callable]]:
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or owner.__module__.split(".")[0] != cls.__module__.split(".")[0]:
            continue  # a framework base class's method (torch.nn.Module.train): not ours
        attr = vars(owner)[name]
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.isfunction(attr):
            yield name, attr


def check_module(name: str) -> list[str]:
    """The problems of every public callable of one module."""
    module = importlib.import_module(name)
    problems = []
    for public in getattr(module, "__all__", ()):
        obj = getattr(module, public)
        label = f"{name}.{public}"
        if inspect.isclass(obj):
            init = obj.__init__
            namespace = vars(importlib.import_module(obj.__module__))
            try:  # the constructor's own signature: a metaclass may hide it behind *args
                signature = inspect.signature(init)
                signature = signature.replace(parameters=list(signature.parameters.values())[1:])
            except (TypeError, ValueError):
                signature = None
            if signature is not None:
                sections = ("Parameters", "Other Parameters")
                if hasattr(obj, "__dataclass_fields__") and not _sections(
                        inspect.cleandoc(obj.__doc__ or ""), ("Parameters",)):
                    sections = ("Attributes",)  # Flax Linen: the fields are the parameters
                dataclass = obj if hasattr(obj, "__dataclass_fields__") else None
                problems += check_callable(label, obj.__doc__, init, signature, namespace,
                                           sections, owner=dataclass)
            for method, func in _public_methods(obj):
                problems += check_callable(f"{label}.{method}", func.__doc__, func,
                                           inspect.signature(func), vars(inspect.getmodule(func)))
        elif callable(obj) and inspect.isroutine(obj):
            problems += check_callable(label, obj.__doc__, obj, inspect.signature(obj),
                                       vars(inspect.getmodule(obj)))
    return problems


def wrong_defaults(modules: Iterable[str] = PUBLIC_MODULES) -> list[str]:
    problems = []
    for name in modules:
        try:
            problems += check_module(name)
        except ImportError as exc:
            problems.append(f"{name}: cannot be imported ({exc}); install every extra "
                            "(`bash .ci/install`).")
    return problems


def on_post_build(config):
    problems = wrong_defaults(PUBLIC_MODULES)
    if problems:
        raise PluginError(
            "API reference check: the docstrings below disagree with the code, so the "
            "reference would state a wrong parameter or default.\n  " + "\n  ".join(problems))


if __name__ == "__main__":  # python docs/_hooks/reference_check.py: the report alone
    import sys

    found = wrong_defaults(sys.argv[1:] or PUBLIC_MODULES)
    print("\n".join(found) or "no problems")
    raise SystemExit(1 if found else 0)
