"""JBD / Xiaoxiang BMS driver: a thin async shell over the pure codec, on a shared ``SerialBus``.

One poll = two requests: basic info (0x03: pack, SOC, temperatures, balance, FETs, protections)
and cell voltages (0x04). At connect the driver reads the hardware name (0x05) and checks the
cell and sensor counts against the bench file. The JBD protocol has no device address, so a JBD
needs a serial port of its own.
"""

from __future__ import annotations

import logging

from daq.errors import DeviceExceptionError, ProtocolError
from drivers.bms.errors import (
    BmsFrameError,
    ChecksumError,
    LengthMismatchError,
    MissingEndByteError,
    TruncatedFrameError,
)
from drivers.bms.jbd.codec import (
    OP_READ,
    JbdRegister,
    JbdReply,
    JbdReplyStream,
    decode_basic_info,
    decode_cell_voltages,
    decode_hardware_name,
    encode_read_request,
)
from drivers.bms.shell import PollPart, SerialBmsDriver
from drivers.bms.sniff import JBD, describe_unframed
from drivers.bus import SerialBus

log = logging.getLogger(__name__)

_KEEP_RAW = 4096  # bytes kept per transaction for the error message


class JbdReplyCollector:
    """Collects the reply to one JBD read request from the bytes of one transaction.

    Done when a valid reply to ``register`` arrives, or when a damaged frame that is clearly
    that reply arrives (no point waiting for the timeout then). Garbage before the reply and
    stray replies to other registers (late answers) are skipped.
    """

    __slots__ = ("_stream", "damaged", "raw", "register", "reply", "stray")

    def __init__(self, register: int) -> None:
        self.register = register
        self.reply: JbdReply | None = None
        self.damaged: BmsFrameError | None = None
        self.stray = 0
        self.raw = bytearray()
        self._stream = JbdReplyStream()

    def feed(self, data: bytes) -> bool:
        if len(self.raw) < _KEEP_RAW:
            self.raw += data[: _KEEP_RAW - len(self.raw)]
        for event in self._stream.feed(data):
            if isinstance(event, JbdReply):
                if event.register in (self.register, OP_READ):
                    self.reply = event
                    return True
                self.stray += 1
            elif (
                isinstance(event, ChecksumError | MissingEndByteError | LengthMismatchError)
                and len(event.raw) > 1
                and event.raw[1] == self.register
            ):
                self.damaged = event
                return True
        return False

    def payload(self, *, baud: int) -> bytes:
        """The reply's payload; raises BmsStatusError, or a BmsFrameError saying what arrived instead."""
        if self.reply is not None:
            return self.reply.payload_for(self.register)
        if self.damaged is not None:
            raise self.damaged
        for leftover in self._stream.flush():
            raw = leftover.raw
            if len(raw) > 1 and raw[1] == self.register:
                expected = 7 + raw[3] if len(raw) > 3 else 7
                raise TruncatedFrameError(
                    f"reply to register 0x{self.register:02X} cut short: {len(raw)} of {expected} bytes arrived",
                    raw=raw,
                )
        raise BmsFrameError(describe_unframed(bytes(self.raw), expected=JBD, baud=baud), raw=bytes(self.raw))


class JbdDriver(SerialBmsDriver):
    """A JBD BMS with ``cells`` series cells and ``sensors`` NTCs, behind a ``SerialBus``."""

    protocol = JBD

    def __init__(self, name: str, *, bus: SerialBus, cells: int, sensors: int, timeout_s: float = 1.0) -> None:
        super().__init__(name, bus=bus, cells=cells, sensors=sensors, timeout_s=timeout_s)
        layout = self.layout
        self._parts = [
            PollPart(
                "basic info (0x03)",
                (layout.pack, layout.temps, layout.balance, layout.fets, layout.alarms),
                self._fill_basic,
            ),
            PollPart("cell voltages (0x04)", (layout.cells,), self._fill_cells),
        ]

    async def request(self, register: int) -> bytes:
        """Read one register; returns its payload."""
        collector = JbdReplyCollector(register)
        await self.bus.transact(encode_read_request(register), collector.feed, timeout_s=self.timeout_s)
        return collector.payload(baud=self.bus.link.baud)

    async def probe(self) -> None:
        try:
            self.info["hardware_name"] = decode_hardware_name(await self.request(JbdRegister.HARDWARE_NAME))
            basic = decode_basic_info(await self.request(JbdRegister.BASIC_INFO))
        except (ProtocolError, DeviceExceptionError) as exc:
            # Identification is a nicety: polling reports what is wrong, with qualities.
            log.debug("%s: probe incomplete: %s", self.where, exc)
            return
        self.info["software_version"] = float(basic.software_version)
        self.info["nominal_ah"] = basic.nominal_ah
        if basic.production_date is not None:
            self.info["production_date"] = basic.production_date.isoformat()
        self.check_sizes(cells=basic.cell_count, sensors=len(basic.temperatures_c))

    def parts(self) -> list[PollPart]:
        return self._parts

    async def _fill_basic(self, values: list[float], quality: bytearray) -> None:
        basic = decode_basic_info(await self.request(JbdRegister.BASIC_INFO))
        layout = self.layout
        layout.put_pack(values, quality, voltage_v=basic.voltage_v, current_a=basic.current_a, soc_pct=basic.soc_pct)
        layout.put_temperatures(values, quality, basic.temperatures_c)
        layout.put_balance(values, quality, basic.balancing)
        layout.put_fets(values, quality, charge=basic.charge_fet, discharge=basic.discharge_fet)
        layout.put_alarms(values, quality, basic.alarms)

    async def _fill_cells(self, values: list[float], quality: bytearray) -> None:
        self.layout.put_cells(values, quality, decode_cell_voltages(await self.request(JbdRegister.CELL_VOLTAGES)))
