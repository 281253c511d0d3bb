"""Measurement helpers shared by the scenarios: CPU, memory, percentiles, result rows.

Every figure a scenario reports is measured in the process that runs the client side (the DAQ
or its baseline); the simulators run in another process (``benchmarks.simfarm``) so their CPU
is not counted against the client.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (from /proc: includes every thread)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(slots=True)
class CpuWindow:
    """CPU seconds (all threads of this process) and wall seconds over a measured window."""

    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def stop(self) -> CpuWindow:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = time.process_time() - self.cpu0
        return self

    @property
    def cpu_pct(self) -> float:
        """CPU use as a percentage of one core (200 % = both cores of this machine)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (the simulator farm), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields_ = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds so far per thread of this process, by role (threads of one role summed)."""
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        tid = thread.native_id
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        name = "event loop" if thread is threading.main_thread() else thread.name.split("_")[0].rstrip("-0123456789")
        out[name] = out.get(name, 0.0) + (int(parts[11]) + int(parts[12])) / CLOCK_TICKS
    return out


def thread_cpu_split(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """CPU % of one core per thread role between two ``thread_cpu_s`` readings."""
    return {k: round(100 * (v - before.get(k, 0.0)) / wall_s, 1) for k, v in sorted(after.items())}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def jitter_ms(lateness_s: Iterable[float]) -> dict[str, float]:
    """Poll-start lateness (actual start - scheduled deadline) as p50/p99/max in milliseconds."""
    values = [x * 1000 for x in lateness_s]
    return {
        "jitter_p50_ms": percentile(values, 50),
        "jitter_p99_ms": percentile(values, 99),
        "jitter_max_ms": max(values) if values else math.nan,
    }


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def goal(name: str, target: str, measured: float, passed: bool, unit: str = "") -> dict[str, Any]:
    """One goal of the issue checked against a figure of this run."""
    return {"goal": name, "target": target, "measured": measured, "unit": unit, "pass": bool(passed)}


def scenario_result(
    name: str,
    title: str,
    rows: list[dict[str, Any]],
    *,
    goals: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    status: str = "ok",
) -> dict[str, Any]:
    """The JSON shape every scenario returns (``benchmarks.run`` renders it as a markdown table)."""
    return {
        "scenario": name,
        "title": title,
        "status": status,
        "rows": rows,
        "goals": goals or [],
        "notes": notes or [],
    }
