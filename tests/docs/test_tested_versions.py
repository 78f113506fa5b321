"""Declared version ranges are tested ones: every lower bound in pyproject.toml equals the
version in the docs' "Tested versions" table (docs/index.md), and the versions installed
here (where the suites run) have the table's major.minor release."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _release(text: str) -> tuple[int, ...]:
    """A version's release numbers, without local labels (``2.13.0+cpu`` -> (2, 13, 0)),
    padded to three."""
    parts = [int(p) for p in re.match(r"\d+(?:\.\d+)*", text).group(0).split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def _table() -> dict[str, str]:
    text = (ROOT / "docs" / "index.md").read_text()
    section = text.split("### Tested versions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([\w.-]+) \| ([\d.]+) \|$", section, flags=re.MULTILINE)
    return {name.lower(): version for name, version in rows}


def _floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("localnorm[")]
    floors = {"python": project["requires-python"].removeprefix(">=")}
    for req in requirements:
        m = re.match(r"^([\w.-]+)\s*>=\s*([\d.]+)", req)
        assert m, f"requirement without a lower bound: {req!r}; declare the tested floor"
        floors[m.group(1).lower()] = m.group(2)
    return floors


def test_every_floor_is_the_documented_tested_version():
    table, floors = _table(), _floors()
    assert len(floors) > 10, "pyproject.toml parsed to too few requirements"
    for name, floor in floors.items():
        assert name in table, (f"{name} has a floor ({floor}) in pyproject.toml but no row "
                               "in docs/index.md's Tested versions table")
        # a floor stated as major.minor stands for that release series
        stated = len(floor.split("."))
        assert _release(floor)[:stated] == _release(table[name])[:stated], (
            f"{name}: pyproject.toml's floor {floor} is not the tested version "
            f"{table[name]} (docs/index.md); raise the floor or test the older version")


@pytest.mark.parametrize("name", sorted(_table()))
def test_installed_version_is_the_tested_one(name):
    """The suites run on the documented versions (major.minor): a newer release installed
    here means the table and the floors should move to it."""
    tested = _release(_table()[name])
    if name == "python":
        installed = sys.version_info[:3]
    else:
        try:
            installed = _release(metadata.version(name))
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} not installed here")
    assert installed[:2] == tested[:2], (
        f"{name} {'.'.join(map(str, installed))} is installed, the docs say "
        f"{'.'.join(map(str, tested))} is tested; update docs/index.md's Tested versions "
        "and the floor in pyproject.toml")
