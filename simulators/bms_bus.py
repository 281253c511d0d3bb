"""A simulated RS-485 bus on a pseudo-terminal with several JBD or Daly BMS on it.

The host (a driver, or any serial tool) opens ``port_path`` like ``/dev/ttyUSB0``. Every request
is cut out of the byte stream with the protocol's own codec and offered to every device on the
bus, as on a real RS-485 pair; the addressed device answers from a fresh ``PackSnapshot`` of its
slice of the shared ``SimPack``, so cycler current moves the cells it reports.

Line behaviour that a pty does not have by itself:

- ``pacing``: a reply leaves only after the request and the reply would have crossed the line
  at ``baud`` (10 bits per character for 8N1), so bus timing can be measured as on real wire.
- wrong baud rate: the bus reads the rate the host configured on the pty (termios). If it
  differs from ``baud``, replies reach the host as a UART at the host's rate would sample them:
  garbage. (A real device would usually not understand the request either and stay silent;
  the silent-device fault covers that case. The simulator answers so the host sees garbage.)

Faults, changeable while running, per device or for the whole bus: ``ModbusFaults`` (the same
knobs as the Modbus simulators: silent, reply delay, bad checksum, truncation, garbage, "exception",
which a JBD answers with status 0x80 and a Daly with silence), ``wrong_protocol`` (answers with a
valid frame of another protocol), and the device state objects (protection bits, forced open
sensors, mute) of ``simulators.bms``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Literal, Self

from drivers.bms.daly import codec as daly
from drivers.bms.jbd import codec as jbd
from drivers.modbus.codec import ReadRegistersResponse, rtu_frame
from simulators.bms.daly_device import SimDalyDevice
from simulators.bms.jbd_device import JbdDeviceState, SimJbdDevice, basic_info
from simulators.modbus_faults import NO_FAULT, FaultPlan, ModbusFaults
from simulators.models.snapshot import PackSnapshot
from simulators.pty_link import PtyLink

logger = logging.getLogger(__name__)

BusProtocol = Literal["jbd", "daly"]
ForeignProtocol = Literal["jbd", "daly", "modbus"]
BITS_PER_CHAR = 10  # 8N1
PACED_CHUNK = 16  # bytes handed to the host at once on a paced line

_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800)
    if hasattr(termios, f"B{rate}")
}


# ----------------------------------------------------------------------------- pure helpers


def module_snapshot(snap: PackSnapshot, first_cell: int, cells: int) -> PackSnapshot:
    """What a BMS watching ``cells`` series cells from ``first_cell`` (0-based) sees of the pack.

    The whole pack is one module when ``first_cell`` is 0 and ``cells`` covers it.
    """
    if first_cell == 0 and cells == len(snap.cell_voltages_v):
        return snap
    end = first_cell + cells
    voltages = snap.cell_voltages_v[first_cell:end]
    socs = snap.cell_socs[first_cell:end]
    return replace(
        snap,
        voltage_v=sum(voltages),
        soc=sum(socs) / len(socs) if socs else snap.soc,
        cell_voltages_v=voltages,
        cell_socs=socs,
        cell_temperatures_c=snap.cell_temperatures_c[first_cell:end],
        balancing=snap.balancing[first_cell:end],
    )


def sensor_positions(cells: int, sensors: int) -> tuple[int, ...]:
    """Cells (0-based) the ``sensors`` thermistors sit on: spread evenly, first and last cell included."""
    if sensors <= 0:
        return ()
    if sensors == 1 or cells == 1:
        return (0,) * sensors
    return tuple(round(k * (cells - 1) / (sensors - 1)) for k in range(sensors))


def resample_uart(data: bytes, *, tx_baud: int, rx_baud: int, bits_per_char: int = BITS_PER_CHAR) -> bytes:
    """The bytes a UART at ``rx_baud`` reads from ``data`` sent back to back at ``tx_baud``.

    The receiver waits for a falling edge (start bit), samples each data bit in the middle of
    its own bit time, samples the stop bit, then looks for the next falling edge; a framing
    error still delivers the byte, as a raw-mode Linux tty does.
    """
    if tx_baud == rx_baud or not data:
        return bytes(data)
    levels: list[int] = []
    for byte in data:
        levels.append(0)
        levels.extend((byte >> i) & 1 for i in range(8))
        levels.extend([1] * (bits_per_char - 9))
    tx_bit = 1.0 / tx_baud
    rx_bit = 1.0 / rx_baud
    n = len(levels)

    def level_at(t: float) -> int:
        k = int(t / tx_bit + 1e-9)
        return levels[k] if 0 <= k < n else 1

    out = bytearray()
    ready_t = 0.0
    j = 0
    while True:
        # next high -> low transition at or after ready_t
        j = max(j, int(ready_t / tx_bit - 1e-9) if ready_t > 0 else 0)
        while j < n and not (levels[j] == 0 and (j == 0 or levels[j - 1] == 1) and j * tx_bit >= ready_t - 1e-12):
            j += 1
        if j >= n:
            return bytes(out)
        start_t = j * tx_bit
        value = 0
        for bit in range(8):
            value |= level_at(start_t + (1.5 + bit) * rx_bit) << bit
        out.append(value)
        ready_t = start_t + (bits_per_char - 0.5) * rx_bit
        j += 1


def corrupt_checksum(protocol: BusProtocol, reply: bytes) -> bytes:
    """The reply with its (first frame's) checksum off by one."""
    if protocol == "jbd" and len(reply) >= jbd.FRAME_OVERHEAD:
        return reply[:-3] + bytes(((reply[-3] + 1) & 0xFF,)) + reply[-2:]
    if protocol == "daly" and len(reply) >= daly.FRAME_LEN:
        return reply[:12] + bytes(((reply[12] + 1) & 0xFF,)) + reply[13:]
    return reply


def foreign_reply(protocol: ForeignProtocol, snap: PackSnapshot) -> bytes:
    """A valid frame of ``protocol``: what a device speaking it sends back."""
    if protocol == "jbd":
        return jbd.encode_reply(jbd.JbdRegister.BASIC_INFO, jbd.encode_basic_info(basic_info(snap, JbdDeviceState())))
    if protocol == "daly":
        pack = daly.DalyPack(
            voltage_v=round(snap.voltage_v, 1),
            acquisition_voltage_v=round(snap.voltage_v, 1),
            current_a=round(snap.current_a, 1),
            soc_pct=round(snap.soc * 100, 1),
        )
        return daly.encode_reply(daly.DalyCommand.PACK, daly.encode_pack(pack))
    words = (round(snap.voltage_v * 100) & 0xFFFF, round(snap.soc * 1000) & 0xFFFF, 0, 0)
    return rtu_frame(1, ReadRegistersResponse(3, words).encode())


# ----------------------------------------------------------------------------- the bus


SimBmsDevice = SimJbdDevice | SimDalyDevice


@dataclass(slots=True)
class BusMember:
    """One BMS on the bus: the device, the slice of the pack it sees, its own faults."""

    address: int
    device: SimBmsDevice
    snapshot: Callable[[], PackSnapshot]
    faults: ModbusFaults | None = None  # None: the bus's faults
    wrong_protocol: ForeignProtocol | None = None


@dataclass(slots=True)
class BusStats:
    requests: int = 0  # complete, valid request frames seen on the line
    replies: int = 0  # replies sent (faulty ones included)
    silent: int = 0  # requests a device chose not to answer (fault, mute)
    frame_errors: int = 0  # request bytes that were not a valid frame
    per_address: dict[int, int] = field(default_factory=dict)  # replies per device


class SimBmsBus:
    """JBD or Daly devices on one simulated RS-485 bus served on a pty."""

    def __init__(
        self,
        protocol: BusProtocol,
        members: list[BusMember],
        *,
        baud: int = 9600,
        pacing: bool = False,
        turnaround_s: float = 0.0,
        faults: ModbusFaults | None = None,
    ) -> None:
        if protocol not in ("jbd", "daly"):
            raise ValueError(f'protocol must be "jbd" or "daly", got {protocol!r}')
        if baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        addresses = [m.address for m in members]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"addresses on one bus must be unique, got {addresses}")
        if protocol == "jbd" and len(members) > 1:
            raise ValueError("the JBD protocol has no device address: one JBD per bus")
        self.protocol = protocol
        self.members = {m.address: m for m in members}
        self.baud = baud
        self.pacing = pacing
        self.turnaround_s = turnaround_s
        self.faults = faults if faults is not None else ModbusFaults()
        self.stats = BusStats()
        self.port_path = ""
        self._link: PtyLink | None = None
        self._termios_fd = -1
        self._requests: jbd.JbdRequestStream | daly.DalyStream | None = None
        self._line_free_at = 0.0
        self._last_at = 0.0
        self._handles: set[asyncio.TimerHandle] = set()

    @property
    def char_time_s(self) -> float:
        return BITS_PER_CHAR / self.baud

    async def start(self) -> None:
        link = PtyLink()
        self._link = link
        self.port_path = link.port_path
        # Our own descriptor of the slave, only to read the line settings the host chose.
        self._termios_fd = os.open(link.port_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._requests = jbd.JbdRequestStream() if self.protocol == "jbd" else daly.DalyStream()
        link.start(self._on_data)
        logger.info(
            "%s bus on %s at %d baud%s, addresses %s",
            self.protocol.upper(),
            self.port_path,
            self.baud,
            " (paced)" if self.pacing else "",
            sorted(self.members),
        )

    async def stop(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._termios_fd >= 0:
            os.close(self._termios_fd)
            self._termios_fd = -1

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def host_baud(self) -> int | None:
        """The baud rate the host set on its end of the pty, if it is a standard one."""
        if self._termios_fd < 0:
            return None
        try:
            speed = termios.tcgetattr(self._termios_fd)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    # -- request handling ------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        assert self._requests is not None
        for event in self._requests.feed(data):
            if isinstance(event, jbd.JbdRequest):
                frame = (
                    jbd.encode_write_request(event.register, event.data)
                    if event.write
                    else jbd.encode_read_request(event.register)
                )
                self._answer(frame, register=event.register)
            elif isinstance(event, daly.DalyFrame):
                self._answer(daly.encode_frame(event.address, event.command, event.data), address=event.address)
            else:
                self.stats.frame_errors += 1

    def _answer(self, request: bytes, *, register: int = 0, address: int | None = None) -> None:
        self.stats.requests += 1
        for member in self.members.values():
            device = member.device
            if address is not None and isinstance(device, SimDalyDevice):
                if address not in device.state.host_addresses:
                    continue
            plan = (member.faults or self.faults).plan(None)
            if plan.silent:
                self.stats.silent += 1
                continue
            snap = member.snapshot()
            if plan.exception_code is not None:
                # JBD refuses with status 0x80; Daly has no refusal and stays silent.
                reply = jbd.encode_reply(register, b"", status=jbd.STATUS_ERROR) if self.protocol == "jbd" else b""
            elif member.wrong_protocol is not None:
                reply = foreign_reply(member.wrong_protocol, snap)
            else:
                reply = device.feed(request, snap)
            if not reply:
                self.stats.silent += 1
                continue
            self._send(request, self._mangle(reply, plan), plan.delay_s, member.address)

    def _mangle(self, reply: bytes, plan: FaultPlan) -> bytes:
        if plan is NO_FAULT:
            return reply
        if plan.bad_crc:
            reply = corrupt_checksum(self.protocol, reply)
        if plan.truncate:
            keep = len(reply) // 2 if plan.truncate_keep is None else plan.truncate_keep
            reply = reply[: max(1, min(keep, len(reply) - 1))]
        return plan.garbage + reply

    def _send(self, request: bytes, reply: bytes, delay_s: float, address: int) -> None:
        """Put ``reply`` on the line: at once, after ``delay_s``, or paced at the baud rate.

        Paced, the reply reaches the host in chunks of ``PACED_CHUNK`` bytes, each when its last
        byte would have crossed the line (as a USB adapter hands bytes over), after the request's
        own time on the line. Replies never overlap and leave in request order.
        """
        assert self._link is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        host_baud = self.host_baud()
        wire = reply
        if host_baud is not None and host_baud != self.baud:
            wire = resample_uart(reply, tx_baud=self.baud, rx_baud=host_baud)
        self.stats.replies += 1
        self.stats.per_address[address] = self.stats.per_address.get(address, 0) + 1
        start = max(now, self._line_free_at)
        if not self.pacing:
            at = max(now + delay_s, self._line_free_at)
            self._line_free_at = at
            self._deliver_at(loop, at, wire)
            return
        char = self.char_time_s
        first_byte_at = start + len(request) * char + self.turnaround_s + delay_s
        # A wrong-rate receiver sees a different number of bytes: spread them over the reply's time.
        per_byte = len(reply) * char / len(wire) if wire else 0.0
        for pos in range(0, len(wire), PACED_CHUNK):
            chunk = wire[pos : pos + PACED_CHUNK]
            self._deliver_at(loop, first_byte_at + (pos + len(chunk)) * per_byte, chunk)
        self._line_free_at = first_byte_at + len(reply) * char

    def _deliver_at(self, loop: asyncio.AbstractEventLoop, at: float, data: bytes) -> None:
        assert self._link is not None
        if at <= loop.time() and not self._handles:
            self._link.write(data)
            return
        at = max(at, self._last_at + 1e-6)  # timers due at the same instant may run in any order
        self._last_at = at
        handle: asyncio.TimerHandle

        def deliver() -> None:
            self._handles.discard(handle)
            if self._link is not None:
                self._link.write(data)

        handle = loop.call_at(at, deliver)
        self._handles.add(handle)
