"""Two clocks of a run, kept apart: bench time (what the battery lived through) and wall time.

Records, ``runs.started_ns``/``ended_ns``, limits and the runner all use bench time: the bench
clock's Unix-like nanoseconds. On a lab bench that is the wall clock. On a simulated bench with
``time_scale`` > 1 it runs faster, so a bench timestamp is not when something happened. The run's
metadata keeps the clock's origin (``clock`` below); the scaled clock is linear, so any bench
time maps back to the wall-clock moment it was recorded (ADR 0015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daq.clock import Clock

METADATA_KEY = "clock"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Timebase:
    """Maps bench nanoseconds to wall-clock nanoseconds: wall = wall0 + (bench - bench0) / scale."""

    time_scale: float = 1.0
    bench_origin_ns: int = 0
    wall_origin_ns: int = 0

    @property
    def simulated(self) -> bool:
        return self.time_scale != 1.0

    def wall_ns(self, bench_ns: int) -> int:
        if not self.simulated:
            return bench_ns
        return self.wall_origin_ns + round((bench_ns - self.bench_origin_ns) / self.time_scale)

    def bench_ns(self, wall_ns: int) -> int:
        """The inverse: the bench time recorded at the wall-clock moment ``wall_ns``."""
        if not self.simulated:
            return wall_ns
        return self.bench_origin_ns + round((wall_ns - self.wall_origin_ns) * self.time_scale)

    def unix_s(self, bench_ns: int) -> float:
        """Unix seconds (wall clock) of a record stamped ``bench_ns``: the exports' Unix Time column."""
        return self.wall_ns(bench_ns) / NS

    def as_metadata(self) -> dict[str, Any]:
        return {
            "time_scale": self.time_scale,
            "bench_origin_ns": self.bench_origin_ns,
            "wall_origin_ns": self.wall_origin_ns,
        }

    @classmethod
    def of_clock(cls, clock: Clock) -> Timebase:
        if clock.time_scale == 1.0:
            return cls()
        bench0 = getattr(clock, "bench_origin_ns", None)
        wall0 = getattr(clock, "real_origin_ns", None)
        if bench0 is None or wall0 is None:  # a clock that cannot say where it started
            return cls(clock.time_scale)
        return cls(clock.time_scale, int(bench0), int(wall0))

    @classmethod
    def of_run(cls, metadata: dict[str, Any]) -> Timebase | None:
        """The run's timebase; None for a simulated run recorded before origins were kept."""
        clock = metadata.get(METADATA_KEY)
        if isinstance(clock, dict):
            try:
                return cls(float(clock["time_scale"]), int(clock["bench_origin_ns"]), int(clock["wall_origin_ns"]))
            except (KeyError, TypeError, ValueError):
                return None
        return cls() if float(metadata.get("time_scale", 1.0)) == 1.0 else None


def timebase_of(metadata: dict[str, Any]) -> Timebase:
    """The run's timebase; identity (Unix Time = bench time) for an old simulated run without origins."""
    return Timebase.of_run(metadata) or Timebase()


def time_description(started_ns: int, ended_ns: int | None, metadata: dict[str, Any]) -> dict[str, Any]:
    """For export sidecars and reports: wall-clock start/end, and bench duration and scale beside them."""
    t = run_times(started_ns, ended_ns, metadata)
    return {
        "started_wall_ns": t.wall_started_ns,
        "ended_wall_ns": t.wall_ended_ns,
        "wall_duration_s": t.wall_s,
        "bench_duration_s": t.bench_s,
        "time_scale": t.time_scale,
        "wall_times_exact": t.exact,
    }


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``: how a technician reads a duration."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


@dataclass(frozen=True, slots=True)
class RunTimes:
    """What a person should read about a run's time: wall-clock start/end, and bench time beside it."""

    wall_started_ns: int
    wall_ended_ns: int | None
    wall_s: float | None
    bench_s: float | None
    time_scale: float
    exact: bool  # False: a simulated run without a recorded origin; wall times are bench times

    def bench_note(self) -> str:
        """``bench 2 h 30 min at ×30`` for a simulated run, '' for a lab run."""
        if self.time_scale == 1.0:
            return ""
        if self.bench_s is None:
            return f"bench time ×{self.time_scale:g}"
        return f"bench {format_duration(self.bench_s)} at ×{self.time_scale:g}"


def run_times(started_ns: int, ended_ns: int | None, metadata: dict[str, Any]) -> RunTimes:
    tb = Timebase.of_run(metadata)
    scale = float(metadata.get("time_scale", 1.0)) if tb is None else tb.time_scale
    bench_s = None if ended_ns is None else (ended_ns - started_ns) / NS
    if tb is None:  # old simulated run: the best we can say is the bench duration divided by the scale
        wall_s = None if bench_s is None else bench_s / scale
        end = None if wall_s is None else started_ns + round(wall_s * NS)
        return RunTimes(started_ns, end, wall_s, bench_s, scale, exact=False)
    start = tb.wall_ns(started_ns)
    end = None if ended_ns is None else tb.wall_ns(ended_ns)
    wall_s = None if end is None else (end - start) / NS
    return RunTimes(start, end, wall_s, bench_s, scale, exact=True)
