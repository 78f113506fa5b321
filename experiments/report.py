"""Results of the robustness experiment: ``results.json``, ``results.md`` and figures.

``results.json`` holds ``{"config": {...}, "data": "...", "training": {...}, "records": [...]}``
with one record per cell (method, protocol, noise, level, accuracy, n, seed, dataset,
backend, plus the mean ``agreement`` of the voting protocols and, for the confusion cells,
a ``confusion`` matrix). It is rewritten atomically (a temporary file, then
:func:`os.replace`) after every cell, so an interrupted run loses at most the cell in
progress, and ``--resume`` skips every cell already recorded. The clean test set is the
cell ``noise="none", level=0``. The config records the settings, the framework and device,
the command line (``argv``, and ``command`` as one shell line), the number of
``attempts`` (1, plus one per ``--resume``) and ``wall_seconds``, the wall time of all
attempts up to the last write; ``results.md`` repeats the command and the wall time.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from . import _errors

__all__ = ["ResultStore", "atomic_write_text", "atomic_write_bytes", "claims", "write_markdown",
           "write_plots", "write_confusion"]

#: Config entries that must match for ``--resume`` to reuse results.
RESUME_KEYS = ("dataset", "data_dir", "seed", "backend", "keras_backend", "model", "groups",
               "batch_size", "epochs", "lr", "vote", "limit_train", "limit_test", "image_size")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of the files written (mkstemp's are 0o600): rw for all, minus the umask.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then :func:`os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _key(record: dict) -> tuple:
    return (record["method"], record["protocol"], record["noise"], float(record["level"]))


class ResultStore:
    """The records of one run, persisted to ``out/results.json`` after every change.

    ``config.wall_seconds`` is the wall time of every attempt of the run so far: each
    write adds the time since this attempt started (``started``, a
    :func:`time.perf_counter` value) to the time the earlier attempts recorded, so a run
    interrupted by SIGINT or killed keeps the time it had spent up to its last write, and
    ``--resume`` adds to it. ``config.attempts`` counts the attempts.
    """

    def __init__(self, out: Path, config: dict, data_note: str, resume: bool,
                 started: float | None = None):
        import time

        self.path = Path(out) / "results.json"
        self.config = dict(config)
        self.data_note = data_note
        self.training: dict[str, Any] = {}
        self.records: list[dict] = []
        self._earlier_seconds = 0.0
        self._started = time.perf_counter() if started is None else started
        attempts = 1
        if resume and self.path.is_file():
            saved = _read_results(self.path)
            for k in RESUME_KEYS:
                if saved["config"].get(k) != config.get(k):
                    raise _errors.resume_mismatch(self.path, k, saved["config"].get(k),
                                                  config.get(k))
            self.records = list(saved["records"])
            self.training = dict(saved.get("training") or {})
            self._earlier_seconds = float(saved["config"].get("wall_seconds") or 0.0)
            attempts = int(saved["config"].get("attempts") or 1) + 1
        self.config["attempts"] = attempts
        self.config.setdefault("wall_seconds", None)
        self._done = {_key(r) for r in self.records}

    def add_wall_time(self, seconds: float) -> None:
        """Record the run's total wall time in ``config.wall_seconds`` (on ``--resume``,
        the earlier attempts' time plus this one's) and write the file."""
        self.config["wall_seconds"] = round(self._earlier_seconds + seconds, 3)
        self._write()

    def done(self, method: str, protocol: str, noise: str, level: float) -> bool:
        return (method, protocol, noise, float(level)) in self._done

    def add(self, record: dict) -> None:
        key = _key(record)
        self.records = [r for r in self.records if _key(r) != key] + [record]
        self._done.add(key)
        self.flush()

    def flush(self) -> None:
        """Write the file, with the wall time of all attempts up to now."""
        import time

        # Milliseconds: an attempt interrupted early still records a time above 0.
        self.config["wall_seconds"] = round(
            self._earlier_seconds + time.perf_counter() - self._started, 3)
        self._write()

    def _write(self) -> None:
        head = {"config": self.config, "data": self.data_note, "training": self.training}
        # One record per line: readable, diffable, and compact with confusion matrices.
        body = ",\n  ".join(json.dumps(r) for r in self.records)
        text = json.dumps(head, indent=1)[:-2] + ',\n "records": [\n  ' + body + "\n ]\n}\n"
        atomic_write_text(self.path, text)


_RECORD_FIELDS = {"method": str, "protocol": str, "noise": str, "level": (int, float),
                  "accuracy": (int, float)}


def _read_results(path: Path) -> dict:
    """The saved results.json for ``--resume``, checked for the structure the store
    relies on; a damaged file is a :func:`~localnorm._errors.bad_results_file` error."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise _errors.bad_results_file(path, f"it is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise _errors.bad_results_file(
            path, f"it is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "a truncated or hand-edited file)") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) \
            or not isinstance(saved.get("records"), list):
        raise _errors.bad_results_file(
            path, "it lacks the 'config' object or the 'records' list")
    if not isinstance(saved.get("training", {}), dict):
        raise _errors.bad_results_file(path, "its 'training' entry is not an object")
    wall = saved["config"].get("wall_seconds")
    if wall is not None and (isinstance(wall, bool) or not isinstance(wall, (int, float))
                             or not math.isfinite(wall) or wall < 0):
        raise _errors.bad_results_file(path, f"its wall_seconds is {wall!r}, not a number >= 0")
    attempts = saved["config"].get("attempts")
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)
                                 or attempts < 1):
        raise _errors.bad_results_file(path, f"its attempts is {attempts!r}, not an int >= 1")
    for i, r in enumerate(saved["records"]):
        bad = [f for f, t in _RECORD_FIELDS.items()
               if not isinstance(r, dict) or isinstance(r.get(f), bool)
               or not isinstance(r.get(f), t)]
        if bad:
            raise _errors.bad_results_file(
                path, f"record {i} lacks or mistypes {', '.join(bad)}")
    return saved


# -- tables ------------------------------------------------------------------------------

def _fmt_level(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else f"{level:g}"


def _columns(records):
    """Evaluations in first-seen order: [(method, protocol)]."""
    seen = []
    for r in records:
        if (r["method"], r["protocol"]) not in seen:
            seen.append((r["method"], r["protocol"]))
    return seen


def _label(method: str, protocol: str) -> str:
    return f"LocalNorm ({protocol.upper()})" if method == "localnorm" else {
        "batchnorm": "BatchNorm (running stats)",
        "batchnorm-dynamic": "BatchNorm (test-batch stats)",
        "groupnorm": "GroupNorm",
    }.get(method, method)


def _series(records, noise: str):
    """{(method, protocol): {level: record}} for one noise, with the clean cell at level 0."""
    out: dict[tuple, dict[float, dict]] = {}
    for r in records:
        if r["noise"] in (noise, "none"):
            out.setdefault((r["method"], r["protocol"]), {})[float(r["level"])] = r
    return out


def claims(records: list[dict]) -> list[dict]:
    """The expectations of the experiment's issue, checked on one run's records.

    Rows (``claim``, ``measured``, ``met``: True, False, or None where it is an
    observation): LocalNorm (BATCH) within 1 point of BatchNorm (running statistics) on
    clean data; LocalNorm (BATCH) at least 1.5x BatchNorm's accuracy under AGN at
    sigma = 1; and how far LocalNorm (BATCH) is from BatchNorm with test-batch statistics
    over the AGN levels. A row whose cells the run lacks is left out.
    """
    acc = {_key(r): 100 * r["accuracy"] for r in records}
    bn, ln, dyn = ("batchnorm", "running"), ("localnorm", "batch"), ("batchnorm-dynamic", "batch")
    rows = []
    if (*bn, "none", 0.0) in acc and (*ln, "none", 0.0) in acc:
        b, v = acc[(*bn, "none", 0.0)], acc[(*ln, "none", 0.0)]
        rows.append({"claim": "clean: LocalNorm (BATCH) within 1 point of BatchNorm",
                     "measured": f"{v:.2f} vs {b:.2f} ({v - b:+.2f} points)", "met": v >= b - 1})
    if (*bn, "agn", 1.0) in acc and (*ln, "agn", 1.0) in acc:
        b, v = acc[(*bn, "agn", 1.0)], acc[(*ln, "agn", 1.0)]
        ratio = v / b if b else math.inf
        rows.append({"claim": "AGN sigma=1: LocalNorm (BATCH) >= 1.5x BatchNorm",
                     "measured": f"{v:.2f} vs {b:.2f} ({ratio:.2f}x)", "met": ratio >= 1.5})
    levels = sorted(lv for (m, p, n, lv) in acc if (m, p, n) == (*ln, "agn") and (*dyn, "agn", lv) in acc)
    if levels:
        gaps = [acc[(*ln, "agn", lv)] - acc[(*dyn, "agn", lv)] for lv in levels]
        rows.append({"claim": "AGN: LocalNorm (BATCH) minus BatchNorm with test-batch statistics",
                     "measured": f"{min(gaps):+.2f} to {max(gaps):+.2f} points over sigma "
                     f"{_fmt_level(levels[0])}..{_fmt_level(levels[-1])} "
                     f"(mean {sum(gaps) / len(gaps):+.2f})", "met": None})
    return rows


def write_markdown(path: Path, store: ResultStore, noises: list[str]) -> None:
    """``results.md``: clean accuracy (as the paper's Table 1), one accuracy table per noise
    (rows: method and protocol; columns: level, 0 = clean), the voting protocols' agreement,
    and the mean accuracy over all corruption levels."""
    from .corruptions import CORRUPTIONS

    recs = store.records
    cfg = store.config
    cols = _columns(recs)
    framework = cfg.get("framework") or cfg.get("backend")
    wall = cfg.get("wall_seconds")
    lines = [
        f"# LocalNorm robustness: {cfg.get('dataset')} ({cfg.get('backend')})",
        "",
        f"{store.data_note}",
        "",
        f"Network `{cfg.get('model')}`, {cfg.get('epochs')} epochs, batch size "
        f"{cfg.get('batch_size')}, LocalNorm with {cfg.get('groups')} groups along the batch axis, "
        f"seed {cfg.get('seed')}, backend {framework}, device {cfg.get('device')}"
        f"{'' if cfg.get('threads') is None else ', ' + str(cfg.get('threads')) + ' CPU thread(s)'}. "
        "Accuracy in % on the test split; the same degraded images for every method.",
        "",
    ]
    if cfg.get("command"):
        lines += ["Command:", "", "```bash", cfg["command"], "```", ""]
    if wall is not None:
        train = ", ".join(f"{norm} {t['seconds']:.0f} s" for norm, t in store.training.items())
        attempts = cfg.get("attempts") or 1
        over = f" over {attempts} attempts (--resume)" if attempts > 1 else ""
        lines += [f"Wall time: {wall:.0f} s ({wall / 60:.1f} min) in all{over}"
                  + (f"; training: {train}." if train else "."), ""]
    lines += [
        "## Clean test accuracy",
        "",
        "| method | accuracy | n |",
        "|---|---:|---:|",
    ]
    for m, p in cols:
        r = next((r for r in recs if (r["method"], r["protocol"], r["noise"]) == (m, p, "none")), None)
        if r is not None:
            lines.append(f"| {_label(m, p)} | {100 * r['accuracy']:.2f} | {r['n']} |")
    checked = claims(recs)
    if checked:
        verdict = {True: "met", False: "**not met**", None: "(observation)"}
        lines += ["", "## The expectations, checked", "",
                  "| expectation | measured (accuracy %) | outcome |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['measured']} | {verdict[c['met']]} |" for c in checked]
    for noise in noises:
        series = _series(recs, noise)
        levels = sorted({lv for s in series.values() for lv in s})
        if len(levels) <= 1:
            continue
        what = "severity" if noise in CORRUPTIONS else "sigma"
        lines += ["", f"## {noise} (accuracy % by {what}; 0 = clean)", "",
                  "| method | " + " | ".join(_fmt_level(lv) for lv in levels) + " |",
                  "|---|" + "---:|" * len(levels)]
        for m, p in cols:
            row = series.get((m, p), {})
            cells = [f"{100 * row[lv]['accuracy']:.2f}" if lv in row else "" for lv in levels]
            lines.append(f"| {_label(m, p)} | " + " | ".join(cells) + " |")
    voting = [(m, p) for m, p in cols if any(r.get("agreement") is not None
                                             for r in recs if (r["method"], r["protocol"]) == (m, p))]
    if voting:
        lines += ["", "## Agreement of the voting protocols",
                  "", "Mean fraction of the K groups that agree with the vote.", "",
                  "| noise | level | " + " | ".join(_label(m, p) for m, p in voting) + " |",
                  "|---|---:|" + "---:|" * len(voting)]
        cells = sorted({(r["noise"], float(r["level"])) for r in recs},
                       key=lambda c: (c[0] != "none", c[0], c[1]))
        for noise, lv in cells:
            vals = []
            for m, p in voting:
                r = next((r for r in recs if _key(r) == (m, p, noise, lv)), None)
                vals.append("" if r is None or r.get("agreement") is None else f"{r['agreement']:.3f}")
            lines.append(f"| {noise} | {_fmt_level(lv)} | " + " | ".join(vals) + " |")
    corr = [n for n in noises if n in CORRUPTIONS]
    if corr:
        lines += ["", "## Mean accuracy over the corruptions (all severities)", "",
                  "| method | " + " | ".join(corr) + " | mean |", "|---|" + "---:|" * (len(corr) + 1)]
        for m, p in cols:
            means = []
            for n in corr:
                accs = [r["accuracy"] for r in recs
                        if (r["method"], r["protocol"], r["noise"]) == (m, p, n)]
                means.append(sum(accs) / len(accs) if accs else math.nan)
            ok = [v for v in means if not math.isnan(v)]
            total = sum(ok) / len(ok) if ok else math.nan
            lines.append(f"| {_label(m, p)} | " + " | ".join(f"{100 * v:.2f}" for v in means)
                         + f" | {100 * total:.2f} |")
    lines += uncertainty_lines(recs)
    atomic_write_text(path, "\n".join(lines) + "\n")


def _uncertain(records):
    return [r for r in records if (r.get("uncertainty") or {}).get("auroc") is not None
            or (r.get("uncertainty") or {}).get("selective_accuracy")]


def _signal_label(record: dict) -> str:
    sig = "agreement" if record["uncertainty"]["signal"] == "agreement" else "max softmax"
    return f"{_label(record['method'], record['protocol'])}: {sig}"


def uncertainty_lines(records: list[dict]) -> list[str]:
    """The results.md section on confidence as an uncertainty signal (see
    :mod:`~localnorm.experiments.uncertainty`): per cell of the clean set and the paper's
    AGN, AUROC and selective accuracy at 50/80/90% coverage of each evaluation's signal."""
    from .uncertainty import COVERAGES

    recs = [r for r in _uncertain(records) if r["noise"] in ("none", "agn")]
    if not recs:
        return []
    cols = _columns(recs)
    lines = ["", "## Confidence as an uncertainty signal (clean and AGN)", "",
             "How well each evaluation's confidence tells its right predictions from its "
             "wrong ones: the voting protocols' agreement of the K groups (along the batch "
             "axis) with the vote, and the maximum softmax probability (MSP) of the others. "
             "AUROC: 0.5 is no signal, 1 a perfect ranking. Selective accuracy: accuracy % "
             "on the 50/80/90% most confident test images (ties at the threshold count with "
             "their mean accuracy); 100% coverage is the plain accuracy.", "",
             "| noise | level | evaluation: signal | accuracy | AUROC | "
             + " | ".join(f"sel. acc. @{100 * c:.0f}%" for c in COVERAGES) + " |",
             "|---|---:|---|---:|---:|" + "---:|" * len(COVERAGES)]
    cells = sorted({(r["noise"], float(r["level"])) for r in recs},
                   key=lambda c: (c[0] != "none", c[1]))
    for noise, lv in cells:
        for m, p in cols:
            r = next((r for r in recs if _key(r) == (m, p, noise, lv)), None)
            if r is None:
                continue
            u = r["uncertainty"]
            sel = [u["selective_accuracy"].get(f"{c:g}") for c in COVERAGES]
            lines.append(
                f"| {noise} | {_fmt_level(lv)} | {_signal_label(r)} | {100 * r['accuracy']:.2f} | "
                + ("" if u["auroc"] is None else f"{u['auroc']:.3f}") + " | "
                + " | ".join("" if v is None else f"{100 * v:.2f}" for v in sel) + " |")
    return lines


# -- figures -----------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_plots(out: Path, store: ResultStore, noises: list[str]) -> list[Path]:
    """One PNG per noise, ``acc_<noise>.png``: accuracy against level (0 = clean), one line
    per method and protocol, like the paper's Figures 7 to 9."""
    from .corruptions import CORRUPTIONS

    plt = _pyplot()
    paths = []
    for noise in noises:
        series = _series(store.records, noise)
        if not any(len(s) > 1 for s in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for (m, p), pts in series.items():
            lv = sorted(pts)
            style = "-" if m == "localnorm" else "--"
            ax.plot(lv, [100 * pts[v]["accuracy"] for v in lv], style, marker="o", ms=3,
                    label=_label(m, p))
        ax.set_xlabel("severity" if noise in CORRUPTIONS else "sigma")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{store.config.get('dataset')}: {noise}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = Path(out) / f"acc_{noise}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_uncertainty_plots(out: Path, store: ResultStore) -> list[Path]:
    """``uncertainty_agn.png``: AUROC of each evaluation's confidence against the AGN sigma
    (0 = clean); ``risk_coverage.png``: selective accuracy against coverage on the clean
    set and at AGN sigma = 1 (when evaluated). Nothing when no record has a signal."""
    plt = _pyplot()
    recs = _uncertain(store.records)
    paths: list[Path] = []
    agn = [r for r in recs if r["noise"] in ("none", "agn") and r["uncertainty"]["auroc"] is not None]
    if len({float(r["level"]) for r in agn}) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, p in _columns(agn):
            pts = sorted((float(r["level"]), r) for r in agn if (r["method"], r["protocol"]) == (m, p))
            style = "-" if pts[0][1]["uncertainty"]["signal"] == "agreement" else "--"
            ax.plot([lv for lv, _ in pts], [r["uncertainty"]["auroc"] for _, r in pts], style,
                    marker="o", ms=3, label=_signal_label(pts[0][1]))
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xlabel("AGN sigma (0 = clean)")
        ax.set_ylabel("AUROC, right vs wrong predictions")
        ax.set_title(f"{store.config.get('dataset')}: confidence as an uncertainty signal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        path = Path(out) / "uncertainty_agn.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    cells = [c for c in (("none", 0.0), ("agn", 1.0))
             if any((r["noise"], float(r["level"])) == c for r in recs)]
    if cells:
        fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), squeeze=False)
        for ax, (noise, lv) in zip(axes[0], cells):
            for r in recs:
                if (r["noise"], float(r["level"])) != (noise, lv):
                    continue
                pts = [(c, v) for c, v in r["uncertainty"]["curve"] if v is not None]
                style = "-" if r["uncertainty"]["signal"] == "agreement" else "--"
                ax.plot([100 * c for c, _ in pts], [100 * (1 - v) for _, v in pts], style,
                        label=_signal_label(r))
            ax.set_xlabel("coverage (% of test images kept, most confident first)")
            ax.set_ylabel("risk (error % on the kept images)")
            ax.set_title(f"{store.config.get('dataset')}: "
                         + ("clean" if noise == "none" else f"{noise} sigma {_fmt_level(lv)}"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        path = Path(out) / "risk_coverage.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_confusion(out: Path, store: ResultStore, noise: str, level: float,
                    classes: list[str]) -> Path | None:
    """``confusion_<noise>_<level>.png``: one row per evaluation with a recorded confusion
    matrix; columns: the clean test set and ``noise`` at ``level`` (the paper's Figures 15-17).
    Rows are true classes, columns predicted classes, normalized per true class."""
    import numpy as np

    plt = _pyplot()
    cols = [("none", 0.0), (noise, float(level))]
    rows = [(m, p) for m, p in _columns(store.records)
            if any(r.get("confusion") is not None and (r["method"], r["protocol"]) == (m, p)
                   for r in store.records)]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 2.8 * len(rows)), squeeze=False)
    for i, (m, p) in enumerate(rows):
        for j, (nz, lv) in enumerate(cols):
            ax = axes[i, j]
            r = next((r for r in store.records if _key(r) == (m, p, nz, lv)), None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r is None or r.get("confusion") is None:
                ax.set_axis_off()
                continue
            cm = np.asarray(r["confusion"], dtype=float)
            cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax.imshow(cm, vmin=0, vmax=1, cmap="viridis")
            name = "clean" if nz == "none" else f"{nz} {_fmt_level(lv)}"
            ax.set_title(f"{_label(m, p)}\n{name}: {100 * r['accuracy']:.1f}%", fontsize=8)
            if len(classes) <= 10:
                ax.set_xticks(range(len(classes)), classes, fontsize=6)
                ax.set_yticks(range(len(classes)), classes, fontsize=6)
    fig.tight_layout()
    path = Path(out) / f"confusion_{noise}_{_fmt_level(level)}.png"
    _save(fig, path)
    plt.close(fig)
    return path
