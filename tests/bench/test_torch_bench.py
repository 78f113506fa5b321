"""Pieces of the torch section that the quick CPU run cannot reach."""

import pytest

torch = pytest.importorskip("torch")

from localnorm.benchmarks import torch_bench as tb  # noqa: E402


def test_cuda_rows_get_achieved_bandwidth_and_fraction_of_peak(monkeypatch):
    monkeypatch.setattr(tb, "peak_bandwidth", lambda device: 1e12)
    rows = [{"median_ms": 1.0}, {"median_ms": 2.0}]
    tb._add_bandwidth(rows, "forward+backward", 10**6, torch.device("cuda"))
    # 8 passes over 1 MB in 1 ms = 8 GB/s
    assert rows[0]["bandwidth_gbs"] == pytest.approx(8.0)
    assert rows[0]["bandwidth_fraction"] == pytest.approx(8e9 / 1e12)
    assert rows[1]["bandwidth_gbs"] == pytest.approx(4.0)


def test_cpu_rows_carry_no_bandwidth():
    rows = [{"median_ms": 1.0}]
    tb._add_bandwidth(rows, "forward", 10**6, torch.device("cpu"))
    assert rows == [{"median_ms": 1.0}]


def test_saved_activation_bytes_counts_each_storage_once_without_parameters():
    lin = torch.nn.Linear(1000, 1000, bias=False)
    x = torch.randn(10, 1000, requires_grad=True)
    # relu(x) saves its output; the matmul saves its input (the same storage) and the
    # weight (a parameter, not counted)
    nbytes = tb.saved_activation_bytes(lambda: lin(torch.relu(x)).sum(), lin.parameters())
    assert nbytes == 10 * 1000 * 4
    # without the parameters named, the saved (transposed) weight counts too
    assert tb.saved_activation_bytes(lambda: lin(torch.relu(x)).sum()) == 10 * 1000 * 4 * 101


def _fake_compare(seen):
    """A stand-in for ``_timing.compare``: calls every candidate once, records which
    candidates there were, and returns equal timings (no clock involved)."""
    from localnorm.benchmarks._timing import Timing

    def compare(candidates, *, baseline, settings, sync):
        seen.append(list(candidates))
        for fn in candidates.values():
            sync(fn())
        return Timing(samples={n: [1.0] for n in candidates}, baseline=baseline,
                      inner={n: 1 for n in candidates})

    return compare


def test_layer_baseline_runs_on_the_candidates_input_in_each_layout(monkeypatch):
    """BatchNorm2d, the baseline, sees the same layout as the LocalNorm rows; the ragged
    row is compared with BatchNorm2d on the same N-1 samples."""
    from localnorm.benchmarks._cases import LayerCase

    seen_inputs = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda mod, args: seen_inputs.append(
            (type(mod).__name__, args[0].shape[0],
             args[0].is_contiguous(memory_format=torch.channels_last)
             and not args[0].is_contiguous())))
    calls: list = []
    monkeypatch.setattr(tb, "compare", _fake_compare(calls))
    try:
        case = LayerCase(8, 4, 4, 2)
        for layout in ("NCHW", "channels_last"):
            seen_inputs.clear()
            records = tb.layer_comparisons(case, layout, torch.device("cpu"),
                                           settings=None, ops=("forward+backward",))
            cl = layout == "channels_last"
            bn_inputs = {(n, is_cl) for name, n, is_cl in seen_inputs if name == "BatchNorm2d"}
            ln_inputs = {(n, is_cl) for name, n, is_cl in seen_inputs if name == "LocalNorm2d"}
            assert bn_inputs == {(8, cl), (7, cl)} == ln_inputs
            (rec,) = records
            assert rec["layout"] == layout and rec["baseline"] == "BatchNorm2d"
            rows = {r["name"]: r for r in rec["rows"]}
            assert rows[tb.RAGGED]["versus"] == tb.RAGGED_BASE
            assert tb.RAGGED_BASE not in rows
            assert ("local_norm core" in rows) == (layout == "NCHW")
            assert rows["LocalNorm2d strided"]["target"] == 1.0
            assert rows["LocalNorm2d contiguous"]["target"] == 1.2
            assert "target" not in rows[tb.RAGGED]
    finally:
        hook.remove()


def test_evaluation_compares_both_modes_with_batchnorm_in_one_run(monkeypatch):
    from localnorm.benchmarks._cases import LayerCase

    calls: list = []
    monkeypatch.setattr(tb, "compare", _fake_compare(calls))
    (rec,) = tb.layer_comparisons(LayerCase(8, 4, 4, 2), "NCHW", torch.device("cpu"),
                                  settings=None, ops=("eval",))
    names = [r["name"] for r in rec["rows"]]
    assert {"BatchNorm2d eval (running stats)", "LocalNorm2d single", "LocalNorm2d set",
            "local_norm core single"} <= set(names)
    assert calls == [["BatchNorm2d"] + names]


def test_torch_section_measures_the_issue_case_and_every_paper_shape(monkeypatch):
    from localnorm.benchmarks._cases import ISSUE_CASE, LAYER_CASES, Context

    measured = []
    monkeypatch.setattr(tb, "layer_comparisons",
                        lambda case, layout, device, settings: measured.append((case, layout))
                        or [])
    tb._layer_records(Context.make(False), torch.device("cpu"))
    assert ISSUE_CASE == (128, 64, 16, 4)
    assert measured == [(c, lay) for c in (ISSUE_CASE,) + LAYER_CASES
                        for lay in ("NCHW", "channels_last")]


def test_torch_layer_script_runs_on_a_tiny_shape():
    """``python -m localnorm.benchmarks.torch_layer`` (as the torch guide runs it) prints the
    page's tables for one shape."""
    import json
    import subprocess
    import sys

    args = ["--n", "8", "--c", "4", "--hw", "4", "--k", "2", "--rounds", "2",
            "--ops", "forward+backward", "--threads", "1", "--quick"]
    proc = subprocess.run([sys.executable, "-m", "localnorm.benchmarks.torch_layer", *args,
                           "--json"], capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(proc.stdout)
    assert [(r["op"], r["layout"]) for r in records] == [("forward+backward", "NCHW"),
                                                         ("forward+backward", "channels_last")]
    assert all(r["case"] == "N=8 C=4 4x4 K=2" for r in records)


def test_triton_rows_are_skipped_on_cpu_with_the_reason(monkeypatch):
    from localnorm.benchmarks._cases import LayerCase

    reason = tb.triton_rows(torch.device("cpu"))
    assert reason and "CUDA" in reason
    monkeypatch.setattr(tb, "compare", _fake_compare([]))
    (rec,) = tb.layer_comparisons(LayerCase(8, 4, 4, 2), "NCHW", torch.device("cpu"),
                                  settings=None, ops=("forward",))
    assert not [r for r in rec["rows"] if r["name"].endswith(tb.TRITON_OFF)]


def test_triton_off_rows_run_the_same_layers_with_the_kernels_switched_off(monkeypatch):
    """Where the kernels run (CUDA), each LocalNorm2d row has a "Triton off" twin (the
    paths before the kernels), without a target, whose layer calls run with the kernels
    switched off; the other rows' with them on. Imports no Triton (this process may
    hold TensorFlow, after which loading Triton's LLVM aborts)."""
    from localnorm.benchmarks._cases import LayerCase
    from localnorm.benchmarks._timing import Timing
    from localnorm.torch import _triton

    states: list = []
    off_by_row: dict = {}

    def compare(candidates, *, baseline, settings, sync):
        for name, fn in candidates.items():
            states.clear()
            fn()
            off_by_row[name] = set(states)
        return Timing(samples={n: [1.0] for n in candidates}, baseline=baseline,
                      inner={n: 1 for n in candidates})

    monkeypatch.setattr(tb, "triton_rows", lambda device: None)
    monkeypatch.setattr(tb, "compare", compare)
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda mod, args: states.append(_triton._off)
        if type(mod).__name__ == "LocalNorm2d" else None)
    try:
        for op in ("forward+backward", "eval"):
            off_by_row.clear()
            (rec,) = tb.layer_comparisons(LayerCase(8, 4, 4, 2), "channels_last",
                                          torch.device("cpu"), settings=None, ops=(op,))
            rows = {r["name"]: r for r in rec["rows"]}
            twins = [n for n in rows if n.endswith(tb.TRITON_OFF)]
            assert len(twins) == 2
            for twin in twins:
                assert "target" not in rows[twin]
                assert off_by_row[twin] == {True}
                assert off_by_row[twin.removesuffix(tb.TRITON_OFF)] == {False}
    finally:
        hook.remove()
    assert not _triton._off  # restored after each call
