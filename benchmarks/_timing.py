"""Interleaved timing: every figure is a ratio measured in the same run.

A comparison times a baseline and its candidates in rounds. Each round runs every
callable once (one *sample*: ``inner`` calls then one device synchronization), in
round-robin order rotated by one place per round (A B C, B C A, C A B, ...), so slow
drifts of a shared machine (thermal state, other processes, frequency scaling) hit every
callable alike. A candidate's ratio is the median over rounds of its sample divided by
the baseline's sample *of the same round*; the spread reported is the inter-quartile
range of those paired ratios. Absolute times are medians too, but only the ratios are
meant to be compared across machines.

Nothing here knows a framework: the caller passes ``sync(out)``, which waits for the
device (``torch.cuda.synchronize`` on CUDA, ``jax.block_until_ready``, ...).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Settings", "Timing", "compare", "QUICK", "FULL", "NETWORK"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """How hard to measure.

    Attributes
    ----------
    rounds : int
        Interleaved rounds (samples per callable); the median is taken over them.
    warmup : int
        Untimed calls of each callable before calibration (compilation, caches, allocator).
    min_sample_s : float
        Each sample repeats the callable until it lasts about this long, so that timer
        resolution and per-call jitter do not dominate short kernels.
    """

    rounds: int = 9
    warmup: int = 2
    min_sample_s: float = 0.05

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: The settings of ``localnorm bench --quick`` (tests/bench): enough to exercise the machinery.
QUICK = Settings(rounds=3, warmup=1, min_sample_s=0.0)
#: The settings of the full run's layer comparisons.
FULL = Settings(rounds=9, warmup=2, min_sample_s=0.05)
#: The settings of the full run's whole-network steps and protocols: a call lasts
#: seconds, so one warm-up call (compilation, allocator) and 7 rounds suffice.
NETWORK = Settings(rounds=7, warmup=1, min_sample_s=0.05)


@dataclasses.dataclass
class Timing:
    """Seconds per call of each callable, one entry per round, in the order measured."""

    samples: dict[str, list[float]]
    baseline: str
    inner: dict[str, int]
    #: wall-clock seconds the whole comparison took (warm-up, compilation and calibration
    #: included): what the comparison costs in a run's time budget
    elapsed_s: float = 0.0

    def median_ms(self, name: str) -> float:
        return float(np.median(self.samples[name])) * 1e3

    def quartiles_ms(self, name: str) -> tuple[float, float]:
        q1, q3 = np.percentile(self.samples[name], [25, 75])
        return float(q1) * 1e3, float(q3) * 1e3

    def paired_ratios(self, name: str, baseline: str | None = None) -> np.ndarray:
        base = np.asarray(self.samples[baseline or self.baseline])
        return np.asarray(self.samples[name]) / base

    def ratio(self, name: str, baseline: str | None = None) -> float:
        return float(np.median(self.paired_ratios(name, baseline)))

    def ratio_iqr(self, name: str, baseline: str | None = None) -> tuple[float, float]:
        q1, q3 = np.percentile(self.paired_ratios(name, baseline), [25, 75])
        return float(q1), float(q3)


def _no_sync(out: Any) -> None:
    return None


def _run(fn: Callable[[], Any], sync: Callable[[Any], None], inner: int) -> float:
    t0 = time.perf_counter()
    out = None
    for _ in range(inner):
        out = fn()
    sync(out)
    return time.perf_counter() - t0


def compare(
    candidates: dict[str, Callable[[], Any]],
    *,
    baseline: str,
    settings: Settings,
    sync: Callable[[Any], None] = _no_sync,
) -> Timing:
    """Time ``candidates`` (name -> zero-argument callable) interleaved, against ``baseline``.

    Parameters
    ----------
    candidates : dict
        The callables, including the baseline. Each returns its output, which ``sync``
        waits for.
    baseline : str
        The key of the reference callable (ratios are candidate / baseline).
    settings : Settings
        Rounds, warm-up calls and the minimum duration of one sample.
    sync : callable
        ``sync(out)`` blocks until the device has finished computing ``out``.

    Returns
    -------
    Timing
        Per-round seconds per call of every callable.
    """
    if baseline not in candidates:
        raise KeyError(f"baseline {baseline!r} is not among the candidates {sorted(candidates)}")
    names = list(candidates)
    start = time.perf_counter()
    for name in names:
        for _ in range(settings.warmup):
            sync(candidates[name]())
    inner = {}
    for name in names:
        once = _run(candidates[name], sync, 1)
        inner[name] = max(1, math.ceil(settings.min_sample_s / max(once, 1e-9)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    try:
        for r in range(settings.rounds):
            gc.collect()
            gc.disable()
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_run(candidates[name], sync, inner[name]) / inner[name])
            if gc_was_enabled:
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(samples=samples, baseline=baseline, inner=inner,
                  elapsed_s=time.perf_counter() - start)
