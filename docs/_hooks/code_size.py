"""Lines of code of each adapter: lines that are not docstrings, comments or blank.

    python docs/_hooks/code_size.py     # a Markdown table

Issue 13 measures the adapters' size this way (a docstring built from a template,
``__doc__ = _DOC.format(...)``, counts as a docstring, its template too); the "Adding a backend" page shows this
table, filled in at build time by the ``code-size`` generator of ``docs/_hooks/generated.py``.
"""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADAPTERS = {"localnorm.torch": "backends/torch", "localnorm.keras": "backends/keras",
            "localnorm.flax": "backends/flax"}


def _lines(node: ast.AST) -> range:
    return range(node.lineno, node.end_lineno + 1)


def docstring_lines(tree: ast.Module) -> set[int]:
    """The lines of docstrings: a body's leading string; a ``__doc__ = ...`` assignment
    (a docstring built from a template, as the torch layers' per-class docstrings); and
    a module-level string constant that such an assignment reads (the template)."""
    lines: set[int] = set()
    templates: set[str] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            lines.update(_lines(body[0]))
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                == ["__doc__"]:
            lines.update(_lines(node))
            templates.update(n.id for n in ast.walk(node.value) if isinstance(n, ast.Name))
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str) \
                and {getattr(t, "id", None) for t in node.targets} <= templates:
            lines.update(_lines(node))
    return lines


def code_lines(path: pathlib.Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring
    (:func:`docstring_lines`)."""
    source = path.read_text()
    doc_lines = docstring_lines(ast.parse(source))
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                        tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if line not in doc_lines:
                code.add(line)
    return len(code)


#: Files counted on their own row: the fused CUDA kernels of the torch adapter (issue 14),
#: the one sanctioned second implementation of the math, beside the glue.
KERNELS = {"backends/torch/_triton.py": "`localnorm.torch` CUDA kernels (`_triton.py`, Triton)"}


#: The core's files that the adapters' shared code lives in, on the last row.
CORE = ("_agnostic.py", "_layer.py", "_model.py")


def table() -> str:
    rows = ["| adapter | files | lines of code |", "| --- | --- | --- |"]
    for name, folder in ADAPTERS.items():
        files = [f for f in sorted((ROOT / folder).glob("*.py"))
                 if str(f.relative_to(ROOT)) not in KERNELS]
        total = sum(code_lines(f) for f in files)
        rows.append(f"| `{name}` | {len(files)} | {total} |")
    for path, label in KERNELS.items():
        if (ROOT / path).is_file():
            rows.append(f"| {label} | 1 | {code_lines(ROOT / path)} |")
    core = sum(code_lines(ROOT / "localnorm" / f) for f in CORE)
    names = ", ".join(f"`{f}`" for f in CORE)
    rows.append(f"| core math, per-call rules and model machinery ({names}) | {len(CORE)} | {core} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
