"""The "Adding a backend" page shows the adapters' current size."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("code_size", ROOT / "docs/_hooks/code_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_table_is_generated_at_build_time():
    # The page holds a marker, not a pasted table, so an adapter change cannot leave it stale.
    page = (ROOT / "docs/adding-a-backend.md").read_text()
    assert "<!-- generated: code-size -->" in page
    spec = importlib.util.spec_from_file_location("generated", ROOT / "docs/_hooks/generated.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    table = generated.GENERATORS["code-size"](ROOT, ROOT / "docs")
    assert table == _script().table()
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows][:3] == [
        "`localnorm.torch`", "`localnorm.keras`", "`localnorm.flax`"]
    assert any("_triton.py" in r for r in rows)
    assert all(int(r.split("|")[3]) > 0 for r in rows)


def test_code_lines_leave_out_docstrings_comments_and_blank_lines(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Module\\ndocstring."""\n\n# comment\nx = 1  # trailing\n\n\n'
                 'def g(a,\n      b):\n    """Doc."""\n    return a\n')
    assert _script().code_lines(f) == 4  # x = 1; def g(a, / b):; return a


def test_docstrings_built_from_a_template_are_docstrings(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('_DOC = """Layer over\n{what}."""\nOTHER = "a string used as data"\n\n'
                 'class A:\n    __doc__ = _DOC.format(\n        what="x")\n    y = OTHER\n')
    assert _script().code_lines(f) == 3  # OTHER = ...; class A:; y = OTHER
