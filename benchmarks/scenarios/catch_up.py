"""Catch-up: replay of the journal's backlog after a sink outage.

K meters (64 values) polled at 10 Hz with both sinks on; then Mosquitto and VictoriaMetrics are
stopped for the outage (60 s in the full run) while polling and journaling go on; then both come
back on the same ports. Reported: backlog at the end of the outage, the time until the slowest
sink has caught up with the live head, and the replay rate (records delivered during the
catch-up / its duration; live records keep arriving meanwhile). The sinks' reconnect backoff is
capped at 1 s here so the figure is the replay, not the wait.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.common import CpuWindow, goal, scenario_result
from benchmarks.devices import METER_VALUES
from benchmarks.harness import BenchDevice, SinkSet, make_bench, servers, wait_until, workdir, write_bench
from benchmarks.simfarm import SimDevice, SimFarm

NAME = "catch_up"
TITLE = "Catch-up: backlog replay after a sink outage (MQTT + InfluxDB down, polling on)"


def cases(smoke: bool) -> list[str]:
    return ["2x1"] if smoke else ["50x60"]


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    k_text, outage_text = case.split("x")
    k, outage_s = int(k_text), float(outage_text)
    warmup_s = 0.3 if smoke else 3.0
    with (
        SimFarm([SimDevice(f"sim-{i}", "meter") for i in range(k)]) as farm,
        workdir("catchup") as folder,
        servers(folder) as srv,
    ):
        devices = [BenchDevice(f"meter-{i}", "meter", port, 0.1) for i, port in enumerate(farm.ports.values())]
        bench = make_bench(write_bench(folder, devices))
        await bench.start()
        sinks = SinkSet(bench).start(srv)
        try:
            await asyncio.sleep(warmup_s)
            await asyncio.to_thread(srv.mosquitto.stop)
            await asyncio.to_thread(srv.victoria.stop)
            outage_start = time.perf_counter()
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(bench.journal.flush)
            delivered_before = sinks.delivered()
            await asyncio.to_thread(srv.mosquitto.start)
            await asyncio.to_thread(srv.victoria.start)
            outage_real_s = time.perf_counter() - outage_start
            backlog = bench.journal.committed_record_seq - sinks.cursors()
            window = CpuWindow()

            def caught_up() -> bool:
                return sinks.cursors() >= bench.journal.committed_record_seq - 2 * k

            done = await wait_until(caught_up, timeout_s=60 if smoke else 600, interval_s=0.05)
            window.stop()
            replayed = sinks.delivered() - delivered_before
            inflow = bench.records_seen / max(time.perf_counter() - outage_start + warmup_s, 1e-9)
            delivered_total = sinks.delivered()
            polled_total = bench.records_seen
        finally:
            await bench.stop()
    return {
        "devices": k,
        "outage_s": outage_real_s,
        "live_records_per_s": inflow,
        "backlog_records": backlog,
        "backlog_values": backlog * METER_VALUES,
        "caught_up": done,
        "catch_up_s": window.wall_s,
        "replay_records_per_s": replayed / window.wall_s,
        "replay_values_per_s": replayed * METER_VALUES / window.wall_s,
        "replay_to_live_ratio": replayed / window.wall_s / max(inflow, 1e-9),
        "cpu_pct": window.cpu_pct,
        "delivered_records": delivered_total,
        "polled_records": polled_total,
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    goals = [
        goal(
            "backlog replayed after the outage (slowest sink back at the live head)",
            "caught up",
            r["catch_up_s"],
            bool(r["caught_up"]),
            "s",
        )
        for r in rows
    ]
    goals += [
        goal(
            "catch-up rate after the outage vs the live rate",
            ">= 2x",
            r["replay_to_live_ratio"],
            r["replay_to_live_ratio"] >= 2.0,
            "x",
        )
        for r in rows
    ]
    notes = ["Replay rate counts every record the slowest sink delivered during catch-up (backlog + live inflow)."]
    return scenario_result(NAME, TITLE, rows, goals=goals, notes=notes)
