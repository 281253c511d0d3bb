"""Big pack: 192 cells plus a cycler, all at 10 Hz, with journal, MQTT and InfluxDB.

Two shapes of the same 192-cell pack, each with the simulated cycler, over Modbus TCP:

- ``192x1``: one BMS reporting all 192 cell voltages, 16 temperatures and pack values (a
  synthetic map, benchmarks/devices.py; 212 values read in 2 requests);
- ``32x6``: six modules of the project's own BMS map (``configs/regmaps/sim_bms.yaml``, 32 cells
  each), one device per module (runs once that map exists).

Reported: values/s recorded, CPU per value (bench process, all threads: polling, decoding,
journal, both sinks), poll-start jitter of the BMS devices, missed polls, sink delivery.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.common import CpuWindow, jitter_ms, scenario_result
from benchmarks.devices import BMS_CELLS, bms_module_cells
from benchmarks.harness import (
    BenchDevice,
    SinkSet,
    Unavailable,
    make_bench,
    servers,
    wait_until,
    workdir,
    write_bench,
)
from benchmarks.simfarm import SimDevice, SimFarm

NAME = "big_pack"
TITLE = "Big pack: 192 cells + cycler at 10 Hz, journal + MQTT + InfluxDB"


def cases(smoke: bool) -> list[str]:
    return ["192x1"] if smoke else ["192x1", "32x6"]


def _layout(case: str) -> tuple[str, int]:
    _cells, modules_text = case.split("x")
    modules = int(modules_text)
    if modules == 1:
        return "bms", 1
    per_module = bms_module_cells()
    if not per_module:
        raise Unavailable("configs/regmaps/sim_bms.yaml does not exist yet")
    return "bms_module", -(-BMS_CELLS // per_module)


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    seconds, warmup_s = (0.6, 0.2) if smoke else (20.0, 2.0)
    kind, modules = _layout(case)
    sims = [SimDevice(f"sim-bms-{m}", kind) for m in range(modules)] + [SimDevice("sim-cycler", "cycler")]
    with SimFarm(sims) as farm, workdir("bigpack") as folder, servers(folder) as srv:
        devices = [BenchDevice(f"bms-{m}", kind, farm.ports[f"sim-bms-{m}"], 0.1) for m in range(modules)]
        devices.append(BenchDevice("cycler-1", "cycler", farm.ports["sim-cycler"], 0.1))
        bench = make_bench(write_bench(folder, devices))
        await bench.start()
        sinks = SinkSet(bench).start(srv)
        try:
            await asyncio.sleep(warmup_s)
            pollers = bench.pollers
            bms = [p for name, p in pollers.items() if name.startswith("bms-")]
            for p in pollers.values():
                p.stats.lateness_s.clear()
            values_per_poll = {name: len(p.driver.schema) for name, p in pollers.items()}
            polls0 = {name: p.stats.polls for name, p in pollers.items()}
            missed0 = sum(p.stats.missed for p in pollers.values())
            delivered0 = sinks.delivered()
            window = CpuWindow()
            await asyncio.sleep(seconds)
            window.stop()
            polls = {name: p.stats.polls - polls0[name] for name, p in pollers.items()}
            missed = sum(p.stats.missed for p in pollers.values()) - missed0
            values = sum(polls[n] * values_per_poll[n] for n in polls)
            bms_jitter = jitter_ms([x for p in bms for x in p.stats.lateness_s])
            good = sum(p.stats.good_polls for p in bms) / max(sum(p.stats.polls for p in bms), 1)
            cells = sum(1 for p in bms for n in p.driver.schema.names if n.startswith("cell") and n.endswith("_v"))
            await asyncio.to_thread(bench.journal.flush)
            last = bench.journal.committed_record_seq
            caught_up = await wait_until(lambda: sinks.cursors() >= last, timeout_s=30)
            delivered = sinks.delivered() - delivered0
        finally:
            await bench.stop()
    return {
        "bms_devices": modules,
        "cells": cells,
        "bms_values_per_poll": sum(values_per_poll[p] for p in values_per_poll if p.startswith("bms-")),
        "cycler_values_per_poll": values_per_poll["cycler-1"],
        "bms_map": "configs/regmaps/sim_bms.yaml" if kind == "bms_module" else "synthetic 192-cell",
        "values_per_s": values / window.wall_s,
        "cpu_pct": window.cpu_pct,
        "cpu_us_per_value": 1e6 * window.cpu_s / max(values, 1),
        "bms_achieved_hz": sum(polls[p.name] for p in bms) / len(bms) / window.wall_s,
        **{f"bms_{k}": v for k, v in bms_jitter.items()},
        "missed_polls": missed,
        "bms_good_fraction": good,
        "records_delivered_by_both_sinks": delivered,
        "sinks_caught_up": caught_up,
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    return scenario_result(
        NAME,
        TITLE,
        rows,
        notes=["CPU per value = bench process CPU (polling, decoding, journal, both sinks) / values polled."],
    )
