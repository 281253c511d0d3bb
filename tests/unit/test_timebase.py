"""Bench time and wall-clock time of a run: the mapping, its inverse, and runs recorded without it."""

from __future__ import annotations

import pytest

from daq.clock import ManualClock, MonotonicClock, ScaledClock
from daq.timebase import NS, Timebase, format_duration, run_times

T0 = 1_800_000_000 * NS


def test_a_scaled_clock_maps_bench_time_back_to_the_wall_clock_and_back() -> None:
    clock = ScaledClock(30, start_wall_s=T0 / NS)
    tb = Timebase.of_clock(clock)
    assert tb.time_scale == 30 and tb.bench_origin_ns == T0
    bench = T0 + 300 * NS  # five bench minutes after the origin: ten wall seconds
    assert tb.wall_ns(bench) == tb.wall_origin_ns + 10 * NS
    assert tb.bench_ns(tb.wall_ns(bench)) == bench
    assert Timebase.of_run({"time_scale": 30, "clock": tb.as_metadata()}) == tb


def test_a_lab_clock_is_the_identity() -> None:
    for clock in (MonotonicClock(), ManualClock()):
        tb = Timebase.of_clock(clock)
        assert not tb.simulated and tb.wall_ns(T0) == T0 and tb.bench_ns(T0) == T0


def test_run_times_show_the_wall_clock_with_the_bench_duration_beside_it() -> None:
    tb = Timebase(5.0, T0, T0)
    times = run_times(T0, T0 + 75 * NS, {"time_scale": 5.0, "clock": tb.as_metadata()})
    assert times.exact and times.wall_started_ns == T0 and times.wall_ended_ns == T0 + 15 * NS
    assert times.wall_s == 15 and times.bench_s == 75 and times.bench_note() == "bench 1 min 15 s at ×5"
    lab = run_times(T0, T0 + 75 * NS, {"time_scale": 1.0})
    assert lab.exact and lab.wall_s == 75 and lab.bench_note() == ""


def test_a_simulated_run_recorded_before_origins_were_kept_is_estimated_and_says_so() -> None:
    times = run_times(T0, T0 + 300 * NS, {"time_scale": 30})
    assert not times.exact and times.wall_s == pytest.approx(10) and times.wall_ended_ns == T0 + 10 * NS
    running = run_times(T0, None, {"time_scale": 30})
    assert running.wall_ended_ns is None and running.bench_note() == "bench time ×30"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (4.2, "4.2 s"),
        (42, "42 s"),
        (60, "1 min"),
        (725, "12 min 5 s"),
        (3 * 3600 + 1200, "3 h 20 min"),
        (52 * 3600, "2 d 4 h"),
    ],
)
def test_durations_read_as_a_technician_reads_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
