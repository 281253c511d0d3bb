"""Devices the benchmarks poll: the real simulated cycler, a 64-value meter and a 192-cell BMS.

The cycler is the project's own simulator (``simulators.cycler`` behind ``configs/regmaps/
sim_cycler.yaml``). The meter (64 input registers in one block: the "64 values per poll" of the
issue's goals) and the big-pack BMS (192 cell voltages, temperatures, pack values) are register
maps built here. ``bms_module`` is the project's own BMS module map (``configs/regmaps/
sim_bms.yaml``, up to 32 cells), so a 192-cell pack is also run as six such modules.
The BMS devices are served through ``RegmapUnit`` like every simulator; the meter by ``MeterUnit``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.regmap import RegisterMap, RegisterMapFile, load_regmap

REPO = Path(__file__).resolve().parents[1]
CYCLER_REGMAP = REPO / "configs" / "regmaps" / "sim_cycler.yaml"
BMS_REGMAP = REPO / "configs" / "regmaps" / "sim_bms.yaml"

METER_VALUES = 64
BMS_CELLS = 192
BMS_TEMPS = 16


def meter_regmap_spec(values: int = METER_VALUES) -> dict[str, Any]:
    """``values`` u16 input registers from 0 with scale (64: one read, 64 decoded values per poll)."""
    return {
        "name": f"bench-meter-{values}",
        "description": f"synthetic {values}-channel meter for the benchmarks",
        "registers": [
            {"name": f"ch{n}_v", "table": "input", "address": n, "type": "u16", "scale": 0.001, "unit": "V"}
            for n in range(values)
        ],
    }


def meter_values(kind: str) -> int:
    """Values per poll of a meter kind: ``meter`` (64) or ``meter:<values>``."""
    return METER_VALUES if kind == "meter" else int(kind.split(":", 1)[1])


def bms_regmap_spec(cells: int = BMS_CELLS, temps: int = BMS_TEMPS) -> dict[str, Any]:
    """A big-pack BMS: pack values, then cell voltages (mV) and temperatures (0.1 degC)."""
    regs: list[dict[str, Any]] = [
        {"name": "voltage_v", "table": "input", "address": 0, "type": "u32", "scale": 0.001, "unit": "V"},
        {"name": "current_a", "table": "input", "address": 2, "type": "i32", "scale": 0.001, "unit": "A"},
        {"name": "soc_pct", "table": "input", "address": 4, "type": "u16", "scale": 0.1, "unit": "%"},
        {"name": "alarm_level", "table": "input", "address": 5, "type": "u16"},
    ]
    regs += [
        {"name": f"cell{n}_v", "table": "input", "address": 99 + n, "type": "u16", "scale": 0.001, "unit": "V"}
        for n in range(1, cells + 1)
    ]
    base = 100 + cells
    regs += [
        {
            "name": f"temp{n}_c",
            "table": "input",
            "address": base + n - 1,
            "type": "i16",
            "scale": 0.1,
            "unit": "degC",
            "invalid": [-32768],
        }
        for n in range(1, temps + 1)
    ]
    return {"name": "bench-bms-192", "description": "synthetic 192-cell BMS for the benchmarks", "registers": regs}


def regmap_from_spec(spec: dict[str, Any]) -> RegisterMap:
    return RegisterMap(RegisterMapFile.model_validate(spec), source=spec["name"])


def bms_regmap(kind: str = "bms") -> RegisterMap:
    """``bms``: the synthetic 192-cell BMS; ``bms_module``: the project's BMS module map."""
    if kind == "bms_module":
        return load_regmap(BMS_REGMAP)
    return regmap_from_spec(bms_regmap_spec())


def bms_module_cells() -> int:
    """Cell slots of one module in the project's BMS map (0 while that map does not exist)."""
    if not BMS_REGMAP.exists():
        return 0
    return sum(1 for r in load_regmap(BMS_REGMAP).polled if r.name.startswith("cell") and r.name.endswith("_v"))


def write_regmap(spec: dict[str, Any], folder: Path) -> Path:
    """Write a generated register map as a YAML file (bench files refer to regmaps by path)."""
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class MeterUnit:
    """A ``ModbusUnit`` for the meter: raw words that move on every read, nearly free to serve.

    Synthetic on purpose: the meter stands for "a device with 64 values", and the farm must not
    spend more per request than the client being measured.
    """

    def __init__(self, seed: int = 0, values: int = METER_VALUES) -> None:
        self._n = seed
        self._values = values

    def read(self, table: str, address: int, count: int) -> list[int]:
        from simulators.modbus_server import IllegalAddress

        if table != "input" or address + count > self._values:
            raise IllegalAddress(f"{table} {address}..{address + count - 1} is not mapped")
        self._n = n = (self._n + 1) % 1000
        return [3000 + (n + a) % 1000 for a in range(address, address + count)]

    def write(self, table: str, address: int, values: object) -> None:
        from simulators.modbus_server import IllegalFunction

        raise IllegalFunction("the meter is read-only")


class BmsDevice:
    """Named-register big-pack BMS: cells around 3.6 V with a slow ripple, temperatures, pack sums.

    Answers the standard channel names (``cell{n}_v``, ``temp{n}_c``, ``voltage_v``, ...), so it
    also serves the project's BMS register map when that exists; unknown names read 0.
    """

    def __init__(self, cells: int = BMS_CELLS) -> None:
        self.cells = cells
        self._t0 = time.monotonic()

    def read(self, name: str) -> float:
        t = time.monotonic() - self._t0
        if name.startswith("cell") and name.endswith("_v"):
            n = int(name[4:-2])
            return 3.6 + 0.01 * math.sin(t + n)
        if name.startswith("temp") and name.endswith("_c"):
            return 25.0 + 0.1 * int(name[4:-2])
        if name == "voltage_v":
            return 3.6 * self.cells
        if name == "current_a":
            return -10.0 + math.sin(t)
        if name == "soc_pct":
            return 55.0
        return 0.0

    def write(self, name: str, value: float) -> None:
        raise ValueError(f"{name} is read-only")
