"""Bus budget: can each serial line carry the polls its devices ask for? Pure.

For every serial port of a bench, the request load implied by its devices and poll periods is
compared with what the line carries at its baud rate (DOMAIN.md section 4):

- a character is start + data + parity + stop bits (8N1 = 10 bits);
- Modbus RTU: reading N registers is an 8-byte request and a 5 + 2N byte reply, each frame
  followed by 3.5 characters of silence (1.75 ms above 19200 baud);
- JBD and Daly: frame sizes from their codecs; the bus arbiter leaves its idle gap before each
  request (3.5 characters for JBD, ~20 ms for Daly, see ``drivers.bus``).

The figures are the line's theoretical floor: no device turnaround, no retries. A bus above 100 %
cannot keep up; above ``TIGHT_LOAD`` it has no room for a retry or a slow device.
Poll periods are bench time: with a simulation time scale, the line sees them that much faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daq.config.bench import (
    BenchConfig,
    DalyDeviceConfig,
    JbdDeviceConfig,
    ModbusDeviceConfig,
    SerialTransportConfig,
    SimBmsConfig,
)
from drivers.bms.daly import codec as daly
from drivers.bms.jbd import codec as jbd
from drivers.bus import idle_gap_s
from drivers.modbus.regmap import BIT_TABLES, RegisterMap, plan_reads
from drivers.serial_link import bits_per_char

TIGHT_LOAD = 0.8
MODBUS_READ_REQUEST_BYTES = 8  # unit, function, address, count, CRC
MODBUS_READ_REPLY_OVERHEAD = 5  # unit, function, byte count, CRC


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its reply, in bytes on the line."""

    request_bytes: int
    reply_bytes: int


@dataclass(frozen=True, slots=True)
class LineTiming:
    baud: int
    bits_per_char: int = 10

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baud

    def exchange_s(self, ex: Exchange, protocol: str) -> float:
        """Line time of one exchange, silences included."""
        gap = idle_gap_s(protocol, baud=self.baud, bits_per_char=self.bits_per_char)  # type: ignore[arg-type]
        gaps = 2 if protocol == "modbus" else 1  # RTU: silence ends each frame; JBD/Daly: idle before a request
        return (ex.request_bytes + ex.reply_bytes) * self.char_s + gaps * gap


# --- what one poll of each kind of device puts on the line ----------------------------------------


def modbus_read_exchange(count: int, table: str) -> Exchange:
    """Read ``count`` registers (or bits, for coils and discrete inputs)."""
    data = math.ceil(count / 8) if table in BIT_TABLES else 2 * count
    return Exchange(MODBUS_READ_REQUEST_BYTES, MODBUS_READ_REPLY_OVERHEAD + data)


def modbus_poll(regmap: RegisterMap, *, max_registers_per_read: int = 100, max_gap: int = 8) -> tuple[Exchange, ...]:
    blocks = plan_reads(regmap.polled, max_count=max_registers_per_read, max_gap=max_gap)
    return tuple(modbus_read_exchange(b.count, b.table) for b in blocks)


def jbd_poll(cells: int, sensors: int) -> tuple[Exchange, ...]:
    """Basic info (0x03) and cell voltages (0x04), as the JBD driver polls."""
    basic = jbd.JbdBasicInfo(
        voltage_v=0.0,
        current_a=0.0,
        remaining_ah=0.0,
        nominal_ah=0.0,
        cycles=0,
        production_date_raw=0,
        balance_bits=0,
        protection_bits=0,
        software_version=0,
        soc_pct=0.0,
        charge_fet=False,
        discharge_fet=False,
        cell_count=cells,
        temperatures_c=(25.0,) * sensors,
    )
    request = len(jbd.encode_read_request(jbd.JbdRegister.BASIC_INFO))
    basic_reply = len(jbd.encode_reply(jbd.JbdRegister.BASIC_INFO, jbd.encode_basic_info(basic)))
    cells_reply = len(jbd.encode_reply(jbd.JbdRegister.CELL_VOLTAGES, jbd.encode_cell_voltages([3.7] * cells)))
    return (Exchange(request, basic_reply), Exchange(request, cells_reply))


def daly_poll(cells: int, sensors: int) -> tuple[Exchange, ...]:
    """0x90, 0x93, 0x95 (one frame per 3 cells), 0x96 (per 7 sensors), 0x97, 0x98, as the Daly driver polls."""
    request = len(daly.encode_request(daly.DalyCommand.PACK))
    frames = [1, 1, daly.cell_frame_count(cells)]
    if sensors:
        frames.append(daly.temperature_frame_count(sensors))
    frames += [1, 1]
    return tuple(Exchange(request, n * daly.FRAME_LEN) for n in frames)


# --- per bus ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    device: str
    protocol: str
    exchanges: tuple[Exchange, ...]
    period_s: float  # real seconds between polls
    line_s: float  # line time of one poll

    @property
    def requests_per_s(self) -> float:
        return len(self.exchanges) / self.period_s

    @property
    def load(self) -> float:
        return self.line_s / self.period_s

    @property
    def bytes_per_poll(self) -> int:
        return sum(e.request_bytes + e.reply_bytes for e in self.exchanges)


@dataclass(frozen=True, slots=True)
class BusBudget:
    port: str
    timing: LineTiming
    devices: tuple[DeviceLoad, ...]
    limited: bool = True  # False: a simulated bus that does not pace its bytes

    @property
    def load(self) -> float:
        return sum(d.load for d in self.devices)

    @property
    def requests_per_s(self) -> float:
        return sum(d.requests_per_s for d in self.devices)

    @property
    def max_requests_per_s(self) -> float:
        """Requests per second the line carries with the same mix of requests."""
        return self.requests_per_s / self.load if self.load else math.inf

    @property
    def ok(self) -> bool:
        return not self.limited or self.load <= 1.0

    @property
    def tight(self) -> bool:
        return self.limited and TIGHT_LOAD < self.load <= 1.0

    def describe(self) -> list[str]:
        t = self.timing
        if not self.limited:
            verdict = "simulated without pacing: no line limit"
        elif not self.ok:
            verdict = "CANNOT KEEP UP"
        elif self.tight:
            verdict = "tight: little room for retries"
        else:
            verdict = "ok"
        lines = [
            f"bus {self.port} at {t.baud} baud ({t.bits_per_char} bits/char): {len(self.devices)} device(s),"
            f" {self.requests_per_s:.1f} requests/s of at most {self.max_requests_per_s:.1f},"
            f" line busy {100 * self.load:.0f} % -> {verdict}"
        ]
        for d in self.devices:
            lines.append(
                f"    {d.device:<16} {d.protocol:<6} every {d.period_s:g} s: {len(d.exchanges)} requests,"
                f" {d.bytes_per_poll} bytes, {1000 * d.line_s:.1f} ms on the line = {100 * d.load:.1f} %"
            )
        return lines

    def problem(self) -> str:
        """One line for a bus that cannot keep up."""
        worst = max(self.devices, key=lambda d: d.load)
        return (
            f"serial bus {self.port} at {self.timing.baud} baud cannot keep up: its devices need"
            f" {self.load:.2f} s of line time per second ({100 * self.load:.0f} %, {self.requests_per_s:.1f} requests/s"
            f" where the line carries {self.max_requests_per_s:.1f}); {worst.device} alone takes"
            f" {100 * worst.load:.0f} %. Poll less often, raise the baud rate or split the bus"
        )


def bus_budgets(config: BenchConfig, regmaps: dict[str, RegisterMap]) -> list[BusBudget]:
    """The budget of every serial bus of a bench (``regmaps`` by device name, for Modbus devices)."""
    time_scale = config.simulation.time_scale if config.simulation is not None else 1.0
    sims = {s.name: s for s in config.simulation.simulators} if config.simulation is not None else {}
    by_port: dict[str, list[DeviceLoad]] = {}
    settings: dict[str, SerialTransportConfig] = {}
    for dev in config.devices:
        t = getattr(dev, "transport", None)  # a CAN device has no serial transport
        if not dev.enabled or not isinstance(t, SerialTransportConfig):
            continue
        timing = LineTiming(t.baud, bits_per_char(bytesize=t.bytesize, parity=t.parity, stopbits=t.stopbits))
        if isinstance(dev, ModbusDeviceConfig):
            regmap = regmaps.get(dev.name)
            if regmap is None:
                continue
            exchanges = modbus_poll(regmap, max_registers_per_read=dev.max_registers_per_read, max_gap=dev.max_gap)
        elif isinstance(dev, JbdDeviceConfig):
            exchanges = jbd_poll(dev.cells, dev.sensors)
        elif isinstance(dev, DalyDeviceConfig):
            exchanges = daly_poll(dev.cells, dev.sensors)
        else:
            continue
        line_s = sum(timing.exchange_s(e, dev.kind) for e in exchanges)
        load = DeviceLoad(dev.name, dev.kind, exchanges, dev.poll_period_s / time_scale, line_s)
        by_port.setdefault(t.port, []).append(load)
        settings.setdefault(t.port, t)
    budgets = []
    for port, loads in by_port.items():
        t = settings[port]
        sim = sims.get(port[4:]) if port.startswith("sim:") else None
        limited = not (isinstance(sim, SimBmsConfig) and not sim.pacing)
        timing = LineTiming(t.baud, bits_per_char(bytesize=t.bytesize, parity=t.parity, stopbits=t.stopbits))
        budgets.append(BusBudget(port, timing, tuple(loads), limited))
    return budgets
