"""``localnorm robustness``: the paper's noise-robustness experiment (section 5.2).

Trains one architecture with each normalization (BatchNorm, GroupNorm, LocalNorm with K
groups along the batch axis) on clean images, then measures test accuracy under noise the
networks never saw: the paper's AGN, APN and MBN over a grid of sigma, and the standard
ImageNet-C/CIFAR-10-C corruptions at severities 1 to 5. BatchNorm is evaluated with its
running statistics and with test-batch statistics ("dynamic BN"); LocalNorm under the four
test-time protocols (BATCH, SINGLE, SINGLE-VOTING, VOTING). Everything lands in ``--out``
(see :mod:`localnorm.experiments.report`). Guide: ``docs/guides/robustness.md``.

The framework-specific half (build, train, evaluate, checkpoint) is a
:class:`~localnorm.experiments.training.Runner`, one module per ``--backend`` (torch,
keras, flax), imported only when chosen. This module imports only :mod:`argparse` at
import time; :func:`run` imports the rest.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

__all__ = ["add_parser", "run", "main", "parse_levels", "confusion_cell"]

#: Default epochs per dataset (the default digits run fits in 5 minutes on 2 CPU cores;
#: MNIST-like data converge in a few epochs).
DEFAULT_EPOCHS = {"digits": 30, "mnist": 8, "fashion-mnist": 8, "kmnist": 8, "cifar10": 30,
                  "folder": 20}

#: ``--quick``: the subset and epochs of a smoke run (each unless given explicitly).
QUICK = {"limit_train": 512, "limit_test": 256, "epochs": 2}

#: Training batch and K without ``--paper`` (a small batch for small datasets).
DEFAULT_BATCH_SIZE, DEFAULT_GROUPS = 64, 4

#: ``--paper``: the paper's MNIST setup (section 5.1), batch 100 split into K=10 groups
#: of 10 images along the batch axis.
PAPER_BATCH_SIZE, PAPER_GROUPS = 100, 10

_BACKENDS = ("torch", "keras", "flax")

_BACKEND_HELP = (
    "torch (default; CUDA when present), keras (Keras 3 on the backend named by the "
    "KERAS_BACKEND environment variable: tensorflow, jax or torch; GPU when that backend's "
    "CUDA build is installed) or flax (Flax NNX on JAX; GPU only with a CUDA build of "
    "jaxlib). The same networks, data, noise, protocols and initialization scheme; each "
    "framework draws its own random weights, so numbers agree in kind, not digit for digit"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None and False (those options say their default in words)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _number(option: str, kind: type, minimum: float, fix: str, *, strict: bool = False):
    """An argparse ``type`` for ``option``: a finite ``kind`` (int or float) >= ``minimum``
    (> with ``strict``). A bad value is refused with the project's message, naming the
    option; nothing is ever replaced by a default."""

    def parse(text: str):
        from . import _errors

        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        expected = f"{'an int' if kind is int else 'a finite number'} {bound}"
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                str(_errors.bad_option(option, text, expected, fix))) from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                str(_errors.bad_option(option, text, expected, fix)))
        return value

    parse.__name__ = f"{option} value"
    return parse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``robustness`` subcommand on ``subparsers``."""
    from .corruptions import CORRUPTIONS, NOISES
    from .datasets import DATASETS
    from .models import MODELS
    from .training import METHODS

    p = subparsers.add_parser(
        "robustness",
        help="train BatchNorm/GroupNorm/LocalNorm networks and measure accuracy under noise",
        description=__doc__.split("\n\n")[1],
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits is embedded in scikit-learn; the others read --data-dir")
    g.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    g.add_argument("--test-dir", default=None,
                   help="cifar10 as JPEG files: the test folder (<class>/*.jpg); default "
                   "test/ beside train/ in --data-dir, or without one a seeded stratified "
                   "45,000/5,000 split of train/")
    g.add_argument("--image-size", default=32, type=_number(
        "--image-size", int, 8, "pass e.g. --image-size 32 (the networks need 8x8 images or more)"), help="--dataset folder: resize to this")
    g.add_argument("--limit-train", default=None, type=_number(
        "--limit-train", int, 1, "pass a positive number of images, or leave the option out for all"), help="use only this many training images")
    g.add_argument("--limit-test", default=None, type=_number(
        "--limit-test", int, 1, "pass a positive number of images, or leave the option out for all"), help="use only this many test images")
    g.add_argument("--quick", action="store_true",
                   help=f"a smoke run of seconds to a minute: --limit-train {QUICK['limit_train']} "
                   f"--limit-test {QUICK['limit_test']} --epochs {QUICK['epochs']}, unless given "
                   "explicitly")
    g = p.add_argument_group("training")
    g.add_argument("--model", default="mnistnet", choices=MODELS,
                   help="mnistnet: the paper's 16c-16c-32c-32c-512d-1024d network; resnet: ResNet-20; "
                   "vgg19: the paper's CIFAR-10 VGG-19 (16 convolutions, 64-512 channels, "
                   "the normalization after each); vgg19-narrow: the same at a quarter of "
                   "the width (both VGGs: --backend torch only)")
    g.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                   help=f"among {', '.join(METHODS)}")
    g.add_argument("--groups", default=None, type=_number(
        "--groups", int, 1, f"pass K >= 1 groups along the batch axis (default {DEFAULT_GROUPS})"),
                   help=f"K, LocalNorm's groups along the batch axis (default {DEFAULT_GROUPS}, "
                   f"with --paper {PAPER_GROUPS})")
    g.add_argument("--batch-size", default=None, type=_number(
        "--batch-size", int, 2, "pass at least 2 (BatchNorm needs 2 samples per batch; "
        f"LocalNorm 2 per group along the batch axis); default {DEFAULT_BATCH_SIZE}"),
                   help="training batch, also the test batch of BATCH and dynamic BN "
                   f"(default {DEFAULT_BATCH_SIZE}, with --paper {PAPER_BATCH_SIZE})")
    g.add_argument("--paper", action="store_true",
                   help=f"the paper's MNIST setup: --batch-size {PAPER_BATCH_SIZE} --groups "
                   f"{PAPER_GROUPS} (groups of 10 images), unless given explicitly")
    g.add_argument("--epochs", default=None, type=_number(
        "--epochs", int, 1, "pass at least 1 (0 would evaluate untrained networks), or leave "
        "it out for the dataset's default"),
                   help="default per dataset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()))
    g.add_argument("--lr", default=1e-3, type=_number(
        "--lr", float, 0, "pass a positive learning rate such as 1e-3", strict=True), help="Adam learning rate")
    g.add_argument("--seed", default=0, type=_number(
        "--seed", int, 0, "pass an int >= 0, e.g. --seed 0"), help="seeds the split, init, shuffling and noise")
    g.add_argument("--backend", default="torch", choices=_BACKENDS, help=_BACKEND_HELP)
    g.add_argument("--device", default="auto",
                   help="auto (the backend's default device: its GPU when present), cpu, "
                   "cuda, cuda:1, ...")
    g.add_argument("--threads", default=1, type=_number(
        "--threads", int, 0, "pass 1 (the default), another positive count, or 0 for the "
        "framework's own default"),
                   help="CPU threads of the framework (0: the framework's own default, "
                   "usually all cores); for these small networks 2 threads trained about 10x "
                   "slower than 1 on a busy 2-core machine")
    g = p.add_argument_group("evaluation")
    g.add_argument("--protocols", nargs="+", default=["batch", "single", "single-voting", "voting"],
                   choices=["batch", "single", "single-voting", "voting"], metavar="PROTOCOL",
                   help="LocalNorm test-time protocols")
    g.add_argument("--vote", default="hard", choices=["hard", "soft"], help="voting protocols' vote")
    g.add_argument("--noises", nargs="+", default=["all"], metavar="NOISE",
                   help=f"names among {', '.join(NOISES)}, or paper (agn apn mbn), corruptions "
                   f"({' '.join(CORRUPTIONS)}), all (uniform is the original code's 'gaussian' "
                   "noise, x * (1 + sigma * U(0, 1)))")
    g.add_argument("--levels", nargs="+", default=None, metavar="LEVEL",
                   help="numbers for every selected noise, or NOISE=L1,L2,... (default: each "
                   "noise's grid; the clean set is always evaluated)")
    g.add_argument("--confusion", default=None, metavar="NOISE=LEVEL",
                   help="cell of the confusion-matrix figure, next to the clean one: a noise "
                   "and level of this run, or none (default: agn=1 when evaluated, else the "
                   "first noise at its middle level)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="robustness-results", help="output folder")
    g.add_argument("--resume", action="store_true",
                   help="keep the cells (and trained networks) already in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _expand_noises(names: Sequence[str]) -> list[str]:
    from localnorm import _spec
    from .corruptions import CORRUPTIONS, NOISES, PAPER_NOISES

    aliases = {"all": NOISES, "paper": PAPER_NOISES, "corruptions": CORRUPTIONS}
    out: list[str] = []
    for name in names:
        for n in aliases.get(name, (name,)):
            _spec.check_choice("noise", n, NOISES + tuple(aliases))
            if n not in out:
                out.append(n)
    return out


def parse_levels(spec: Sequence[str] | None, noises: Sequence[str]) -> dict[str, list[float]]:
    """Levels per noise from ``--levels`` (see its help); validated for each noise.

    Level 0 (the clean images) is dropped: it is evaluated once, as noise ``"none"``.
    """
    from . import _errors
    from .corruptions import DEFAULT_LEVELS, check_level

    levels = {n: list(DEFAULT_LEVELS[n]) for n in noises}
    if spec:
        common, per = [], {}
        for item in spec:
            name, sep, values = item.partition("=")
            target = values if sep else name
            try:
                parsed = [float(v) for v in target.split(",") if v.strip()]
            except ValueError:
                raise _errors.bad_levels(list(spec), f"{item!r} is not a number list") from None
            if sep:
                if name not in noises:
                    raise _errors.bad_levels(list(spec), f"{name!r} is not among the selected "
                                             f"noises {list(noises)}")
                per[name] = parsed
            else:
                common += parsed
        for n in noises:
            if n in per:
                levels[n] = per[n]
            elif common:
                levels[n] = list(common)
    return {n: sorted({check_level(n, lv) for lv in lvs if lv != 0}) for n, lvs in levels.items()}


def confusion_cell(spec: str | None, levels: dict[str, list[float]]) -> tuple[str, float] | None:
    """The (noise, level) of the confusion-matrix figure from ``--confusion`` (see its
    help), checked against the noises and levels of this run; None for ``none``."""
    from . import _errors

    if spec is None:
        if 1.0 in levels.get("agn", []):
            return ("agn", 1.0)
        first = next((n for n, lvs in levels.items() if lvs), None)
        return None if first is None else (first, levels[first][len(levels[first]) // 2])
    if spec.strip().lower() == "none":
        return None
    noise, sep, level = spec.partition("=")
    if noise not in levels:
        raise _errors.bad_confusion(spec, f"{noise!r} is not among the selected noises "
                                    f"{list(levels)}")
    try:
        value = float(level) if sep else math.nan
    except ValueError:
        value = math.nan
    if value not in levels[noise]:
        raise _errors.bad_confusion(spec, f"the levels of {noise!r} in this run are "
                                    f"{[f'{lv:g}' for lv in levels[noise]]}")
    return (noise, value)


def _data_dir(path: str | None) -> str | None:
    from pathlib import Path

    return None if path is None else str(Path(path).expanduser().resolve())


def _config(args, runner, epochs: int, batch_size: int, k: int) -> dict:
    import shlex

    argv = getattr(args, "argv", None)
    env = "".join(f"{k.upper()}={v} " for k, v in runner.details.items() if k == "keras_backend")
    return {
        "dataset": args.dataset, "data_dir": _data_dir(args.data_dir),
        "test_dir": _data_dir(getattr(args, "test_dir", None)), "seed": args.seed,
        "backend": args.backend, **runner.details, "framework": runner.framework,
        "device": runner.device, "threads": args.threads, "model": args.model,
        "groups": k, "batch_size": batch_size, "epochs": epochs, "lr": args.lr,
        "vote": args.vote, "limit_train": args.limit_train, "limit_test": args.limit_test,
        "image_size": args.image_size if args.dataset == "folder" else None,
        "argv": None if argv is None else list(argv),
        "command": None if argv is None else f"{env}localnorm {shlex.join(argv)}",
    }


def _noise_seed(seed: int, noise: str, level: float) -> "object":
    import numpy as np

    from .corruptions import NOISES

    return np.random.default_rng([seed, NOISES.index(noise), int(round(level * 1000))])


def run(args: argparse.Namespace) -> int:
    """Run the experiment described by the parsed ``args`` (see :func:`add_parser`).

    Everything that can be checked before training is: the options, ``--out`` (created
    and written to), the data (counts, formats) and the batch against K. A SIGINT
    (Ctrl-C) writes ``results.json`` with this attempt's wall time before it propagates
    (the command line then says how to resume)."""
    import time
    from pathlib import Path

    from localnorm import _spec
    from . import _errors
    from . import report, training
    from .datasets import load

    t_start = time.perf_counter()
    for name, value in QUICK.items():
        if getattr(args, "quick", False) and getattr(args, name) is None:
            setattr(args, name, value)
    # None means "not given"; an explicit value (0 included) is never replaced by a default.
    batch_size = args.batch_size if args.batch_size is not None else (
        PAPER_BATCH_SIZE if args.paper else DEFAULT_BATCH_SIZE)
    k = _spec.check_num_groups(args.groups if args.groups is not None else (
        PAPER_GROUPS if args.paper else DEFAULT_GROUPS))
    noises = _expand_noises(args.noises)
    levels = parse_levels(args.levels, noises)
    conf_cell = confusion_cell(args.confusion, levels)
    from .models import BACKEND_MODELS

    if args.model not in BACKEND_MODELS[args.backend]:
        raise _errors.model_not_in_backend(args.model, args.backend, BACKEND_MODELS[args.backend])
    out = _writable_out(Path(args.out))
    runner = training.get_runner(args.backend, device=args.device, threads=args.threads)
    data = load(args.dataset, args.data_dir, seed=args.seed, image_size=args.image_size,
                test_dir=getattr(args, "test_dir", None))
    data = data.subset(args.limit_train, args.limit_test)
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.dataset]
    if "localnorm" in args.methods:
        if len(data.y_train) < max(batch_size, 2 * k) or batch_size < 2 * k:
            raise _errors.too_few_for_groups("training batch", min(batch_size, len(data.y_train)),
                                             2 * k, k)
        if len(data.y_test) < k:
            raise _errors.too_few_for_groups("test split", len(data.y_test), k, k)
    store = report.ResultStore(out, _config(args, runner, epochs, batch_size, k), data.note,
                               args.resume, started=t_start)
    try:
        return _run_cells(args, runner, data, store, out, epochs, batch_size, k, noises,
                          levels, conf_cell)
    except KeyboardInterrupt:
        store.flush()  # the wall time of this attempt, for --resume
        raise


def _writable_out(out):
    """Create ``--out`` (and its checkpoints folder) and prove this user can write there,
    before any data is read or network trained; a
    :func:`~localnorm._errors.out_not_writable` error otherwise."""
    import os
    import tempfile

    from . import _errors

    if out.exists() and not out.is_dir():
        raise _errors.out_not_writable(out, "it is an existing file, not a folder")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "checkpoints"):
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise _errors.out_not_writable(
            out, f"{exc.strerror or type(exc).__name__} ({type(exc).__name__}"
            f"{'' if exc.filename is None else ' on ' + repr(str(exc.filename))})") from None
    return out


def _run_cells(args, runner, data, store, out, epochs, batch_size, k, noises, levels,
               conf_cell) -> int:
    """Train (or, with ``--resume``, load) the networks and evaluate every cell not yet in
    ``store``; see :func:`run`."""
    import sys

    import numpy as np
    from tqdm.auto import tqdm

    from .uncertainty import summarize

    from . import _errors
    from . import report, training
    from .corruptions import corrupt

    quiet = args.no_progress
    print(data.note, file=sys.stderr)
    print(f"backend={runner.framework}, device={runner.device}, threads={args.threads}, "
          f"epochs={epochs}, batch_size={batch_size}, groups={k}, out={out}", file=sys.stderr)

    evaluations = [e for e in training.EVALUATIONS if e.method in args.methods
                   and (e.method != "localnorm" or e.protocol in args.protocols)]
    cells = [("none", 0.0)] + [(n, lv) for n in noises for lv in levels[n]]
    norms = list(dict.fromkeys(e.norm for e in evaluations))

    nets = {}
    for norm in norms:
        todo = [e for e in evaluations if e.norm == norm]
        if all(store.done(e.method, e.protocol, n, lv) for e in todo for n, lv in cells):
            continue
        net = runner.build(args.model, norm, data.shape, data.num_classes, k, args.seed)
        ckpt = out / "checkpoints" / f"{norm}{runner.checkpoint_suffix}"
        if args.resume and ckpt.is_file():
            try:
                log = runner.load(net, ckpt)
            except _errors.LocalNormError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged file fails in any library
                raise _errors.bad_checkpoint(ckpt, f"{type(exc).__name__}: {exc}"[:300]) from None
        else:
            bar = tqdm(total=epochs, desc=f"train {norm}", file=sys.stderr, disable=quiet, leave=False)

            def progress(epoch, loss, acc, bar=bar):
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
                bar.update(1)
                store.flush()  # the wall time so far, should the run be killed

            log = runner.train(net, data.x_train, data.y_train, epochs=epochs,
                               batch_size=batch_size, lr=args.lr, seed=args.seed,
                               progress=progress)
            bar.close()
            runner.save(net, ckpt, log)
            print(f"trained {norm}: {log.seconds:.1f}s, final train loss {log.final_loss:.4f}, "
                  f"train accuracy {100 * log.train_accuracy:.2f}%", file=sys.stderr)
        store.training[norm] = {"seconds": round(log.seconds, 2), "final_loss": log.final_loss,
                                "train_accuracy": log.train_accuracy, "epochs": log.epochs}
        store.flush()
        nets[norm] = net

    pending = [(n, lv, e) for n, lv in cells for e in evaluations
               if not store.done(e.method, e.protocol, n, lv)]
    bar = tqdm(total=len(pending), desc="evaluate", file=sys.stderr, disable=quiet)
    for noise, level in cells:
        todo = [e for e in evaluations if not store.done(e.method, e.protocol, noise, level)]
        if not todo:
            continue
        x = data.x_test if noise == "none" else corrupt(
            data.x_test, noise, level, seed=_noise_seed(args.seed, noise, level))
        for e in todo:
            bar.set_postfix_str(f"{e.label} {noise} {level:g}")
            labels, agreement, msp = runner.evaluate_scores(
                nets[e.norm], e, x, batch_size=batch_size, num_groups=k, seed=args.seed,
                vote=args.vote)
            record = {
                "method": e.method, "protocol": e.protocol, "noise": noise, "level": level,
                "accuracy": float(np.mean(labels == data.y_test)), "n": int(len(labels)),
                "seed": args.seed, "dataset": args.dataset, "backend": args.backend,
                "agreement": None if agreement is None else float(np.mean(agreement)),
            }
            signal = ("agreement", agreement) if agreement is not None else ("max_softmax", msp)
            if signal[1] is not None:
                record["uncertainty"] = summarize(signal[1], labels == data.y_test, signal[0])
            if noise == "none" or (noise, level) == conf_cell:
                cm = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
                np.add.at(cm, (data.y_test, labels), 1)
                record["confusion"] = cm.tolist()
            store.add(record)
            bar.update(1)
        report.write_markdown(out / "results.md", store, noises)
    bar.close()
    store.flush()
    report.write_markdown(out / "results.md", store, noises)
    report.write_plots(out, store, noises)
    report.write_uncertainty_plots(out, store)
    if conf_cell is not None:
        report.write_confusion(out, store, conf_cell[0], conf_cell[1], data.classes)
    print(f"results in {out}/results.json, {out}/results.md and {out}/*.png "
          f"({store.config['wall_seconds']:.0f} s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``localnorm robustness`` with ``argv`` (the arguments after the subcommand)."""
    from ._cli import main as cli_main

    return cli_main(["robustness", *(argv or [])])
