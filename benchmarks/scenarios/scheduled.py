"""Scheduled polling: K devices on their deadlines through the project's bench, journal on.

The real composition root (``daq.bench.Bench`` from a bench file) polls K simulated cyclers at
10 Hz (and 10 cyclers at 100 Hz, pulse recording) for a fixed time. Reported: achieved poll rate
per device, poll-start jitter (actual start - deadline, ``DevicePoller.stats.lateness_s``) after
a warm-up, missed polls, CPU (% of one core, all threads), RSS and committed journal records/s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.common import CpuWindow, goal, jitter_ms, peak_rss_mb, rss_mb, scenario_result
from benchmarks.harness import BenchDevice, make_bench, workdir, write_bench
from benchmarks.simfarm import SimDevice, SimFarm

NAME = "scheduled"
TITLE = "Scheduled polling: K cyclers on deadlines through the bench (journal on)"


def cases(smoke: bool) -> list[str]:
    return ["3@10"] if smoke else ["10@10", "50@10", "200@10", "10@100", "50@100"]


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    k_text, hz_text = case.split("@")
    k, hz = int(k_text), float(hz_text)
    seconds, warmup_s = (0.6, 0.2) if smoke else (20.0, 2.0)
    with SimFarm([SimDevice(f"sim-{i}", "cycler") for i in range(k)]) as farm, workdir("sched") as folder:
        devices = [BenchDevice(f"cycler-{i}", "cycler", port, 1.0 / hz) for i, port in enumerate(farm.ports.values())]
        bench = make_bench(write_bench(folder, devices))
        await bench.start()
        try:
            await asyncio.sleep(warmup_s)
            pollers = list(bench.pollers.values())
            for p in pollers:
                p.stats.lateness_s.clear()
            polls0 = sum(p.stats.polls for p in pollers)
            missed0 = sum(p.stats.missed for p in pollers)
            await asyncio.to_thread(bench.journal.flush)
            written0 = bench.journal.records_written
            farm0 = farm.cpu_s()
            window = CpuWindow()
            await asyncio.sleep(seconds)
            window.stop()
            polls = sum(p.stats.polls for p in pollers) - polls0
            missed = sum(p.stats.missed for p in pollers) - missed0
            good = sum(p.stats.good_polls for p in pollers) / max(sum(p.stats.polls for p in pollers), 1)
            lateness = [x for p in pollers for x in p.stats.lateness_s]
            rss = rss_mb()
            await asyncio.to_thread(bench.journal.flush)
            committed = bench.journal.records_written - written0
            farm_cpu = farm.cpu_s() - farm0
        finally:
            await bench.stop()
    return {
        "devices": k,
        "rate_hz": hz,
        "achieved_hz_per_device": polls / window.wall_s / k,
        **jitter_ms(lateness),
        "missed_polls": missed,
        "good_fraction": good,
        "cpu_pct": window.cpu_pct,
        "cpu_us_per_poll": 1e6 * window.cpu_s / max(polls, 1),
        "rss_mb": rss,
        "peak_rss_mb": max(rss, peak_rss_mb()),
        "journal_records_per_s": committed / window.wall_s,
        "farm_cpu_pct": 100 * farm_cpu / window.wall_s,
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    goals = []
    for r in rows:
        if r["devices"] == 200 and r["rate_hz"] == 10:
            goals.append(
                goal(
                    "200 devices at 10 Hz: p99 poll-start jitter",
                    "<= 5 ms",
                    r["jitter_p99_ms"],
                    r["jitter_p99_ms"] <= 5.0,
                    "ms",
                )
            )
            goals.append(goal("200 devices at 10 Hz: missed polls", "0", r["missed_polls"], r["missed_polls"] == 0))
        if r["devices"] == 50 and r["rate_hz"] == 10:
            goals.append(goal("RSS at 50 devices", "<= 100 MB", r["peak_rss_mb"], r["peak_rss_mb"] <= 100, "MB"))
    notes = [
        "Jitter = poll start - scheduled deadline, all devices pooled, after the warm-up; "
        "RSS is the bench process (simulators run in their own process).",
        "cpu_pct is % of one core (this machine has 2); it includes the journal writer thread.",
    ]
    return scenario_result(NAME, TITLE, rows, goals=goals, notes=notes)
