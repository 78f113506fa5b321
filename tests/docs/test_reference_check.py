"""The build-time reference check (docs/_hooks/reference_check.py) catches each way a
docstring can make the API reference state a wrong parameter or default."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from test_docs_build import HOOKS

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("griffe")


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = '''
"""A module with one right and several wrong docstrings."""

__all__ = ["right", "multi", "required_choice", "wrong_default", "unknown", "missing",
           "Layer"]

DEFAULT = 1e-5


def right(x, mode, eps=DEFAULT, partition="contiguous", k=4):
    """Fine.

    Parameters
    ----------
    x : array
        Input.
    mode : str, one of "batch", "single"
        Required, choices named in the type text without braces.
    eps : float, default 1e-5
        A private constant, documented by value.
    partition : {"contiguous", "strided"}, default "contiguous"
        A choice set whose first entry is the default.
    k : int, optional
        No stated default: the signature's is rendered.
    """


def multi(gamma, beta=None):
    """Two on one line.

    Parameters
    ----------
    gamma, beta : array
        Scale and shift.
    """


def required_choice(mode):
    """A choice set on a required parameter: numpydoc reads "batch" as its default.

    Parameters
    ----------
    mode : {"batch", "single"}
        The mode.
    """


def wrong_default(initializer="ones"):
    """States another default than the signature.

    Parameters
    ----------
    initializer : str, default "zeros"
        The initializer.
    """


def unknown(x):
    """Documents a parameter the signature lacks.

    Parameters
    ----------
    x : int
        Input.
    y : int
        Not a parameter.
    """


def missing(x, y=2):
    """Leaves one parameter out.

    Parameters
    ----------
    x : int
        Input.
    """


class Layer:
    """A layer whose class docstring documents __init__.

    Parameters
    ----------
    units : int, default 8
        Wrong: the signature says 16.
    """

    def __init__(self, units=16):
        self.units = units

    def set_mode(self, mode, group=0):
        """A method.

        Parameters
        ----------
        mode : {"batch", "set"}
            Required, but a choice set.
        group : int, default 0
            The group.
        """
'''


@pytest.fixture()
def fake_module(tmp_path, monkeypatch):
    (tmp_path / "fake_api.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_api", None)
    yield "fake_api"
    sys.modules.pop("fake_api", None)


def _problems_of(problems: list[str], label: str) -> list[str]:
    return [p for p in problems if p.startswith(label + ":")]


def test_each_kind_of_wrong_docstring_is_reported(fake_module):
    check = _hook("reference_check")
    problems = check.check_module(fake_module)
    assert _problems_of(problems, "fake_api.right") == []
    assert any("one line" in p for p in _problems_of(problems, "fake_api.multi"))
    assert any("required" in p and "batch" in p
               for p in _problems_of(problems, "fake_api.required_choice"))
    wrong = _problems_of(problems, "fake_api.wrong_default")
    assert wrong and "zeros" in wrong[0] and "ones" in wrong[0]
    assert any("`y`" in p and "not a parameter" in p for p in _problems_of(problems, "fake_api.unknown"))
    assert any("`y`" in p and "no docstring entry" in p
               for p in _problems_of(problems, "fake_api.missing"))
    layer = _problems_of(problems, "fake_api.Layer")
    assert layer and "8" in layer[0] and "16" in layer[0]
    assert any("required" in p for p in _problems_of(problems, "fake_api.Layer.set_mode"))


def test_the_build_fails_on_a_wrong_default(fake_module, monkeypatch):
    from mkdocs.exceptions import PluginError

    check = _hook("reference_check")
    monkeypatch.setattr(check, "PUBLIC_MODULES", (fake_module,))
    with pytest.raises(PluginError, match="wrong_default"):
        check.on_post_build(config=None)


def test_a_module_without_wrong_docstrings_passes(tmp_path, monkeypatch):
    check = _hook("reference_check")
    (tmp_path / "fine_api.py").write_text(textwrap.dedent('''
        __all__ = ["f"]

        def f(x, k=4):
            """F.

            Parameters
            ----------
            x : int
                X.
            k : int, default 4
                K.
            """
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(check, "PUBLIC_MODULES", ("fine_api",))
    check.on_post_build(config=None)  # no exception
