"""A simulated CAN BMS: the shared pack's values encoded into DBC frames, sent cyclically on a bus.

It reuses the driver's pure mapping (``drivers.can.mapping``) the other way round, so it sends
exactly the frames the driver decodes. Every source (message, or mux value of a multiplexed
message) is sent once per its cycle time of bench time; a multiplexed message sends its whole
rotation back to back each cycle. The bus is python-can's: ``virtual`` in tests (in-process),
``vcan0``/``can0`` through ``socketcan`` where the machine has one.

Faults (``CanBmsFaults``, changed live by tests): ``silent`` (nothing sent), ``missing`` (these
messages are not sent), ``wrong_dlc`` (message -> the DLC sent instead, bytes cut or padded),
``out_of_range`` (these signals sent as all-ones raw, outside the DBC range).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from daq.clock import Clock
from drivers.can.driver import open_can_bus
from drivers.can.mapping import CanFrameEncoder, CanMapping, Source
from simulators.bms_bus import module_snapshot, sensor_positions
from simulators.models.pack import SimPack
from simulators.models.snapshot import PackSnapshot

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CanBmsFaults:
    silent: bool = False
    missing: set[str] = field(default_factory=set)
    wrong_dlc: dict[str, int] = field(default_factory=dict)
    out_of_range: set[str] = field(default_factory=set)
    alarms: dict[str, int] = field(default_factory=dict)  # alarm channel (alarm_<name>) -> level 0/1/2


def snapshot_values(mapping: CanMapping, snap: PackSnapshot, *, sensors: int, alarms: dict[str, int]) -> list[float]:
    """The pack as the BMS record would hold it, in ``mapping.channels`` order (+ = charge)."""
    positions = sensor_positions(len(snap.cell_voltages_v), sensors)
    mask = 0
    for i, on in enumerate(snap.balancing[:32]):
        if on:
            mask |= 1 << i
    by_name: dict[str, float] = {
        "voltage_v": snap.voltage_v,
        "current_a": snap.current_a,
        "soc_pct": snap.soc * 100.0,
        "balance_mask": float(mask),
        "charge_fet": 1.0,
        "discharge_fet": 1.0,
    }
    for n, v in enumerate(snap.cell_voltages_v, 1):
        by_name[f"cell{n}_v"] = v
    for n, cell in enumerate(positions, 1):
        by_name[f"temp{n}_c"] = snap.cell_temperatures_c[cell]
    by_name.update({name: float(level) for name, level in alarms.items()})
    return [by_name.get(c.name, 0.0 if c.name.startswith("alarm_") else math.nan) for c in mapping.channels]


class SimCanBms:
    """Sends one pack's frames on ``interface:channel`` until stopped."""

    def __init__(
        self,
        pack: SimPack,
        mapping: CanMapping,
        *,
        clock: Clock,
        interface: str,
        channel: str,
        first_cell: int = 0,
        cells: int,
        sensors: int,
        faults: CanBmsFaults | None = None,
    ) -> None:
        self.pack = pack
        self.mapping = mapping
        self.encoder = CanFrameEncoder(mapping)
        self.clock = clock
        self.interface = interface
        self.channel = channel
        self.first_cell = first_cell
        self.cells = cells
        self.sensors = sensors
        self.faults = faults or CanBmsFaults()
        self.frames_sent = 0
        self._bus: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port_path(self) -> str:
        return f"{self.interface}:{self.channel}"

    async def start(self) -> None:
        self._bus = open_can_bus(self.interface, self.channel, None)
        self._task = asyncio.create_task(self._run(), name=f"sim-can:{self.channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def frames_now(self, due: set[tuple[int, int | None]] | None = None) -> list[tuple[Source, bytes]]:
        """The frames of the ``due`` sources (default all) for the pack as it is now, faults applied."""
        faults = self.faults
        snap = module_snapshot(self.pack.snapshot(), self.first_cell, self.cells)
        values = snapshot_values(self.mapping, snap, sensors=self.sensors, alarms=faults.alarms)
        out = []
        for source in self.mapping.sources:
            if source.message in faults.missing or (due is not None and (source.frame_id, source.mux) not in due):
                continue
            data = self.encoder.encode(source, values, out_of_range=frozenset(faults.out_of_range))
            dlc = faults.wrong_dlc.get(source.message)
            if dlc is not None:
                data = (data + bytes(8))[:dlc]
            out.append((source, data))
        return out

    async def _run(self) -> None:
        import can

        clock = self.clock
        sources = self.mapping.sources
        due = dict.fromkeys([(s.frame_id, s.mux) for s in sources], clock.monotonic())
        while True:
            now = clock.monotonic()
            sending = {(s.frame_id, s.mux) for s in sources if due[(s.frame_id, s.mux)] <= now}
            if sending and not self.faults.silent:
                for source, data in self.frames_now(sending):
                    extended = self.mapping.frames[source.frame_id].message.is_extended_frame
                    msg = can.Message(arbitration_id=source.frame_id, data=data, is_extended_id=extended)
                    try:
                        self._bus.send(msg)
                    except can.CanError as exc:
                        log.warning("simulated CAN BMS on %s: send failed: %s", self.port_path, exc)
                    self.frames_sent += 1
            for s in sources:
                key = (s.frame_id, s.mux)
                if key in sending:
                    due[key] = max(due[key] + s.cycle_s, now)
            await clock.sleep_until(min(due.values()))
