"""One torch layer shape, quickly: LocalNorm2d against nn.BatchNorm2d on the same input.

The same comparisons as the layer figures of ``localnorm bench`` (both are
:func:`benchmarks.torch_bench.layer_comparisons`, timed by :func:`benchmarks._timing.compare`:
interleaved rounds, medians of per-round paired ratios), for one shape and the layouts
and ops asked for, printed as the results page's tables. In each layout the baseline is
``nn.BatchNorm2d`` on the same input in that layout; the ragged row (N-1 samples) is
compared with BatchNorm2d on the same N-1 samples. Nothing is asserted::

    python -m localnorm.benchmarks.torch_layer                      # N=128 C=64 16x16 K=4, 2 threads
    python -m localnorm.benchmarks.torch_layer --ops forward+backward --layouts NCHW
    python -m localnorm.benchmarks.torch_layer --device cuda --n 256 --c 128 --hw 32 --k 8
"""

from __future__ import annotations

import argparse
import json
import sys

from . import _report
from ._cases import ISSUE_CASE, LayerCase
from ._timing import FULL, Settings


def measure(case: LayerCase = ISSUE_CASE, *, device: str = "cpu", layouts=("NCHW", "channels_last"),
            ops=None, settings: Settings = FULL) -> list[dict]:
    """The layer records (``benchmarks._report`` layout) of one shape.

    Parameters
    ----------
    case : LayerCase
        N, C, H (= W) and K, the number of groups along the batch axis; default the
        issue's configuration N=128 C=64 16x16 K=4.
    device : str
        A torch device.
    layouts : sequence of {"NCHW", "channels_last"}
    ops : sequence of str, optional
        A subset of :data:`benchmarks.torch_bench.LAYER_OPS` (default: all).
    settings : Settings
        Rounds, warm-up calls and minimum sample length.

    Returns
    -------
    list of dict
        One record per (layout, op).
    """
    import torch

    from . import torch_bench

    records = []
    for layout in layouts:
        records += torch_bench.layer_comparisons(
            case, layout, torch.device(device), settings=settings,
            ops=tuple(ops or torch_bench.LAYER_OPS))
    return records


def main(argv: list[str] | None = None) -> int:
    from . import torch_bench

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=ISSUE_CASE.n, help="batch size N")
    p.add_argument("--c", type=int, default=ISSUE_CASE.c, help="channels C")
    p.add_argument("--hw", type=int, default=ISSUE_CASE.h, help="height = width")
    p.add_argument("--k", type=int, default=ISSUE_CASE.k,
                   help="K, the number of groups along the batch axis")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads on CPU (0 leaves torch's default)")
    p.add_argument("--layouts", default="NCHW,channels_last")
    p.add_argument("--ops", default=",".join(torch_bench.LAYER_OPS))
    p.add_argument("--rounds", type=int, default=FULL.rounds)
    p.add_argument("--quick", action="store_true",
                   help="no warm-up, one call per sample: checks that it runs, not the speed")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    a = p.parse_args(argv)
    import torch

    if a.threads and a.device == "cpu":
        torch.set_num_threads(a.threads)
    settings = Settings(rounds=a.rounds, warmup=0 if a.quick else FULL.warmup,
                        min_sample_s=0.0 if a.quick else FULL.min_sample_s)
    records = measure(LayerCase(a.n, a.c, a.hw, a.k), device=a.device,
                      layouts=a.layouts.split(","), ops=a.ops.split(","), settings=settings)
    if a.json:
        print(json.dumps(records, indent=1))
    else:
        print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads, "
              f"{a.rounds} rounds\n")
        print("\n".join(_report.section_tables(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
