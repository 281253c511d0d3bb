"""``daq probe`` against simulators: Modbus RTU on a real pseudo-terminal (simulated Modbus BMS modules
on one bus), and a bench file's device on Modbus TCP (``--bench``)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import yaml

from daq.clock import MonotonicClock
from daq.config.bench import SimulationConfig
from simulators.hardware import SimulatedHardware
from tests.helpers import sim_bench


async def probe(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daq.cli.main", "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_decodes_one_module_of_an_rtu_bus_by_its_map_and_times_out_on_a_missing_unit() -> None:
    cfg = SimulationConfig.model_validate(
        {
            "pack": {"series_cells": 16, "capacity_ah": 27, "initial_soc": 0.5},
            "simulators": [
                {"kind": "bms", "name": "bus", "protocol": "modbus", "addresses": [1, 2], "pacing": False}
            ],
        }
    )
    hardware = SimulatedHardware(cfg, clock=MonotonicClock())
    await hardware.start()
    try:
        port = hardware.serial_path("bus")
        code, out, err = await probe("--serial", port, "--baud", "19200", "--unit", "2", "--regmap", "builtin:sim_bms",
                                     "--json")
        assert code == 0, err
        channels = {c["name"]: c for c in json.loads(out)["channels"]}
        module = hardware.bms_devices["bus"][2]
        # Module 2 sees pack cells 9..16; its first cell slot holds cell 9's voltage.
        cell = hardware.pack.snapshot().cell_voltages_v[8]
        first_cell = next(c for name, c in channels.items() if name.startswith("cell") and name.endswith("_v"))
        assert abs(first_cell["value"] - cell) < 0.01, (first_cell, cell, module)
        assert channels["voltage_v"]["quality"] == "good"

        code, out, err = await probe("--serial", port, "--unit", "7", "--timeout", "0.3", "--table", "input",
                                     "--count", "4")
        assert code == 2
        assert err.count("\n") == 1 and "unit 7 did not answer within 0.3 s" in err and "--unit" in err
    finally:
        await hardware.stop()


async def test_probe_of_a_bench_device_uses_its_transport_unit_and_register_map(tmp_path: Path) -> None:
    cfg = SimulationConfig.model_validate(
        {"pack": {"series_cells": 14, "capacity_ah": 27}, "simulators": [{"kind": "cycler", "name": "sim", "port": 0}]}
    )
    hardware = SimulatedHardware(cfg, clock=MonotonicClock())
    await hardware.start()
    try:
        host, port = hardware.tcp_address("sim")
        bench = yaml.safe_load(sim_bench(tmp_path).read_text())
        del bench["simulation"]  # a real bench: the device at its address
        bench["devices"][0]["transport"] = {"kind": "tcp", "host": host, "port": port}
        path = tmp_path / "real.yaml"
        path.write_text(yaml.safe_dump(bench))

        code, out, err = await probe("--bench", str(path), "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["regmap"] == "sim-cycler" and result["device"] == f"{host}:{port}"
        voltage = next(c for c in result["channels"] if c["name"] == "voltage_v")
        assert voltage["quality"] == "good" and 14 * 3.0 < voltage["value"] < 14 * 4.25  # the 14s pack, at rest

        code, out, err = await probe("--bench", str(path), "--table", "input", "--count", "2", "--json")
        assert code == 0, err
        assert len(json.loads(out)["registers"]) == 2

        (tmp_path / "sim").mkdir()
        code, _, err = await probe("--bench", str(sim_bench(tmp_path / "sim")), "--json")
        assert code == 2 and err.count("\n") == 1 and "in-process simulator sim-0" in err and "daq sim" in err
        code, _, err = await probe("--bench", str(path), "--device", "ghost")
        assert code == 2 and "no Modbus device named 'ghost' (it has: cycler-0)" in err
    finally:
        await hardware.stop()
