"""What the serial BMS drivers (JBD, Daly) share: the poll of several requests, per-part qualities,
and reporting a problem once rather than every poll.

A poll is a list of parts, each one request (or one multi-frame query) that fills some channels.
A part that fails marks only its channels (BAD_FRAME for garbled or foreign bytes,
DEVICE_EXCEPTION for a refusal, TIMEOUT for silence) and the poll goes on. If the very first
part gets no answer at all, the device is absent: ``ResponseTimeoutError`` goes up at once so
the poll engine counts a timeout, retries and reconnects, and the shared bus is not held for
every remaining request of a dead device.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from daq.errors import DeviceExceptionError, ProtocolError, ResponseTimeoutError
from daq.records import DeviceSchema, Quality
from drivers.bms.layout import BmsLayout
from drivers.bms.model import bms_channels
from drivers.bus import SerialBus

log = logging.getLogger(__name__)

Fill = Callable[[list[float], bytearray], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PollPart:
    label: str  # for messages, e.g. "cell voltages (0x04)"
    slots: tuple[range, ...]  # the channels it fills
    fill: Fill


class SerialBmsDriver:
    """Base of the JBD and Daly drivers: name, schema, info, connect/read/close over a ``SerialBus``."""

    protocol: ClassVar[str] = ""

    def __init__(self, name: str, *, bus: SerialBus, cells: int, sensors: int, timeout_s: float) -> None:
        self.name = name
        self.bus = bus
        self.cells = cells
        self.sensors = sensors
        self.timeout_s = timeout_s
        self.schema = DeviceSchema(name, "bms", bms_channels(cells, sensors))
        self.layout = BmsLayout(cells, sensors)
        self.info: dict[str, str | float] = {"protocol": self.protocol, "port": bus.link.port}
        self._problem = ""  # the problem last logged, with numbers masked, so it is logged once

    @property
    def where(self) -> str:
        return f"{self.name} ({self.protocol} on {self.bus.link.port})"

    # -- lifecycle -----------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the shared port and probe the device. Raises ``ConnectError`` or ``ResponseTimeoutError``."""
        self.bus.connect(self.name)
        await self.probe()

    async def probe(self) -> None:
        """Read identification and sizes once; subclasses override."""

    async def close(self) -> None:
        self.bus.release(self.name)

    def check_sizes(self, *, cells: int, sensors: int) -> None:
        """Warn once if the BMS reports other sizes than the bench file configures."""
        self.info["cells_reported"] = float(cells)
        self.info["sensors_reported"] = float(sensors)
        if (cells, sensors) != (self.cells, self.sensors):
            log.warning(
                "%s: the BMS reports %d cells and %d temperature sensors, the bench file says cells: %d,"
                " sensors: %d; recording %d and %d (fix cells:/sensors: in the bench file)",
                self.where,
                cells,
                sensors,
                self.cells,
                self.sensors,
                self.cells,
                self.sensors,
            )

    # -- polling -------------------------------------------------------------------------------
    def parts(self) -> list[PollPart]:
        raise NotImplementedError

    async def read(self, values: list[float], quality: bytearray) -> None:
        problems: list[str] = []
        answered = False
        for part in self.parts():
            try:
                await part.fill(values, quality)
            except ResponseTimeoutError as exc:
                if not answered:
                    raise
                self._mark(values, quality, part, Quality.TIMEOUT)
                problems.append(f"{part.label}: {exc}")
                continue
            except DeviceExceptionError as exc:
                self._mark(values, quality, part, Quality.DEVICE_EXCEPTION)
                problems.append(f"{part.label}: {exc}")
            except ProtocolError as exc:
                self._mark(values, quality, part, Quality.BAD_FRAME)
                problems.append(f"{part.label}: {exc}")
            answered = True
        self._report(problems)
        if problems:
            raise ProtocolError(
                f"{self.where}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )

    def _mark(self, values: list[float], quality: bytearray, part: PollPart, code: Quality) -> None:
        for slots in part.slots:
            self.layout.mark(values, quality, slots, code)

    def _report(self, problems: list[str]) -> None:
        if not problems:
            if self._problem:
                log.warning("%s: answering correctly again", self.where)
                self._problem = ""
            return
        key = re.sub(r"\d+", "#", problems[0])
        if key != self._problem:
            self._problem = key
            log.warning("%s: %s", self.where, problems[0])
