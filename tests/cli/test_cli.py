"""The `localnorm` command line: subcommand registration, help, argument errors."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from localnorm import _cli


def test_subcommands_registered():
    parser = _cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "robustness" in sub.choices


def test_module_registers_itself(monkeypatch):
    called = []
    fake = types.ModuleType("fake_sub")

    def add_parser(subparsers):
        p = subparsers.add_parser("fake")
        p.add_argument("--n", type=int, default=1)
        p.set_defaults(func=lambda args: called.append(args.n) or 3)

    fake.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "fake_sub", fake)
    monkeypatch.setattr(_cli, "SUBCOMMANDS", ("fake_sub", "no_such_module_xyz"))
    assert _cli.main(["fake", "--n", "5"]) == 3
    assert called == [5]


def test_broken_subcommand_module_is_not_hidden(monkeypatch):
    broken = types.ModuleType("broken_sub")

    def add_parser(subparsers):
        import no_such_dependency_xyz  # noqa: F401

    broken.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "broken_sub", broken)
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        _cli.build_parser(("broken_sub",))


def test_no_command_prints_help(capsys):
    assert _cli.main([]) == 2
    assert "robustness" in capsys.readouterr().err


def test_python_m_help_is_light():
    # --help must not import torch or matplotlib (they load only when a run starts).
    code = ("import sys; from localnorm import _cli\n"
            "try:\n    _cli.main(['robustness', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--levels" in out.stdout and "--resume" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "localnorm", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("localnorm ")


@pytest.mark.parametrize("backend", ["keras", "flax"])
def test_unsupported_backend_is_a_clear_error(backend, capsys, tmp_path):
    assert _cli.main(["robustness", "--backend", backend, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"backend={backend!r}" in err and "--backend torch" in err


def test_levels_parsing():
    from localnorm.experiments.robustness import parse_levels

    assert parse_levels(["0", "1", "2"], ["agn", "apn"]) == {"agn": [1.0, 2.0], "apn": [1.0, 2.0]}
    got = parse_levels(["agn=0.5,1", "contrast=5,1"], ["agn", "contrast", "mbn"])
    assert got["agn"] == [0.5, 1.0] and got["contrast"] == [1.0, 5.0]
    assert got["mbn"] == [0.1, 0.2, 0.3, 0.5, 0.7]  # default grid


@pytest.mark.parametrize("spec,named", [(["agn=x"], "'agn=x'"), (["fog=1"], "'fog'"),
                                        (["contrast=7"], "severity=7")])
def test_bad_levels_are_clear(spec, named):
    from localnorm import LocalNormError
    from localnorm.experiments.robustness import parse_levels

    with pytest.raises(LocalNormError) as info:
        parse_levels(spec, ["agn", "contrast"])
    assert named in str(info.value)
