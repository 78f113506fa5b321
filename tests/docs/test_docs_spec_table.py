"""The cross-framework table of docs/spec.md says what the code does.

Every ``name=default`` cell is checked against the signature of its column's callable, every
``name`` (required) cell against a required parameter, and every ``.attribute`` cell
against a built layer (an array of shape (K, C) for the parameters)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"
K, C = 4, 3


def framework_table() -> tuple[list[str], list[list[str]]]:
    """The identifiers heading each column, and the body rows, of the first table under
    "## Across frameworks"."""
    text = SPEC.read_text(encoding="utf-8").split("## Across frameworks", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]
    header, body = split[0], []
    for row in split[2:]:
        if len(row) != len(header):
            break  # the next table
        body.append(row)
    columns = [(re.search(r"\]\[([\w.]+)\]", cell) or [None, ""])[1] for cell in header]
    return columns, body


COLUMNS, ROWS = framework_table()


def _load(identifier: str):
    module, _, name = identifier.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _defaults_cells(column: int):
    for row in ROWS:
        for name, value in re.findall(r"`(\w+)=([^`]+)`", row[column]):
            yield row[0], name, ast.literal_eval(value)


def test_table_has_a_column_per_implementation():
    assert COLUMNS[1:] == ["localnorm.local_norm", "localnorm.torch.LocalNorm2d",
                           "localnorm.keras.LocalNormalization", "localnorm.flax.LocalNorm",
                           "localnorm.flax.linen.LocalNorm"]
    assert len(ROWS) >= 10


FRAMEWORK = {"localnorm.torch": "torch", "localnorm.keras": "keras", "localnorm.flax": "flax"}


def _import_column(identifier):
    for prefix, framework in FRAMEWORK.items():
        if identifier.startswith(prefix):
            pytest.importorskip(framework)
    return _load(identifier)


@pytest.mark.parametrize("column", range(1, len(COLUMNS)), ids=COLUMNS[1:])
def test_argument_names_and_defaults(column):
    target = _import_column(COLUMNS[column])
    params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters
    checked = 0
    for concept, name, default in _defaults_cells(column):
        assert name in params, f"{COLUMNS[column]} has no argument {name!r} (row {concept!r})"
        assert params[name].default == default, (
            f"{COLUMNS[column]}: {name} defaults to {params[name].default!r}, the spec table "
            f"says {default!r} (row {concept!r})")
        checked += 1
    for row in ROWS:
        for name in re.findall(r"`(\w+)` \(required\)", row[column]):
            assert params[name].default is inspect.Parameter.empty, f"{name} is not required"
    assert checked >= 3


#: Cells that say a column has no such thing.
ABSENT = {"none", "n/a", "no"}


@pytest.mark.parametrize("column", range(1, len(COLUMNS)), ids=COLUMNS[1:])
def test_absent_cells_have_no_such_argument(column):
    """A cell that says "none", "n/a" or "no" where other columns name an argument
    (``momentum=0.99``) is checked too: the column's callable must not take it (the
    Linen column said "none" and "n/a" for running statistics and momentum after the
    Linen layer had gained both)."""
    target = _import_column(COLUMNS[column])
    params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters
    checked = 0
    for row in ROWS:
        if row[column].strip().lower() not in ABSENT:
            continue
        names = {name for cell in row[1:] for name in re.findall(r"`(\w+)=[^`]+`", cell)}
        for name in names:
            assert name not in params, (
                f"{COLUMNS[column]} takes {name}={params[name].default!r}, but the spec table "
                f"says {row[column]!r} (row {row[0]!r})")
            checked += 1
    if COLUMNS[column] == "localnorm.local_norm":  # the functional has no layer options
        assert checked >= 5, "the rule found no absent cells to check"


def _built(identifier):
    if identifier == "localnorm.torch.LocalNorm2d":
        return _load(identifier)(C, track_running_stats=True)
    if identifier == "localnorm.keras.LocalNormalization":
        layer = _load(identifier)()
        layer.build((None, 5, 5, C))
        return layer
    if identifier == "localnorm.flax.LocalNorm":
        from flax import nnx
        return _load(identifier)(C, rngs=nnx.Rngs(0))
    if identifier == "localnorm.flax.linen.LocalNorm":
        import jax
        import jax.numpy as jnp
        params = _load(identifier)().init(jax.random.key(0), jnp.ones((8, 5, 5, C)))["params"]
        return type("Params", (), dict(params))()
    return None


@pytest.mark.parametrize("column", range(2, len(COLUMNS)), ids=COLUMNS[2:])
def test_attribute_names(column):
    _import_column(COLUMNS[column])
    layer = _built(COLUMNS[column])
    names = [(row[0], name) for row in ROWS for name in re.findall(r"`\.(\w+)`", row[column])]
    assert names, "no attribute cells"
    for concept, name in names:
        value = getattr(layer, name, None)
        assert value is not None, f"{COLUMNS[column]} has no attribute .{name} (row {concept!r})"
        assert tuple(value.shape) == (K, C), f".{name} has shape {tuple(value.shape)}"


def shared_signatures() -> dict[str, ast.arguments]:
    """The model-wide functions as the spec writes them, e.g. ``set_eval_mode(model, mode,
    group=0)``, parsed."""
    text = SPEC.read_text(encoding="utf-8")
    paragraph = text.split("The model-wide functions have the same names", 1)[1].split("\n\n")[0]
    calls = {}
    for code in re.findall(r"`(\w+\([^`]*\))`", paragraph):
        node = ast.parse(f"def {code}: pass").body[0]
        calls[node.name] = node.args
    return calls


SHARED = shared_signatures()


def test_spec_lists_the_shared_functions():
    assert set(SHARED) == {"set_eval_mode", "eval_mode", "predict", "convert_batchnorm"}


@pytest.mark.parametrize("adapter", ["localnorm.torch", "localnorm.keras", "localnorm.flax"])
def test_shared_functions_have_the_spec_arguments_in_order(adapter):
    pytest.importorskip(FRAMEWORK[adapter])
    module = importlib.import_module(adapter)
    for name, args in SHARED.items():
        params = list(inspect.signature(getattr(module, name)).parameters.values())
        spec_names = [a.arg for a in args.args]
        defaults = dict(zip(spec_names[len(spec_names) - len(args.defaults):],
                            (ast.literal_eval(d) for d in args.defaults)))
        got = [p.name for p in params[: len(spec_names)]]
        # The first argument is the model (torch's convert_batchnorm calls it `module`).
        assert got[1:] == spec_names[1:], f"{adapter}.{name}{inspect.signature(getattr(module, name))}"
        for p in params[1 : len(spec_names)]:
            expected = defaults.get(p.name, inspect.Parameter.empty)
            assert p.default == expected, f"{adapter}.{name}: {p.name}={p.default!r}, spec {expected!r}"
