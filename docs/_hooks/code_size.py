"""Lines of code of each adapter: lines that are not docstrings, comments or blank.

    python docs/_hooks/code_size.py     # a Markdown table

Issue 13 measures the adapters' size this way; the "Adding a backend" page shows this
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


def code_lines(path: pathlib.Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text()
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
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
    core = sum(code_lines(ROOT / "localnorm" / f) for f in ("_agnostic.py", "_model.py"))
    rows.append(f"| core math and model machinery (`_agnostic.py`, `_model.py`) | 2 | {core} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
