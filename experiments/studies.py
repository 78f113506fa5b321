"""Studies built on ``localnorm robustness``: the groups ablation and the seed summary.

``localnorm ablate-groups``
    Trains the same network with LocalNorm at each K in ``--groups`` (groups along the
    batch axis; default 1, 2, 4, 8, 16) and measures it clean and under the paper's AGN
    (default sigma 0.5, 1, 2) under every test-time protocol. K = 1 is BatchNorm trained
    as usual (one group: the statistics of the whole batch) and evaluated with test-time
    statistics, so the table answers: does splitting the batch into groups add robustness
    beyond recomputing the statistics on the test images, and what does it cost clean?
    Each K is one ``localnorm robustness`` run in ``--out/k<K>/`` (its own results.json,
    command and wall time); ``--out`` gets ``ablation.json``, ``ablation.md`` and
    ``ablation.png``.
``localnorm summarize-seeds``
    Reads the results.json of runs that differ only in ``--seed`` and writes
    ``seeds.json`` and ``seeds.md``: the accuracy of every evaluation clean and under AGN
    as mean, sample standard deviation and range over the seeds, the ratio of LocalNorm to
    BatchNorm at each AGN sigma per seed, and the same for the AUROC of the confidence.

Both import only :mod:`argparse` at module level.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "ablate_groups", "summarize_seeds", "DEFAULT_ABLATION_GROUPS",
           "DEFAULT_ABLATION_LEVELS"]

#: ``ablate-groups``: the K values (groups along the batch axis) trained by default.
DEFAULT_ABLATION_GROUPS = (1, 2, 4, 8, 16)

#: ``ablate-groups``: the AGN sigmas evaluated by default (the clean set always is).
DEFAULT_ABLATION_LEVELS = (0.5, 1.0, 2.0)

#: ``--quick``: a run of a few seconds on the embedded digits (the tests' setting).
QUICK = {"limit_train": 512, "limit_test": 256, "epochs": 2}


def add_parser(subparsers) -> None:
    """Register ``ablate-groups`` and ``summarize-seeds`` on ``subparsers``."""
    from .datasets import DATASETS
    from .models import MODELS
    from .robustness import _HelpFormatter

    p = subparsers.add_parser(
        "ablate-groups",
        help="train LocalNorm with K = 1, 2, 4, 8, 16 groups along the batch axis; accuracy "
        "clean and under AGN per protocol",
        description=__doc__.split("\n\n")[1].split("``localnorm summarize-seeds``")[0],
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--groups", nargs="+", type=int, default=list(DEFAULT_ABLATION_GROUPS),
                   metavar="K", help="the K values, groups along the batch axis (1 = BatchNorm "
                   "trained as usual, evaluated with test-time statistics)")
    p.add_argument("--levels", nargs="+", default=[f"{v:g}" for v in DEFAULT_ABLATION_LEVELS],
                   metavar="SIGMA", help="AGN sigmas (the clean set is always evaluated)")
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--test-dir", default=None, help="cifar10 as JPEG files: the test folder")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--model", default="mnistnet", choices=MODELS)
    p.add_argument("--batch-size", type=int, default=64,
                   help="training batch (and BATCH's test batch); must split into groups of "
                   "at least 2 images for the largest K")
    p.add_argument("--epochs", type=int, default=None, help="default: robustness's per dataset")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true",
                   help=f"a few seconds: {QUICK['limit_train']} train / {QUICK['limit_test']} "
                   f"test images, {QUICK['epochs']} epochs, unless given explicitly")
    p.add_argument("--out", default="ablation-results", help="output folder")
    p.add_argument("--resume", action="store_true", help="keep the K runs already in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=ablate_groups)

    s = subparsers.add_parser(
        "summarize-seeds",
        help="mean and spread over seeds of robustness runs (clean, AGN, LocalNorm/BatchNorm)",
        description=__doc__.split("``localnorm summarize-seeds``")[1].split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    s.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="folders of localnorm robustness runs that differ only in --seed")
    s.add_argument("--out", required=True, help="folder for seeds.json and seeds.md")
    s.set_defaults(func=summarize_seeds)


def _check_groups(groups, batch_size: int) -> list[int]:
    from . import _errors

    ks = list(groups)
    if len(set(ks)) != len(ks):
        raise _errors.bad_group_list(ks, batch_size, "some K appear twice")
    bad = [k for k in ks if k < 1 or batch_size % k or batch_size // k < 2]
    if bad:
        raise _errors.bad_group_list(ks, batch_size, f"K={bad} do not split the batch of "
                                     f"{batch_size} into equal groups of 2 or more images")
    return sorted(ks)


def ablate_groups(args: argparse.Namespace) -> int:
    """Run the groups ablation described by ``args`` (see :func:`add_parser`)."""
    import json
    import shlex
    import sys
    import time
    from pathlib import Path

    from ._cli import main as cli_main
    from .corruptions import check_level
    from .report import atomic_write_text

    for name, value in QUICK.items():
        if args.quick and getattr(args, name) is None:
            setattr(args, name, value)
    ks = _check_groups(args.groups, args.batch_size)
    levels = sorted({check_level("agn", float(v)) for v in args.levels} - {0.0})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = {}
    for k in ks:
        argv = ["robustness", "--dataset", args.dataset, "--model", args.model,
                "--methods", "localnorm", "--groups", str(k), "--batch-size", str(args.batch_size),
                "--noises", "agn", "--levels", *[f"{v:g}" for v in levels], "--confusion", "none",
                "--lr", f"{args.lr:g}", "--seed", str(args.seed), "--threads", str(args.threads),
                "--device", args.device, "--out", str(out / f"k{k}")]
        for opt in ("data_dir", "test_dir", "limit_train", "limit_test", "epochs"):
            if getattr(args, opt) is not None:
                argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
        if args.resume:
            argv.append("--resume")
        if args.no_progress:
            argv.append("--no-progress")
        print(f"ablate-groups: K={k}: localnorm {shlex.join(argv)}", file=sys.stderr)
        status = cli_main(argv)
        if status:
            return status
        runs[k] = json.loads((out / f"k{k}" / "results.json").read_text(encoding="utf-8"))
    summary = _ablation_summary(runs, levels)
    summary["command"] = (None if getattr(args, "argv", None) is None
                          else f"localnorm {shlex.join(args.argv)}")
    # The K runs' own wall times (each summed over its --resume passes), so a resumed
    # ablation reports the time it took in all, not that of its last pass.
    walls = [run["config"].get("wall_seconds") for run in runs.values()]
    summary["wall_seconds"] = (round(sum(walls), 1) if all(w is not None for w in walls)
                               else round(time.perf_counter() - t0, 1))
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "ablation.md", _ablation_markdown(summary))
    _ablation_plot(out / "ablation.png", summary)
    print(f"ablation in {out}/ablation.json, ablation.md and ablation.png "
          f"({summary['wall_seconds']:.0f} s)", file=sys.stderr)
    return 0


def _ablation_summary(runs: dict, levels: list[float]) -> dict:
    from localnorm import _spec

    first = next(iter(runs.values()))
    cfg = first["config"]
    rows = []
    for k, run in runs.items():
        for protocol in _spec.PROTOCOLS:
            acc = {}
            for r in run["records"]:
                if r["method"] == "localnorm" and r["protocol"] == protocol:
                    acc["clean" if r["noise"] == "none" else f"agn {r['level']:g}"] = r["accuracy"]
            if acc:
                rows.append({"groups": k, "protocol": protocol, "accuracy": acc,
                             "train_seconds": run["training"].get("localnorm", {}).get("seconds")})
    return {"dataset": cfg["dataset"], "data": first["data"], "model": cfg["model"],
            "batch_size": cfg["batch_size"], "epochs": cfg["epochs"], "seed": cfg["seed"],
            "framework": cfg.get("framework"), "threads": cfg.get("threads"),
            "levels": levels, "groups": list(runs), "rows": rows,
            "runs": {str(k): run["config"].get("command") for k, run in runs.items()}}


def _ablation_markdown(s: dict) -> str:
    cols = ["clean"] + [f"agn {v:g}" for v in s["levels"]]
    lines = [f"# Groups ablation: {s['dataset']}, `{s['model']}`", "", s["data"], "",
             f"LocalNorm trained with K groups along the batch axis (batch {s['batch_size']}, "
             f"so groups of batch/K images), {s['epochs']} epochs, seed {s['seed']}, "
             f"{s['framework']}. K = 1 is BatchNorm trained as usual, evaluated with "
             "test-time statistics (BATCH: the statistics of each test batch). Accuracy % on "
             "the test split, clean and under AGN (sigma).", ""]
    if s.get("command"):
        lines += ["Command:", "", "```bash", s["command"], "```", ""]
    if s.get("wall_seconds") is not None:
        lines += [f"Wall time: {s['wall_seconds']:.0f} s ({s['wall_seconds'] / 60:.1f} min), the "
                  "sum of the K runs' wall times (runs may have overlapped).", ""]
    lines += ["| K | group size | protocol | " + " | ".join(cols) + " | train s |",
              "|---:|---:|---|" + "---:|" * (len(cols) + 1)]
    for r in s["rows"]:
        cells = [f"{100 * r['accuracy'][c]:.2f}" if c in r["accuracy"] else "" for c in cols]
        t = r.get("train_seconds")
        lines.append(f"| {r['groups']} | {s['batch_size'] // r['groups']} | {r['protocol'].upper()} | "
                     + " | ".join(cells) + f" | {'' if t is None else f'{t:.0f}'} |")
    return "\n".join(lines) + "\n"


def _ablation_plot(path, s: dict) -> None:
    from localnorm import _spec
    from .report import _pyplot, _save

    plt = _pyplot()
    cols = ["clean"] + [f"agn {v:g}" for v in s["levels"]]
    fig, axes = plt.subplots(1, len(_spec.PROTOCOLS), figsize=(3.3 * len(_spec.PROTOCOLS), 3.4),
                             sharey=True, squeeze=False)
    for ax, protocol in zip(axes[0], _spec.PROTOCOLS):
        rows = [r for r in s["rows"] if r["protocol"] == protocol]
        for c in cols:
            pts = [(r["groups"], r["accuracy"][c]) for r in rows if c in r["accuracy"]]
            ax.plot([k for k, _ in pts], [100 * a for _, a in pts], marker="o", ms=3, label=c)
        ax.set_xscale("log", base=2)
        ax.set_xticks(s["groups"], [str(k) for k in s["groups"]])
        ax.set_xlabel("K (groups along the batch axis)")
        ax.set_title(protocol.upper(), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{s['dataset']}, {s['model']}: groups ablation", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# -- seeds ---------------------------------------------------------------------------------

def _stats(values: list[float]) -> dict:
    import statistics

    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


def summarize_seeds(args: argparse.Namespace) -> int:
    """Summarize the runs of ``args.runs`` over their seeds (see :func:`add_parser`)."""
    import json
    import sys
    from pathlib import Path

    from . import _errors
    from .report import atomic_write_text

    runs = []
    for d in args.runs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise _errors.dataset_files_missing("robustness run", d, "a results.json written "
                                                "by localnorm robustness --out RUN_DIR")
        runs.append(json.loads(path.read_text(encoding="utf-8")))
    summary = seed_summary(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "seeds.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "seeds.md", _seeds_markdown(summary, [str(d) for d in args.runs]))
    print(f"summary of {len(runs)} seeds in {out}/seeds.json and seeds.md", file=sys.stderr)
    return 0


#: Settings that must agree between the runs of a seed summary.
_SAME = ("dataset", "model", "groups", "batch_size", "epochs", "lr", "vote", "limit_train",
         "limit_test", "backend")


def seed_summary(runs: list[dict]) -> dict:
    """Mean, sample std and range over the runs (one per seed) of each evaluation's accuracy
    and AUROC, clean and under AGN, and of the LocalNorm/BatchNorm accuracy ratios."""
    from . import _errors

    cfgs = [r["config"] for r in runs]
    for key in _SAME:
        values = {json_key(c.get(key)) for c in cfgs}
        if len(values) > 1:
            raise _errors.seed_runs_differ(key, [c.get(key) for c in cfgs])
    seeds = [c["seed"] for c in cfgs]
    cells = sorted({("none", 0.0)} | {(r["noise"], float(r["level"])) for run in runs
                                      for r in run["records"] if r["noise"] == "agn"},
                   key=lambda c: c[1])
    evals = list(dict.fromkeys((r["method"], r["protocol"]) for r in runs[0]["records"]))
    rows = []
    for noise, lv in cells:
        for m, p in evals:
            found = [next((r for r in run["records"] if (r["method"], r["protocol"], r["noise"],
                                                          float(r["level"])) == (m, p, noise, lv)),
                          None) for run in runs]
            if any(f is None for f in found):
                continue
            row = {"noise": noise, "level": lv, "method": m, "protocol": p,
                   "accuracy": _stats([f["accuracy"] for f in found])}
            au = [(f.get("uncertainty") or {}).get("auroc") for f in found]
            if all(a is not None for a in au):
                row["auroc"] = _stats(au)
                row["signal"] = found[0]["uncertainty"]["signal"]
            rows.append(row)

    def acc(m, p, noise, lv, i):
        return next((r["accuracy"]["values"][i] for r in rows
                     if (r["method"], r["protocol"], r["noise"], r["level"]) == (m, p, noise, lv)),
                    None)

    ratios = []
    for noise, lv in cells:
        for base in (("batchnorm", "running"), ("batchnorm-dynamic", "batch")):
            for p in ("batch", "voting", "single", "single-voting"):
                vals = [acc("localnorm", p, noise, lv, i) for i in range(len(runs))]
                den = [acc(*base, noise, lv, i) for i in range(len(runs))]
                if all(v is not None for v in vals + den) and all(d > 0 for d in den):
                    ratios.append({"noise": noise, "level": lv, "localnorm": p,
                                   "baseline": base[0],
                                   "ratio": _stats([v / d for v, d in zip(vals, den)])})
    return {"seeds": seeds, "config": {k: cfgs[0].get(k) for k in _SAME + ("model",)},
            "data": runs[0]["data"], "rows": rows, "ratios": ratios,
            "commands": [c.get("command") for c in cfgs],
            "wall_seconds": [c.get("wall_seconds") for c in cfgs]}


def json_key(value) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _seeds_markdown(s: dict, dirs: list[str]) -> str:
    from .report import _label

    def fmt(st, scale=100.0, digits=2):
        return (f"{scale * st['mean']:.{digits}f} ± {scale * st['std']:.{digits}f} "
                f"({scale * st['min']:.{digits}f}–{scale * st['max']:.{digits}f})")

    cfg = s["config"]
    lines = [f"# Over seeds: {cfg['dataset']}, `{cfg['model']}`", "", s["data"], "",
             f"Seeds {', '.join(map(str, s['seeds']))} ({len(s['seeds'])} runs: "
             f"{', '.join(f'`{d}`' for d in dirs)}); each seeds the initialization, the "
             "shuffling and the noise. Mean ± sample standard deviation (min–max) over the "
             "seeds; accuracy in %.", "", "## Accuracy", "",
             "| noise | level | method | accuracy % |", "|---|---:|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['noise']} | {r['level']:g} | {_label(r['method'], r['protocol'])} | "
                     f"{fmt(r['accuracy'])} |")
    if s["ratios"]:
        lines += ["", "## LocalNorm / BatchNorm accuracy ratio", "",
                  "Per seed, the ratio of the two accuracies, then mean ± std (min–max).", "",
                  "| noise | level | LocalNorm protocol | over | ratio |", "|---|---:|---|---|---|"]
        for r in s["ratios"]:
            base = "BatchNorm (running stats)" if r["baseline"] == "batchnorm" else \
                "BatchNorm (test-batch stats)"
            lines.append(f"| {r['noise']} | {r['level']:g} | {r['localnorm'].upper()} | {base} | "
                         f"{fmt(r['ratio'], 1.0, 3)} |")
    au = [r for r in s["rows"] if "auroc" in r]
    if au:
        lines += ["", "## AUROC of the confidence (right vs wrong predictions)", "",
                  "| noise | level | method | signal | AUROC |", "|---|---:|---|---|---|"]
        for r in au:
            lines.append(f"| {r['noise']} | {r['level']:g} | {_label(r['method'], r['protocol'])} | "
                         f"{r['signal']} | {fmt(r['auroc'], 1.0, 3)} |")
    walls = [w for w in s["wall_seconds"] if w is not None]
    if walls:
        lines += ["", f"Wall time of the runs: {', '.join(f'{w:.0f} s' for w in walls)}."]
    return "\n".join(lines) + "\n"
