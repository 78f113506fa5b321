"""Pieces of the torch section that the quick CPU run cannot reach."""

import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_bench as tb  # noqa: E402


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
