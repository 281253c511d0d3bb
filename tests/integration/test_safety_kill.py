"""``kill -9`` of ``daq run`` mid-charge: the cycler's own watchdog switches the output off.

The simulated cycler runs in the test process; ``daq run`` runs as a child process against it over
Modbus TCP, programs the watchdog, pushes the device limits and refreshes the watchdog until it
is killed. Nothing refreshes it afterwards, so the simulator must switch its output off itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import yaml

from daq.channels import CyclerMode
from daq.clock import MonotonicClock
from daq.config.bench import SimulationConfig
from daq.journal import Journal, JournalReader
from simulators.cycler import CyclerAlarm
from simulators.hardware import SimulatedHardware
from tests.helpers import CYCLER_REGMAP, REPO, wait_until
from tests.integration.test_safety_support import journal_events

WATCHDOG_S = 1.0


def committed_records(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


def bench_file(tmp_path: Path, port: int) -> Path:
    cfg = {
        "bench": {"id": "killbench"},
        "journal": {"path": str(tmp_path / "journal.sqlite"), "commit_interval_s": 0.1},
        "devices": [
            {
                "name": "cycler-1",
                "kind": "modbus",
                "role": "cycler",
                "transport": {"kind": "tcp", "host": "127.0.0.1", "port": port},
                "regmap": CYCLER_REGMAP,
                "poll_period_s": 0.1,
                "timeout_s": 0.3,
                "watchdog_timeout_s": WATCHDOG_S,
            }
        ],
        "safety": {"limits": str(REPO / "configs" / "limits" / "demo_nmc_14s.yaml"), "push_device_limits": True},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def test_kill_9_mid_charge_the_cyclers_watchdog_switches_the_output_off(tmp_path: Path) -> None:
    sim_cfg = SimulationConfig.model_validate(
        {"pack": {"series_cells": 14, "capacity_ah": 27}, "simulators": [{"kind": "cycler", "name": "sim", "port": 0}]}
    )
    hardware = SimulatedHardware(sim_cfg, clock=MonotonicClock())
    await hardware.start()
    sim = hardware.cyclers["sim"]
    journal = tmp_path / "journal.sqlite"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daq.cli.main",
        "run",
        str(bench_file(tmp_path, hardware.tcp_address("sim")[1])),
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await wait_until(
            lambda: sim.settings.watchdog_timeout_s == WATCHDOG_S and committed_records(journal) >= 20,
            timeout=60,
            what="daq run polling and refreshing the watchdog",
        )
        assert proc.returncode is None
        assert sim.settings.limit_max_voltage_v == 59.5  # the device limits were pushed at start

        # mid-charge (commanded at the front panel: there is no runner in this bench)
        for name, value in (
            ("current_setpoint_a", 13.5),
            ("voltage_setpoint_v", 58.8),
            ("mode_setpoint", CyclerMode.CC),
        ):
            sim.write(name, value)
        sim.write("output_enable", 1)
        charging_since = sim.pack.t_s
        await wait_until(
            lambda: sim.read("current_a") > 13.0 and sim.pack.t_s - charging_since > 3 * WATCHDOG_S,
            what="charging for three watchdog periods",
        )
        assert sim.read("output_on") == 1  # the refreshes kept the watchdog quiet
        before_kill = committed_records(journal)

        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL

        await wait_until(lambda: sim.read("output_on") == 0, what="the watchdog switching the output off")
        assert sim.alarm_code is CyclerAlarm.WATCHDOG and sim.read("watchdog_tripped") == 1
        assert sim.read("current_a") == 0.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await hardware.stop()

    # nothing committed was lost: the journal reopens, the run reads as interrupted, no holes
    with Journal(journal):
        pass
    with JournalReader(journal) as reader:
        (run,) = reader.runs()
        records = reader.records_after(0, 1_000_000)
    assert run.status == "interrupted"
    assert len(records) >= before_kill
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert [k for k, _ in journal_events(journal, run.run_id, "safety.")][:2] == [
        "safety.limits",
        "safety.device_limits",
    ]
