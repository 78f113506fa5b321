"""Issue 16 for the CLI: bad options, unwritable outputs, damaged data and result files,
SIGINT and kills. Each case ends in one message (what, where, how to fix) and a non-zero
exit, or in a defined result; never a traceback, never a silently substituted value.

The option and data-file tests need no training; the fault tests train tiny networks on
64 digits for one epoch (about a second per run once torch is imported)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localnorm import LocalNormError
from localnorm.experiments import _cli
from localnorm.experiments import datasets, report

ROOT = Path(__file__).resolve().parents[2]

#: A run of about a second: 64 digits, one epoch, K=2, two networks, two noise cells.
TINY = ["--limit-train", "64", "--limit-test", "16", "--epochs", "1", "--batch-size", "16",
        "--groups", "2", "--threads", "1", "--no-progress", "--methods", "localnorm",
        "batchnorm", "--protocols", "batch", "voting", "--noises", "agn", "--levels",
        "agn=0.5,1", "--confusion", "none"]


def _parse(*argv):
    return _cli.build_parser().parse_args(["robustness", *argv])


# -- options: validated, never substituted ---------------------------------------------

BAD_OPTIONS = [
    ("--groups", "0"), ("--groups", "-3"), ("--groups", "1.5"), ("--groups", "abc"),
    ("--groups", "nan"), ("--batch-size", "0"), ("--batch-size", "1"), ("--batch-size", "-64"),
    ("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "inf"), ("--lr", "nan"),
    ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "inf"), ("--lr", "fast"), ("--seed", "-1"),
    ("--seed", "0.5"), ("--limit-train", "0"), ("--limit-test", "-5"), ("--threads", "-1"),
    ("--image-size", "0"), ("--image-size", "4"),
]


@pytest.mark.parametrize("option,value", BAD_OPTIONS)
def test_bad_option_is_refused_naming_it(option, value, capsys):
    with pytest.raises(SystemExit) as info:
        _cli.main(["robustness", f"{option}={value}", "--out", "never-created"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and f"Received: {option}={value!r}" in err and "Fix:" in err
    assert "Traceback" not in err
    assert not Path("never-created").exists()


def test_explicit_values_are_kept_and_absent_ones_take_the_defaults():
    from localnorm.experiments import robustness

    args = _parse("--groups", "1", "--batch-size", "2", "--epochs", "1")
    assert (args.groups, args.batch_size, args.epochs) == (1, 2, 1)
    args = _parse()
    assert args.groups is None and args.batch_size is None and args.epochs is None
    assert robustness.DEFAULT_GROUPS == 4  # what run() uses for None, and only for None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(["--groups", "--batch-size", "--epochs", "--limit-train",
                               "--limit-test", "--seed", "--threads", "--image-size", "--lr"]),
       value=st.one_of(st.integers(-10**6, 10**6).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.text(max_size=8)))
def test_any_option_value_is_accepted_as_given_or_refused_by_name(option, value):
    """Property: a value is either parsed to itself (a number in range) or refused with
    the option named; no crash, no substitution."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = _cli.build_parser().parse_args(["robustness", f"{option}={value}"])
        except SystemExit as exc:
            assert exc.code == 2
            assert option in err.getvalue() and "Traceback" not in err.getvalue()
            return
    parsed = getattr(args, option[2:].replace("-", "_"))
    kind = float if option == "--lr" else int
    assert parsed == kind(value) and np.isfinite(parsed)
    assert parsed > 0 if option == "--lr" else parsed >= {"--seed": 0, "--threads": 0,
                                                           "--batch-size": 2,
                                                           "--image-size": 8}.get(option, 1)


@pytest.mark.parametrize("levels", [["agn=nan"], ["contrast=nan"], ["contrast=inf"],
                                    ["agn=-1"], ["mbn=2"]])
def test_bad_levels_are_the_projects_error(levels, capsys, tmp_path):
    noises = sorted({lv.split("=")[0] for lv in levels})
    code = _cli.main(["robustness", "--out", str(tmp_path / "o"), "--noises", *noises,
                      "--levels", *levels])
    assert code == 2
    err = capsys.readouterr().err
    assert "Received:" in err and "Traceback" not in err


# -- --out and file errors ------------------------------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if anything is trained or evaluated: the checks come first."""
    from localnorm.experiments.torch_runner import TorchRunner

    def boom(*a, **k):
        raise AssertionError("trained before the check")

    monkeypatch.setattr(TorchRunner, "train", boom)
    monkeypatch.setattr(TorchRunner, "evaluate", boom)


def test_out_naming_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    target = tmp_path / "results"
    target.write_text("not a folder")
    assert _cli.main(["robustness", "--out", str(target), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "file" in err and str(target) in err and "Traceback" not in err
    assert target.read_text() == "not a folder"


def test_out_under_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "f").write_text("x")
    assert _cli.main(["robustness", "--out", str(tmp_path / "f" / "sub"), *TINY]) == 2
    assert "--out" in capsys.readouterr().err


def test_unwritable_out_is_refused_before_training(tmp_path, capsys, no_training, monkeypatch):
    # The tests may run as root, who can write anywhere: simulate the refusal of the OS.
    import tempfile

    def denied(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert _cli.main(["robustness", "--out", str(tmp_path / "ro"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and "--out" in err and "Traceback" not in err


def test_os_errors_of_a_subcommand_are_one_message(monkeypatch, capsys):
    from localnorm.experiments import robustness

    def fails(args):
        raise OSError(28, "No space left on device", "/full/results.json")

    monkeypatch.setattr(robustness, "run", fails)
    parser = _cli.build_parser()
    monkeypatch.setattr(_cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["robustness"].set_defaults(func=fails)
    assert _cli.main(["robustness"]) == 1
    err = capsys.readouterr().err
    assert "/full/results.json" in err and "No space left" in err and "Fix:" in err


# -- damaged data files ------------------------------------------------------------------

def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return head + array.astype({0x08: ">u1", 0x0D: ">f4"}[code]).tobytes()


def _mnist_dir(tmp_path, n_images=40, n_labels=40, gz=True, labels=None, label_code=0x08):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 8, 8))
    labels = rng.integers(0, 10, size=n_labels) if labels is None else np.asarray(labels)
    d = tmp_path / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in (("t10k-images-idx3-ubyte", _idx(images)),
                       ("t10k-labels-idx1-ubyte", _idx(labels, label_code))):
        (d / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return d


@pytest.mark.parametrize("n_images,n_labels", [(40, 36), (36, 40)])
def test_image_and_label_counts_must_match(tmp_path, n_images, n_labels):
    d = _mnist_dir(tmp_path, n_images, n_labels)
    with pytest.raises(LocalNormError) as info:
        datasets.load("mnist", d)
    text = str(info.value)
    assert f"{n_labels} labels" in text and f"{n_images} images" in text


def test_count_mismatch_through_the_cli_exits_2_before_training(tmp_path, capsys, no_training):
    d = _mnist_dir(tmp_path, 40, 36)
    code = _cli.main(["robustness", "--dataset", "mnist", "--data-dir", str(d), "--out",
                      str(tmp_path / "o"), *TINY])
    assert code == 2
    assert "36 labels" in capsys.readouterr().err


def test_labels_out_of_range_or_float_are_refused(tmp_path):
    with pytest.raises(LocalNormError, match="labels range from 0 to 12"):
        datasets.load("mnist", _mnist_dir(tmp_path, 3, 3, labels=[0, 12, 3]))
    with pytest.raises(LocalNormError, match="float32"):
        datasets.load("mnist", _mnist_dir(tmp_path, 3, 3, labels=[0.0, 1.0, 2.0],
                                          label_code=0x0D))


@pytest.mark.parametrize("cut", [3, 10, 30, -9, -1])
def test_truncated_gzip_is_named(tmp_path, cut):
    d = _mnist_dir(tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(LocalNormError) as info:
        datasets.load("mnist", d)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_named(tmp_path):
    d = _mnist_dir(tmp_path)
    path = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[12:20] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(LocalNormError, match="gzip|IDX|label"):
        datasets.load("mnist", d)


def test_idx_header_with_missing_dimensions(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"))
    with pytest.raises(LocalNormError, match="3 dimensions"):
        datasets.read_idx(path)


_DAMAGES = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 400)),
    st.tuples(st.just("magic"), st.integers(0, 3), st.integers(0, 255)),
    st.tuples(st.just("dims"), st.integers(4, 16), st.integers(0, 255)),
    st.tuples(st.just("dtype"), st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF])),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=9)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(damage=_DAMAGES, which=st.sampled_from(["images", "labels"]), gz=st.booleans())
def test_damaged_idx_files_load_consistently_or_fail_with_a_message(tmp_path, damage, which, gz):
    """Property: whatever the damage (truncation, magic, header sizes, dtype code, extra
    bytes), loading either gives one integer label in [0, 10) per image or raises
    LocalNormError naming the file; nothing else escapes."""
    d = _mnist_dir(tmp_path / f"{abs(hash((damage, which, gz)))}", 12, 12, gz=False)
    path = d / f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
    raw = bytearray(path.read_bytes())
    kind = damage[0]
    if kind == "truncate":
        raw = raw[:damage[1]]
    elif kind in ("magic", "dims"):
        if damage[1] < len(raw):
            raw[damage[1]] = damage[2]
    elif kind == "dtype":
        raw[2] = damage[1]
    else:
        raw += damage[1]
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    if gz:
        path.rename(path.with_name(path.name + ".gz"))
    try:
        data = datasets.load("mnist", d)
    except LocalNormError as exc:
        assert "Received:" in str(exc) and "idx" in str(exc)
        return
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert len(x) == len(y) and y.dtype == np.int64
        assert y.min() >= 0 and y.max() < 10 and np.all(np.isfinite(x))


def test_folder_of_mixed_sizes_and_modes_is_resized(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i, (size, mode) in enumerate([((5, 9), "L"), ((30, 12), "RGB"), ((16, 16), "RGBA"),
                                          ((7, 7), "P"), ((40, 3), "L")]):
            arr = rng.integers(0, 255, size=size[::-1] + ((4,) if mode == "RGBA" else (3,)
                                                          if mode == "RGB" else ()))
            Image.fromarray(arr.astype(np.uint8), mode if mode != "P" else "L").convert(
                mode).save(tmp_path / c / f"{i}.png")
    data = datasets.load("folder", tmp_path, image_size=12)
    assert data.x_train.shape[1:] == (3, 12, 12) and len(data.y_train) + len(data.y_test) == 10


def test_undecodable_image_in_a_folder_is_named(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    with pytest.raises(LocalNormError) as info:
        datasets.load("folder", tmp_path)
    assert "0.png" in str(info.value) and "decoded" in str(info.value)


# -- --resume with damaged files -------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted tiny run: the records every interrupted one must reproduce."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("finished")
    assert _cli.main(["robustness", "--out", str(out), *TINY]) == 0
    return out


def _doc(out):
    return json.loads((Path(out) / "results.json").read_text())


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", [
    lambda t: t[: len(t) // 2],
    lambda t: "not json",
    lambda t: json.dumps({"records": []}),
    lambda t: json.dumps({**json.loads(t), "records": [{"method": "x"}]}),
    lambda t: t.replace('"wall_seconds": ', '"wall_seconds": "abc", "x": ', 1),
], ids=["truncated", "not-json", "no-config", "bad-record", "bad-wall-time"])
def test_resume_with_a_damaged_results_json(finished, tmp_path, capsys, damage, no_training):
    out = _copy(finished, tmp_path / "o")
    path = out / "results.json"
    path.write_text(damage(path.read_text()))
    assert _cli.main(["robustness", "--out", str(out), *TINY, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--resume" in err and "Traceback" not in err


def test_resume_with_a_damaged_checkpoint(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "o")
    doc = _doc(out)
    doc["records"] = [r for r in doc["records"] if r["method"] != "localnorm"]
    (out / "results.json").write_text(json.dumps(doc))
    ckpt = out / "checkpoints" / "localnorm.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert _cli.main(["robustness", "--out", str(out), *TINY, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "delete" in err and "Traceback" not in err


# -- SIGINT and kills ------------------------------------------------------------------

class _Killed(BaseException):
    """Stops a run where it stands, as SIGKILL would: nothing catches it, nothing is
    flushed (a BaseException that is not KeyboardInterrupt)."""


def _records_key(doc):
    return sorted(json.dumps(r, sort_keys=True) for r in doc["records"])


def _kill_at(monkeypatch, point: int, interrupt: type[BaseException]):
    """Raise ``interrupt`` at the ``point``-th event of the run: a results.json write
    (before or after it lands), a training epoch, an evaluation."""
    from localnorm.experiments.torch_runner import TorchRunner

    count = {"n": 0}

    def tick():
        count["n"] += 1
        if count["n"] == point:
            raise interrupt()

    real_write, real_eval, real_train = (report.atomic_write_text, TorchRunner.evaluate,
                                         TorchRunner.train)

    def write(path, text):
        tick()
        real_write(path, text)
        tick()

    def evaluate(self, *a, **k):
        tick()
        return real_eval(self, *a, **k)

    def train(self, *a, progress=None, **k):
        def p(*pa):
            tick()
            if progress is not None:
                progress(*pa)
        return real_train(self, *a, progress=p, **k)

    monkeypatch.setattr(report, "atomic_write_text", write)
    monkeypatch.setattr(TorchRunner, "evaluate", evaluate)
    monkeypatch.setattr(TorchRunner, "train", train)
    return count


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_killed_run_resumes_to_the_uninterrupted_records(finished, tmp_path, monkeypatch, seed):
    """Kill at a seeded random point: results.json stays valid JSON (or absent, when the
    kill came before the first write), the resumed run's records equal the uninterrupted
    run's, and the wall time counts both attempts."""
    out = tmp_path / "o"
    point = int(np.random.default_rng(seed).integers(1, 24))
    with monkeypatch.context() as m:
        count = _kill_at(m, point, _Killed)
        try:
            _cli.main(["robustness", "--out", str(out), *TINY])
            killed = False
        except _Killed:
            killed = True
    assert killed, f"the run had only {count['n']} events; pick points below that"
    first = _doc(out) if (out / "results.json").exists() else None
    t0 = time.perf_counter()
    assert _cli.main(["robustness", "--out", str(out), *TINY, "--resume"]) == 0
    second = time.perf_counter() - t0
    doc = _doc(out)
    assert _records_key(doc) == _records_key(_doc(finished))
    if first is not None:
        assert doc["config"]["attempts"] == 2
        assert first["config"]["wall_seconds"] <= doc["config"]["wall_seconds"] <= (
            first["config"]["wall_seconds"] + second + 0.2)


@pytest.mark.parametrize("point", [2, 9])
def test_sigint_keeps_the_time_and_says_how_to_resume(finished, tmp_path, monkeypatch, capsys,
                                                      point):
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        _kill_at(m, point, KeyboardInterrupt)
        assert _cli.main(["robustness", "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    line = err[err.index("Resume with: ") + len("Resume with: "):].strip()
    assert line.startswith("localnorm robustness") and line.endswith("--resume")
    doc = _doc(out)  # flushed on SIGINT, with this attempt's time
    assert doc["config"]["wall_seconds"] > 0
    import shlex

    argv = shlex.split(line)[1:]
    assert _cli.main(argv) == 0
    assert _records_key(_doc(out)) == _records_key(_doc(finished))


def test_wall_time_adds_every_attempt_up_to_its_last_write(tmp_path, monkeypatch):
    """With a fake clock: 5 s into attempt 1 a cell is written and the run is killed 2 s
    later; attempt 2 runs 3 s. The record is 5 + 3: all the time up to each attempt's
    last write (what a kill loses is the time after it)."""
    from localnorm.experiments import report as rep

    cfg = {"dataset": "digits", "seed": 0}
    now = {"t": 100.0}
    monkeypatch.setattr(time, "perf_counter", lambda: now["t"])
    store = rep.ResultStore(tmp_path, cfg, "note", resume=False)
    now["t"] += 5
    store.add({"method": "m", "protocol": "p", "noise": "none", "level": 0.0, "accuracy": 1})
    now["t"] += 2  # killed here
    assert _doc(tmp_path)["config"]["wall_seconds"] == 5.0
    again = rep.ResultStore(tmp_path, cfg, "note", resume=True)
    now["t"] += 3
    again.flush()
    assert _doc(tmp_path)["config"] == {**cfg, "attempts": 2, "wall_seconds": 8.0}


@pytest.mark.slow  # two cold subprocesses (torch, matplotlib imports): about a minute
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_and_sigkill_of_the_command(finished, tmp_path):
    """The real signals, in a subprocess: SIGINT exits 130 with the resume line and no
    traceback; SIGKILL leaves a results.json that is valid JSON; both resume to the
    uninterrupted records."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / sig.name
        cmd = [sys.executable, "-m", "localnorm", "robustness", "--out", str(out), *TINY]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 120
        while not (out / "results.json").exists() and time.time() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            continue  # finished before the signal: nothing to resume (a fast machine)
        json.loads((out / "results.json").read_text())  # valid JSON after the signal
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "Resume with:" in err and "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL
        assert _cli.main(["robustness", "--out", str(out), *TINY, "--resume"]) == 0
        assert _records_key(_doc(out)) == _records_key(_doc(finished))
