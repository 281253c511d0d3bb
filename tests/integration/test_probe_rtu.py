"""``daq probe`` over Modbus RTU on a real pseudo-terminal: simulated Modbus BMS modules on one bus."""

from __future__ import annotations

import asyncio
import json
import sys

from daq.clock import MonotonicClock
from daq.config.bench import SimulationConfig
from simulators.hardware import SimulatedHardware


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
