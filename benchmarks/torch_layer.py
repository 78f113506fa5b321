"""Layer benchmark of localnorm.torch against nn.BatchNorm2d (forward + backward).

Every round times, in interleaved order, ``nn.BatchNorm2d`` (batch statistics) and each
LocalNorm2d variant (strided and contiguous partitions, NCHW and channels_last) on the
same input; the reported figure per variant is the median over rounds of the ratio
``LocalNorm time / BatchNorm time`` measured in the same round, so machine noise that
hits both cancels out. Nothing is asserted: run it and read the numbers::

    python benchmarks/torch_layer.py                      # N=128 C=64 16x16 K=4, 2 threads
    python benchmarks/torch_layer.py --device cuda --n 256 --c 128 --hw 32

:func:`bench_layer` returns the figures as a dict for other tools (``localnorm bench``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from torch import nn

from localnorm.torch import LocalNorm2d

__all__ = ["bench_layer", "VARIANTS"]

#: (name, partition, channels_last) of the LocalNorm variants timed.
VARIANTS = (
    ("strided", "strided", False),
    ("contiguous", "contiguous", False),
    ("strided channels_last", "strided", True),
    ("contiguous channels_last", "contiguous", True),
    ("ragged contiguous (N-1)", "contiguous", "ragged"),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> None:
    x.grad = None
    y = layer(x)
    y.backward(dy)


def _time(layer, x, dy, inner: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        _step(layer, x, dy)
    _sync(device)
    return (time.perf_counter() - t0) / inner


def bench_layer(
    n: int = 128,
    c: int = 64,
    hw: int = 16,
    num_groups: int = 4,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = 2,
    rounds: int = 15,
    inner: int = 5,
    warmup: int = 3,
    variants: tuple = VARIANTS,
) -> dict[str, Any]:
    """Time forward + backward of LocalNorm2d variants against nn.BatchNorm2d.

    Parameters
    ----------
    n, c, hw : int
        Input shape (n, c, hw, hw).
    num_groups : int
        K, the groups along the batch axis.
    device, dtype
        Where and in which dtype to run.
    threads : int or None
        ``torch.set_num_threads`` for the run (CPU); None leaves it.
    rounds, inner, warmup : int
        Interleaved rounds; steps per timing; untimed warm-up steps per layer.
    variants : tuple
        Subset of :data:`VARIANTS`.

    Returns
    -------
    dict
        ``{"config": {...}, "batchnorm_ms": median, "results": {name: {"median_ms",
        "ratio_median", "ratio_q1", "ratio_q3"}}}``; ratios are LocalNorm / BatchNorm
        time within the same round.
    """
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(c, track_running_stats=False, device=dev, dtype=dtype).train()
        x = torch.randn(n, c, hw, hw, device=dev, dtype=dtype, requires_grad=True)
        dy = torch.randn_like(x)
        runs = [("batchnorm", bn, x, dy)]
        for name, partition, fmt in variants:
            layer = LocalNorm2d(c, num_groups, partition=partition, device=dev, dtype=dtype)
            if fmt == "ragged":
                xv = x.detach()[: n - 1].clone().requires_grad_(True)
                dv = dy[: n - 1]
            elif fmt:
                xv = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
                dv = dy.contiguous(memory_format=torch.channels_last)
            else:
                xv, dv = x, dy
            runs.append((name, layer.train(), xv, dv))
        for _, layer, xv, dv in runs:
            for _ in range(warmup):
                _step(layer, xv, dv)
        times: dict[str, list[float]] = {name: [] for name, *_ in runs}
        for r in range(rounds):
            order = runs if r % 2 == 0 else runs[:1] + runs[:0:-1]
            for name, layer, xv, dv in order:
                times[name].append(_time(layer, xv, dv, inner, dev))
        base = times["batchnorm"]
        results = {}
        for name, *_ in runs[1:]:
            ratios = sorted(t / b for t, b in zip(times[name], base))
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            results[name] = {
                "median_ms": 1e3 * statistics.median(times[name]),
                "ratio_median": statistics.median(ratios),
                "ratio_q1": q[0],
                "ratio_q3": q[2],
            }
        return {
            "config": {
                "n": n, "c": c, "hw": hw, "num_groups": num_groups, "device": str(dev),
                "dtype": str(dtype), "threads": torch.get_num_threads(), "rounds": rounds,
                "inner": inner, "torch": torch.__version__,
            },
            "batchnorm_ms": 1e3 * statistics.median(base),
            "results": results,
        }
    finally:
        torch.set_num_threads(old_threads)


def _table(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"LocalNorm2d vs nn.BatchNorm2d, fwd+bwd, N={cfg['n']} C={cfg['c']} "
        f"{cfg['hw']}x{cfg['hw']} K={cfg['num_groups']}, {cfg['device']} {cfg['dtype']}, "
        f"{cfg['threads']} threads, torch {cfg['torch']}",
        f"BatchNorm2d median: {report['batchnorm_ms']:.3f} ms",
        "| variant | median ms | ratio (median) | ratio IQR |",
        "|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['median_ms']:.3f} | {r['ratio_median']:.2f}x | "
            f"{r['ratio_q1']:.2f}-{r['ratio_q3']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--hw", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json", action="store_true", help="print the dict as JSON")
    a = p.parse_args(argv)
    report = bench_layer(a.n, a.c, a.hw, a.k, device=a.device, threads=a.threads, rounds=a.rounds)
    print(json.dumps(report, indent=2) if a.json else _table(report))


if __name__ == "__main__":
    main()
