"""The "Adding a backend" page shows the adapters' current size."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("code_size", ROOT / "docs/_hooks/code_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_table_is_the_scripts_output():
    page = (ROOT / "docs/adding-a-backend.md").read_text()
    body = page.split("<!-- code-size:start -->")[1].split("<!-- code-size:end -->")[0]
    assert body.strip() == _script().table().strip(), (
        "docs/adding-a-backend.md: paste the output of `python docs/_hooks/code_size.py` "
        "between the code-size markers")


def test_code_lines_leave_out_docstrings_comments_and_blank_lines(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Module\\ndocstring."""\n\n# comment\nx = 1  # trailing\n\n\n'
                 'def g(a,\n      b):\n    """Doc."""\n    return a\n')
    assert _script().code_lines(f) == 4  # x = 1; def g(a, / b):; return a
