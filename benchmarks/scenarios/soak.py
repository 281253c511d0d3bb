"""Soak: a long run at accelerated simulated time, journal + MQTT + InfluxDB on.

10 simulated cyclers polled every simulated second on a ``ScaledClock`` (the farm runs the
same time scale), for at least one simulated hour. RSS is sampled all along: reported are the
value after warm-up (10 % of the run), the peak and the final value; "flat" means final within
10 % of the warm-up value. Journal growth is per simulated hour; backlog is the slowest sink's.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CpuWindow, goal, rss_mb, scenario_result
from benchmarks.harness import BenchDevice, SinkSet, make_bench, servers, workdir, write_bench
from benchmarks.simfarm import SimDevice, SimFarm
from daq.clock import ScaledClock

NAME = "soak"
TITLE = "Soak: accelerated simulated time, journal + MQTT + InfluxDB"
SAMPLE_S = 0.5  # real seconds between samples (smoke: 0.2)


def cases(smoke: bool) -> list[str]:
    return ["2x120"] if smoke else ["10x80"]


def _size(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    k_text, scale_text = case.split("x")
    k, scale = int(k_text), float(scale_text)
    real_s = 1.2 if smoke else 60.0  # full: 80 simulated minutes
    with (
        SimFarm([SimDevice(f"sim-{i}", "cycler") for i in range(k)], time_scale=scale) as farm,
        workdir("soak") as folder,
        servers(folder) as srv,
    ):
        devices = [BenchDevice(f"cycler-{i}", "cycler", port, 1.0) for i, port in enumerate(farm.ports.values())]
        clock = ScaledClock(scale)
        bench = make_bench(write_bench(folder, devices), clock=clock)
        await bench.start()
        sinks = SinkSet(bench).start(srv)
        journal_path = bench.journal.path
        samples: list[tuple[float, float, int, int]] = []  # (sim s, rss MB, journal bytes, backlog)
        try:
            window = CpuWindow()
            t0 = clock.monotonic()
            while time.perf_counter() - window.wall0 < real_s:
                await asyncio.sleep(0.2 if smoke else SAMPLE_S)
                samples.append((clock.monotonic() - t0, rss_mb(), _size(journal_path), sinks.backlog()))
            window.stop()
            polls = bench.records_seen
        finally:
            await bench.stop()
    warm = samples[max(0, len(samples) // 10 - 1)]
    last = samples[-1]
    sim_hours = (last[0] - warm[0]) / 3600
    return {
        "devices": k,
        "time_scale": scale,
        "simulated_h": last[0] / 3600,
        "real_s": window.wall_s,
        "records": polls,
        "rss_after_warmup_mb": warm[1],
        "rss_peak_mb": max(s[1] for s in samples),
        "rss_final_mb": last[1],
        "rss_final_vs_warmup_pct": 100 * (last[1] - warm[1]) / warm[1],
        "journal_mb_per_sim_h": (last[2] - warm[2]) / 2**20 / sim_hours if sim_hours > 0 else float("nan"),
        "backlog_max_records": max(s[3] for s in samples),
        "backlog_final_records": last[3],
        "cpu_pct": window.cpu_pct,
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    goals = []
    for r in rows:
        goals.append(
            goal(
                "soak: RSS flat (final within 10 % of the value after warm-up)",
                "<= 10 %",
                r["rss_final_vs_warmup_pct"],
                abs(r["rss_final_vs_warmup_pct"]) <= 10,
                "%",
            )
        )
        if not smoke:
            goals.append(
                goal(
                    "soak covers at least one simulated hour", ">= 1 h", r["simulated_h"], r["simulated_h"] >= 1.0, "h"
                )
            )
    notes = [
        "Backlog = records journaled but not yet acknowledged by the slowest sink, sampled every 0.5 s (real).",
        "Journal growth counts the SQLite file and its WAL.",
    ]
    return scenario_result(NAME, TITLE, rows, goals=goals, notes=notes)
