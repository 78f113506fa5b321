"""``localnorm robustness``: the paper's noise-robustness experiment (section 5.2).

Trains one architecture with each normalization (BatchNorm, GroupNorm, LocalNorm with K
groups along the batch axis) on clean images, then measures test accuracy under noise the
networks never saw: the paper's AGN, APN and MBN over a grid of sigma, and the standard
ImageNet-C/CIFAR-10-C corruptions at severities 1 to 5. BatchNorm is evaluated with its
running statistics and with test-batch statistics ("dynamic BN"); LocalNorm under the four
test-time protocols (BATCH, SINGLE, SINGLE-VOTING, VOTING). Everything lands in ``--out``
(see :mod:`localnorm.experiments.report`). Guide: ``docs/guides/robustness.md``.

This module imports only :mod:`argparse` at import time; :func:`run` imports the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["add_parser", "run", "main", "parse_levels"]

#: Default epochs per dataset (chosen so the default digits run takes about 2 minutes on
#: 2 CPU cores; MNIST-like data converge in a few epochs).
DEFAULT_EPOCHS = {"digits": 30, "mnist": 8, "fashion-mnist": 8, "kmnist": 8, "cifar10": 30,
                  "folder": 20}

_BACKENDS = ("torch", "keras", "flax")


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits is embedded in scikit-learn; the others read --data-dir")
    g.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    g.add_argument("--image-size", type=int, default=32, help="--dataset folder: resize to this")
    g.add_argument("--limit-train", type=int, default=None, help="use only this many training images")
    g.add_argument("--limit-test", type=int, default=None, help="use only this many test images")
    g = p.add_argument_group("training")
    g.add_argument("--model", default="mnistnet", choices=MODELS,
                   help="mnistnet: the paper's 16c-16c-32c-32c-512d-1024d network; resnet: ResNet-20")
    g.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                   help=f"among {', '.join(METHODS)}")
    g.add_argument("--groups", type=int, default=4, help="K, LocalNorm's groups along the batch axis")
    g.add_argument("--batch-size", type=int, default=64,
                   help="training batch, also the test batch of BATCH and dynamic BN")
    g.add_argument("--epochs", type=int, default=None,
                   help="default per dataset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()))
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, init, shuffling and noise")
    g.add_argument("--backend", default="torch", choices=_BACKENDS)
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 is often as fast "
                   "for these small networks and much faster on a busy machine")
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
    g.add_argument("--confusion", default="agn=1", metavar="NOISE=LEVEL",
                   help="cell of the confusion-matrix figure (next to the clean one)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="robustness-results", help="output folder")
    g.add_argument("--resume", action="store_true",
                   help="keep the cells (and trained networks) already in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _expand_noises(names: Sequence[str]) -> list[str]:
    from .. import _spec
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
    from .. import _errors
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


def _config(args, device, epochs) -> dict:
    return {
        "dataset": args.dataset, "data_dir": args.data_dir, "seed": args.seed,
        "backend": args.backend, "device": str(device), "model": args.model,
        "groups": args.groups, "batch_size": args.batch_size, "epochs": epochs, "lr": args.lr,
        "vote": args.vote, "limit_train": args.limit_train, "limit_test": args.limit_test,
        "image_size": args.image_size if args.dataset == "folder" else None,
    }


def _check_backend(backend: str) -> None:
    from .. import _errors

    if backend == "torch":
        return
    raise _errors.unsupported_backend(
        backend, ["torch"],
        f"the training loop and evaluation are written for PyTorch; the {backend} runner "
        "is not written yet")


def _noise_seed(seed: int, noise: str, level: float) -> "object":
    import numpy as np

    from .corruptions import NOISES

    return np.random.default_rng([seed, NOISES.index(noise), int(round(level * 1000))])


def run(args: argparse.Namespace) -> int:
    """Run the experiment described by the parsed ``args`` (see :func:`add_parser`)."""
    import sys
    from pathlib import Path

    import numpy as np

    from .. import _errors, _spec
    from . import report
    from .corruptions import corrupt
    from .datasets import load

    _check_backend(args.backend)
    k = _spec.check_num_groups(args.groups)
    import torch
    from tqdm.auto import tqdm

    from . import training
    from .models import build_model

    noises = _expand_noises(args.noises)
    levels = parse_levels(args.levels, noises)
    conf_noise, _, conf_level = args.confusion.partition("=")
    conf_cell = (conf_noise, float(conf_level or 0)) if conf_noise in noises else None

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    device = training.resolve_device(args.device)
    data = load(args.dataset, args.data_dir, seed=args.seed, image_size=args.image_size)
    data = data.subset(args.limit_train, args.limit_test)
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.dataset]
    if "localnorm" in args.methods:
        if len(data.y_train) < max(args.batch_size, 2 * k) or args.batch_size < 2 * k:
            raise _errors.too_few_for_groups("training batch", min(args.batch_size, len(data.y_train)),
                                             2 * k, k)
        if len(data.y_test) < k:
            raise _errors.too_few_for_groups("test split", len(data.y_test), k, k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = report.ResultStore(out, _config(args, device, epochs), data.note, args.resume)
    quiet = args.no_progress
    print(data.note, file=sys.stderr)
    print(f"device={device}, epochs={epochs}, batch_size={args.batch_size}, groups={k}, "
          f"out={out}", file=sys.stderr)

    evaluations = [e for e in training.EVALUATIONS if e.method in args.methods
                   and (e.method != "localnorm" or e.protocol in args.protocols)]
    cells = [("none", 0.0)] + [(n, lv) for n in noises for lv in levels[n]]
    norms = list(dict.fromkeys(e.norm for e in evaluations))

    models = {}
    for norm in norms:
        todo = [e for e in evaluations if e.norm == norm]
        if all(store.done(e.method, e.protocol, n, lv) for e in todo for n, lv in cells):
            continue
        torch.manual_seed(args.seed)
        model = build_model(args.model, norm, data.shape, data.num_classes, k)
        ckpt = out / "checkpoints" / f"{norm}.pt"
        if args.resume and ckpt.is_file():
            log = training.load(model, ckpt, device)
        else:
            bar = tqdm(total=epochs, desc=f"train {norm}", file=sys.stderr, disable=quiet, leave=False)

            def progress(epoch, loss, acc, bar=bar):
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
                bar.update(1)

            log = training.train(model, data.x_train, data.y_train, epochs=epochs,
                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 device=device, progress=progress)
            bar.close()
            training.save(model, ckpt, log)
            print(f"trained {norm}: {log.seconds:.1f}s, final train loss {log.final_loss:.4f}, "
                  f"train accuracy {100 * log.train_accuracy:.2f}%", file=sys.stderr)
        store.training[norm] = {"seconds": round(log.seconds, 2), "final_loss": log.final_loss,
                                "train_accuracy": log.train_accuracy, "epochs": log.epochs}
        store.flush()
        models[norm] = model

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
            labels, agreement = training.evaluate(
                models[e.norm], e, x, batch_size=args.batch_size, seed=args.seed,
                device=device, vote=args.vote)
            record = {
                "method": e.method, "protocol": e.protocol, "noise": noise, "level": level,
                "accuracy": float(np.mean(labels == data.y_test)), "n": int(len(labels)),
                "seed": args.seed, "dataset": args.dataset, "backend": args.backend,
                "agreement": None if agreement is None else float(np.mean(agreement)),
            }
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
    if conf_cell is not None:
        report.write_confusion(out, store, conf_cell[0], conf_cell[1], data.classes)
    print(f"results in {out}/results.json, {out}/results.md and {out}/*.png", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``localnorm robustness`` with ``argv`` (the arguments after the subcommand)."""
    from .._cli import main as cli_main

    return cli_main(["robustness", *(argv or [])])
