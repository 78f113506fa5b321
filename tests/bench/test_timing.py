"""The interleaved timing machinery, on a fake clock (exact, and no timing is asserted)."""

import pytest

from localnorm.benchmarks import _timing
from localnorm.benchmarks._timing import Settings, compare


class FakeClock:
    """perf_counter that only advances when a fake workload runs."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def __call__(self):
        return self.now

    def work(self, name, cost):
        def fn():
            self.calls.append(name)
            self.now += cost
            return name

        return fn


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter", c)
    return c


def test_ratios_are_paired_medians(clock):
    fns = {"bn": clock.work("bn", 1.0), "ln": clock.work("ln", 2.5), "gn": clock.work("gn", 0.5)}
    t = compare(fns, baseline="bn", settings=Settings(rounds=5, warmup=0, min_sample_s=0.0))
    assert t.ratio("ln") == pytest.approx(2.5)
    assert t.ratio("gn") == pytest.approx(0.5)
    assert t.ratio("ln", baseline="gn") == pytest.approx(5.0)
    assert t.median_ms("bn") == pytest.approx(1000.0)
    assert all(len(s) == 5 for s in t.samples.values())


def test_rounds_are_interleaved_and_rotated(clock):
    fns = {n: clock.work(n, 1.0) for n in "abc"}
    compare(fns, baseline="a", settings=Settings(rounds=3, warmup=1, min_sample_s=0.0))
    # warm-up (a b c), one calibration call each (a b c), then rotated rounds
    assert clock.calls[:6] == list("abcabc")
    assert clock.calls[6:] == list("abc" "bca" "cab")


def test_samples_repeat_short_calls_to_min_duration(clock):
    fns = {"fast": clock.work("fast", 0.001), "slow": clock.work("slow", 0.1)}
    t = compare(fns, baseline="slow", settings=Settings(rounds=2, warmup=0, min_sample_s=0.05))
    assert t.inner == {"fast": 50, "slow": 1}
    assert t.ratio("fast") == pytest.approx(0.01)


def test_sync_is_called_once_per_sample(clock):
    seen = []
    fns = {"a": clock.work("a", 1.0), "b": clock.work("b", 1.0)}
    compare(fns, baseline="a", settings=Settings(rounds=4, warmup=2, min_sample_s=0.0),
            sync=seen.append)
    # 2 warm-ups + 1 calibration + 4 rounds, per callable
    assert sorted(seen) == ["a"] * 7 + ["b"] * 7


def test_unknown_baseline_is_refused(clock):
    with pytest.raises(KeyError, match="nope"):
        compare({"a": clock.work("a", 1.0)}, baseline="nope", settings=_timing.QUICK)


def test_ratio_spread_is_reported(clock):
    b_costs = iter([1.0, 2.0, 3.0, 4.0, 5.0])  # calibration, then one per round

    def b():
        clock.now += next(b_costs)
        return "b"

    t = compare({"a": clock.work("a", 1.0), "b": b}, baseline="a",
                settings=Settings(rounds=4, warmup=0, min_sample_s=0.0))
    # paired ratios 2, 3, 4, 5
    assert t.ratio("b") == pytest.approx(3.5)
    q1, q3 = t.ratio_iqr("b")
    assert q1 == pytest.approx(2.75) and q3 == pytest.approx(4.25)
