"""A simulated Modbus RTU BMS module: named values over a slice of a ``SimPack``'s cells.

Served through ``RegmapUnit`` with ``configs/regmaps/sim_bms.yaml`` on a ``ModbusRtuPtyServer``
(one unit id per module, several modules on one bus). ``read(name)`` answers in engineering
units (+ = charge); slots beyond the module's cells or sensors read the map's "no value"
sentinels (0xFFFF for a cell, 0x8000 for a temperature), as does an open thermistor.

One snapshot of the pack serves a whole request: the server runs a request's register reads in
one event-loop callback, so they all see the same instant.
"""

from __future__ import annotations

import asyncio
import math

from drivers.bms.model import AlarmLevel, AlarmName
from simulators.bms_bus import module_snapshot, sensor_positions
from simulators.models.pack import SimPack
from simulators.models.snapshot import PackSnapshot

CELL_SLOTS = 32
SENSOR_SLOTS = 4
ABSENT_CELL_V = 65.535  # raw 0xFFFF at 1 mV
ABSENT_TEMPERATURE_C = -3276.8  # raw 0x8000 (i16 -32768) at 0.1 degC
_ALARM_BITS = {name: bit for bit, name in enumerate(AlarmName)}


class SimModbusBms:
    """One BMS module of ``cells`` cells starting at pack cell ``first_cell`` (0-based)."""

    def __init__(
        self,
        pack: SimPack,
        *,
        first_cell: int = 0,
        cells: int,
        sensors: int = 2,
        model: str = "SIM-MBMS",
        serial_number: str = "",
    ) -> None:
        if not 1 <= cells <= CELL_SLOTS:
            raise ValueError(f"a simulated Modbus BMS module has 1..{CELL_SLOTS} cells, got {cells}")
        if not 0 <= sensors <= SENSOR_SLOTS:
            raise ValueError(f"a simulated Modbus BMS module has 0..{SENSOR_SLOTS} sensors, got {sensors}")
        self.pack = pack
        self.first_cell = first_cell
        self.cells = cells
        self.sensors = sensors
        self.sensor_cells = sensor_positions(cells, sensors)
        self.model = model
        self.serial_number = serial_number or f"SIM{first_cell + 1:03d}"
        self.charge_fet = True
        self.discharge_fet = True
        self.open_sensors: set[int] = set()  # 1-based sensor numbers forced open (broken wire)
        self.alarms: dict[AlarmName, AlarmLevel] = {}  # forced protections, e.g. {CELL_OVERVOLTAGE: ALARM}
        self._snap: PackSnapshot | None = None

    def snapshot(self) -> PackSnapshot:
        """The module's view of the pack, shared by every read of one request."""
        if self._snap is not None:
            return self._snap
        snap = module_snapshot(self.pack.snapshot(), self.first_cell, self.cells)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a server (a unit test): nothing to share with
            return snap
        # The server runs one request's reads in one callback: forget the snapshot right after.
        self._snap = snap
        loop.call_soon(self._forget)
        return snap

    def _forget(self) -> None:
        self._snap = None

    def temperatures_c(self, snap: PackSnapshot) -> list[float]:
        out = []
        for number, cell in enumerate(self.sensor_cells, start=1):
            t = snap.cell_temperatures_c[cell]
            out.append(math.nan if number in self.open_sensors else t)
        return out

    def _flags(self, level: AlarmLevel) -> int:
        return sum(1 << _ALARM_BITS[name] for name, lvl in self.alarms.items() if lvl == level)

    def read(self, name: str) -> float | int | str:
        if name == "model":
            return self.model
        if name == "serial_number":
            return self.serial_number
        if name == "cell_count":
            return self.cells
        if name == "sensor_count":
            return self.sensors
        snap = self.snapshot()
        if name == "nominal_ah":
            return snap.nominal_ah
        if name == "voltage_v":
            return snap.voltage_v
        if name == "current_a":
            return snap.current_a
        if name == "soc_pct":
            return snap.soc * 100
        if name == "alarm_level":
            return int(max(self.alarms.values(), default=AlarmLevel.OK))
        if name == "status":
            return (1 if self.charge_fet else 0) | (2 if self.discharge_fet else 0)
        if name == "balance_mask":
            return sum(1 << i for i, on in enumerate(snap.balancing[:CELL_SLOTS]) if on)
        if name == "warning_flags":
            return self._flags(AlarmLevel.WARNING)
        if name == "protection_flags":
            return self._flags(AlarmLevel.ALARM)
        if name.startswith("cell") and name.endswith("_v"):
            n = int(name[4:-2])
            return snap.cell_voltages_v[n - 1] if n <= self.cells else ABSENT_CELL_V
        if name.startswith("temp") and name.endswith("_c"):
            n = int(name[4:-2])
            temps = self.temperatures_c(snap)
            t = temps[n - 1] if n <= len(temps) else math.nan
            return ABSENT_TEMPERATURE_C if math.isnan(t) else t
        raise KeyError(f"simulated Modbus BMS has no value named {name!r}")

    def write(self, name: str, value: float) -> None:
        raise ValueError(f"{name} is read-only on the simulated Modbus BMS")
