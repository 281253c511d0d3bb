"""Benches with BMS units on simulated serial buses: bench files in, records out.

The same pack backs the cycler and the BMS simulators, so cycler current moves the cells the BMS
reports. Faults are scripted from the bench file (``simulation.simulators[].faults``) or changed
live through ``bench.simulation``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.errors import ConfigError, ConnectError
from daq.journal import JournalReader
from daq.records import Quality
from tests.helpers import CYCLER_REGMAP, REPO, wait_until

BMS_REGMAP = str(REPO / "configs" / "regmaps" / "sim_bms.yaml")
GOOD = int(Quality.GOOD)


def write_bench(
    tmp_path: Path,
    *,
    bms: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    cycler: bool = True,
    time_scale: float = 1.0,
    series_cells: int = 14,
) -> Path:
    sims: list[dict[str, Any]] = [{"kind": "cycler", "name": "sim-cycler", "port": 0}] if cycler else []
    all_devices = list(devices)
    if cycler:
        all_devices.insert(
            0,
            {
                "name": "cycler-1",
                "kind": "modbus",
                "role": "cycler",
                "transport": {"kind": "tcp", "simulator": "sim-cycler"},
                "regmap": CYCLER_REGMAP,
                "poll_period_s": 0.1,
                "timeout_s": 0.3,
            },
        )
    cfg: dict[str, Any] = {
        "bench": {"id": "bmsbench"},
        "journal": {"path": str(tmp_path / "journal.sqlite"), "commit_interval_s": 0.1},
        "devices": all_devices,
    }
    if sims or bms:
        cfg["simulation"] = {
            "time_scale": time_scale,
            "pack": {"series_cells": series_cells, "capacity_ah": 27},
            "simulators": sims + bms,
        }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def bms_device(name: str, kind: str, sim: str, **extra: Any) -> dict[str, Any]:
    dev: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "transport": {"kind": "serial", "port": f"sim:{sim}", "baud": 9600},
        "poll_period_s": 0.1,
        "timeout_s": 0.3,
        **extra,
    }
    if kind == "modbus":
        dev.setdefault("role", "bms")
        dev.setdefault("regmap", BMS_REGMAP)
    return dev


def value(bench: Bench, device: str, channel: str) -> float:
    rec = bench.latest.get(device)
    return math.nan if rec is None else rec.get(channel)


def quality(bench: Bench, device: str, channel: str) -> int:
    rec = bench.latest[device]
    return rec.quality[rec.schema.index[channel]]


async def test_cycler_and_jbd_share_the_pack_and_every_cell_is_recorded(tmp_path: Path) -> None:
    path = write_bench(
        tmp_path,
        bms=[{"kind": "bms", "name": "sim-bms", "protocol": "jbd", "pacing": True}],
        devices=[bms_device("bms-1", "jbd", "sim-bms", cells=14, sensors=2, timeout_s=0.5, poll_period_s=0.2)],
        time_scale=5,
    )
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        await bench.cyclers["cycler-1"].apply(CyclerCommand(CyclerMode.CC, current_a=10.0, voltage_v=14 * 4.2))
        await wait_until(lambda: value(bench, "bms-1", "current_a") > 9.9, what="the BMS sees the charge current")
        v_charging = value(bench, "bms-1", "cell1_v")
        await bench.cyclers["cycler-1"].apply(CyclerCommand(CyclerMode.CC, current_a=-10.0, voltage_v=14 * 3.0))
        await wait_until(lambda: value(bench, "bms-1", "current_a") < -9.9, what="the BMS sees the discharge current")
        assert value(bench, "bms-1", "cell1_v") < v_charging  # IR drop flips with the current
        await wait_until(lambda: bench.pollers["bms-1"].stats.good_polls >= 5, what="five good BMS polls")
    finally:
        await bench.stop()
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        records = [r for r in reader.iter_run_records(bench.run_id) if r.device == "bms-1"]
    schema = records[0].schema
    assert schema.kind == "bms"
    assert [f"cell{n}_v" for n in range(1, 15)] == [c for c in schema.names if c.startswith("cell")]
    good = [r for r in records if r.all_good()]
    assert len(good) >= 5
    last = good[-1]
    assert all(3.0 < last.get(f"cell{n}_v") < 4.3 for n in range(1, 15))
    assert last.get("voltage_v") == pytest.approx(sum(last.get(f"cell{n}_v") for n in range(1, 15)), abs=0.03)


async def test_a_dead_daly_board_does_not_starve_the_others_on_the_bus(tmp_path: Path) -> None:
    path = write_bench(
        tmp_path,
        bms=[
            {
                "kind": "bms",
                "name": "sim-daly",
                "protocol": "daly",
                "addresses": [1, 2, 3],
                "pacing": True,
                "baud": 115200,
                "unit_faults": {2: {"silent": True}},
            }
        ],
        devices=[
            {
                **bms_device(f"bms-{a}", "daly", "sim-daly", address=a, cells=4, sensors=2, poll_period_s=0.5),
                "transport": {"kind": "serial", "port": "sim:sim-daly", "baud": 115200},
            }
            for a in (1, 2, 3)
        ],
        series_cells=12,
        cycler=False,
    )
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        alive, dead = [bench.pollers["bms-1"], bench.pollers["bms-3"]], bench.pollers["bms-2"]
        await wait_until(lambda: all(p.stats.good_polls >= 4 for p in alive), what="four good polls of boards 1 and 3")
        assert all(p.stats.timeouts == 0 for p in alive)
        assert dead.stats.good_polls == 0
        assert bench.latest["bms-2"].quality[0] in (int(Quality.TIMEOUT), int(Quality.COMM_LOST))
        # The silent board comes back by itself when it answers again.
        bench.simulation.bms_buses["sim-daly"].members[2].faults.silent = False
        await wait_until(lambda: dead.stats.good_polls >= 1, timeout=30, what="board 2 answering again")
    finally:
        await bench.stop()


async def test_faults_scripted_in_the_bench_file_reach_the_records(tmp_path: Path) -> None:
    path = write_bench(
        tmp_path,
        bms=[
            {
                "kind": "bms",
                "name": "sim-bms",
                "protocol": "jbd",
                "pacing": False,
                "faults": {
                    "protections": {"cell_overvoltage": "alarm"},
                    "open_sensors": [2],
                    "drift_cells_v_per_s": {3: 0.05},
                },
            }
        ],
        devices=[bms_device("bms-1", "jbd", "sim-bms", cells=14, sensors=2)],
        time_scale=10,
    )
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        await wait_until(
            lambda: "bms-1" in bench.latest and value(bench, "bms-1", "cell3_v") > 4.5, what="cell 3 drifting high"
        )
        assert value(bench, "bms-1", "alarm_level") == 2 and value(bench, "bms-1", "alarm_cell_overvoltage") == 2
        assert quality(bench, "bms-1", "temp2_c") == int(Quality.OUT_OF_RANGE)
        assert quality(bench, "bms-1", "temp1_c") == GOOD
        assert value(bench, "bms-1", "cell4_v") < 4.2
    finally:
        await bench.stop()


async def test_modbus_rtu_bms_modules_on_one_bus_with_an_exception_fault(tmp_path: Path) -> None:
    path = write_bench(
        tmp_path,
        bms=[
            {
                "kind": "bms",
                "name": "sim-mb",
                "protocol": "modbus",
                "addresses": [1, 2],
                "cells_per_module": 32,
                "sensors_per_module": 4,
                "baud": 115200,
                "unit_faults": {2: {"exception_next": 1000000, "exception_code": 4}},
            }
        ],
        devices=[bms_device(f"module-{u}", "modbus", "sim-mb", unit_id=u) for u in (1, 2)],
        series_cells=64,
        cycler=False,
    )
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        await wait_until(lambda: bench.pollers["module-1"].stats.good_polls >= 3, what="module 1 polled")
        await wait_until(lambda: "module-2" in bench.latest, what="module 2 polled")
        rec = bench.latest["module-2"]
        assert set(rec.quality) == {int(Quality.DEVICE_EXCEPTION)}
        assert bench.latest["module-1"].all_good()
        assert value(bench, "module-1", "cell32_v") > 3.0
        bench.simulation.bms_buses["sim-mb"].unit_faults[2].exception_next = 0
        await wait_until(lambda: bench.latest["module-2"].all_good(), what="module 2 answering")
    finally:
        await bench.stop()


async def test_missing_bms_port_at_start_is_refused_naming_the_port(tmp_path: Path) -> None:
    """At start a missing adapter is a setup error; losing it later is a quality flag and a retry
    (test_bms_serial.py::test_port_that_disappears_reports_a_clear_error_and_comes_back)."""
    port = tmp_path / "ttyUSB-BMS"  # the adapter is unplugged
    path = write_bench(
        tmp_path,
        bms=[],
        devices=[
            {
                "name": "bms-1",
                "kind": "jbd",
                "transport": {"kind": "serial", "port": str(port), "baud": 9600},
                "cells": 14,
                "sensors": 2,
                "poll_period_s": 0.1,
                "timeout_s": 0.3,
            }
        ],
    )
    bench = Bench(load_bench(path))
    with pytest.raises(ConnectError, match=f"serial port {port} does not exist"):
        await bench.start()


async def test_wrong_baud_rate_flags_the_bms_while_the_bench_runs_on(tmp_path: Path) -> None:
    device = bms_device("bms-1", "jbd", "sim-bms", cells=14, sensors=2)
    device["transport"]["baud"] = 19200  # the BMS is set to 9600
    path = write_bench(tmp_path, bms=[{"kind": "bms", "name": "sim-bms", "protocol": "jbd"}], devices=[device])
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        await wait_until(lambda: bench.pollers["bms-1"].stats.errors >= 2, what="garbled BMS polls")
        assert set(bench.latest["bms-1"].quality) == {int(Quality.BAD_FRAME)}
        assert "wrong baud rate (configured 19200)" in bench.pollers["bms-1"].stats.last_error
        assert bench.latest["cycler-1"].all_good()
        bench.simulation.bms_buses["sim-bms"].baud = 19200  # the BMS reconfigured to the bench file's rate
        await wait_until(lambda: bench.latest["bms-1"].all_good(), what="the BMS read correctly again")
    finally:
        await bench.stop()


def test_bench_file_refuses_mixed_protocols_and_shared_jbd_ports(tmp_path: Path) -> None:
    shared = {"kind": "serial", "port": "/dev/ttyUSB7", "baud": 9600}
    jbd = {"name": "a", "kind": "jbd", "transport": shared, "cells": 4}
    daly = {"name": "b", "kind": "daly", "transport": shared, "cells": 4}
    path = write_bench(tmp_path, bms=[], devices=[jbd, daly], cycler=False)
    with pytest.raises(ConfigError, match="one bus carries one protocol"):
        load_bench(path)
    path = write_bench(tmp_path, bms=[], devices=[jbd, {**jbd, "name": "c"}], cycler=False)
    with pytest.raises(ConfigError, match="no device address"):
        load_bench(path)
    sim = {"kind": "bms", "name": "sim-bms", "protocol": "daly", "addresses": [1, 2]}
    path = write_bench(tmp_path, bms=[sim], devices=[bms_device("d", "jbd", "sim-bms", cells=7)], cycler=False)
    with pytest.raises(ConfigError, match="speaks daly"):
        load_bench(path)
    path = write_bench(
        tmp_path, bms=[sim], devices=[bms_device("d", "daly", "sim-bms", cells=9, address=1)], cycler=False
    )
    with pytest.raises(ConfigError, match=r"cells: 9, but simulator sim-bms has 7 cells per module"):
        load_bench(path)


def daq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_validate_prints_the_bus_budget_and_refuses_an_overloaded_bus(tmp_path: Path) -> None:
    sim = {"kind": "bms", "name": "sim-daly", "protocol": "daly", "addresses": [1, 2, 3], "pacing": True}
    devices = [bms_device(f"bms-{a}", "daly", "sim-daly", address=a, cells=4, poll_period_s=2.0) for a in (1, 2, 3)]
    path = write_bench(tmp_path, bms=[sim], devices=devices, series_cells=12, cycler=False)
    ok = daq("validate", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "bus sim:sim-daly at 9600 baud" in ok.stdout and "-> ok" in ok.stdout
    fast = [{**d, "poll_period_s": 0.2} for d in devices]  # 3 x 6 queries, 5 times a second, at 9600 baud
    path = write_bench(tmp_path, bms=[sim], devices=fast, series_cells=12, cycler=False)
    over = daq("validate", str(path))
    assert over.returncode == 2
    assert "serial bus sim:sim-daly at 9600 baud cannot keep up" in over.stderr
    assert "Traceback" not in over.stderr and over.stdout.startswith("bus overloaded:")
