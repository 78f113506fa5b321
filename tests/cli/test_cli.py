"""The `localnorm` command line: subcommand registration, help, argument errors."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from localnorm.experiments import _cli


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
    code = ("import sys; from localnorm.experiments import _cli\n"
            "try:\n    _cli.main(['robustness', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--levels" in out.stdout and "--resume" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "localnorm", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("localnorm ")


def test_help_describes_every_backend_and_its_devices():
    out = subprocess.run([sys.executable, "-m", "localnorm", "robustness", "--help"],
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "{torch,keras,flax}" in flat and "KERAS_BACKEND" in flat
    assert "CUDA build of jaxlib" in flat  # flax has no GPU on the CPU wheel: said, not hidden
    assert "--paper" in flat and "--batch-size 100 --groups 10" in flat


def test_backend_without_its_framework_is_a_clear_error(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flax" else real(name, *a))
    assert _cli.main(["robustness", "--backend", "flax", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "backend='flax'" in err and "localnorm[flax" in err and "Fix" in err


def test_confusion_cell_must_be_evaluated():
    from localnorm import LocalNormError
    from localnorm.experiments.robustness import confusion_cell

    levels = {"agn": [0.5, 1.0, 2.0], "contrast": [1.0, 5.0]}
    assert confusion_cell(None, levels) == ("agn", 1.0)
    assert confusion_cell(None, {"contrast": [1.0, 3.0, 5.0]}) == ("contrast", 3.0)
    assert confusion_cell("contrast=5", levels) == ("contrast", 5.0)
    assert confusion_cell("none", levels) is None
    for spec, named in (("mbn=0.3", "'mbn'"), ("agn=3", "'0.5', '1', '2'"), ("agn", "'1'")):
        with pytest.raises(LocalNormError) as info:
            confusion_cell(spec, levels)
        assert named in str(info.value) and "--confusion none" in str(info.value)


def test_unevaluated_confusion_fails_before_any_training(capsys, tmp_path):
    assert _cli.main(["robustness", "--out", str(tmp_path), "--noises", "contrast",
                      "--confusion", "agn=1"]) == 2
    assert "'agn' is not among the selected noises" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


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
