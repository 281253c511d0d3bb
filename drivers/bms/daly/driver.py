"""Daly BMS driver: a thin async shell over the pure codec, on a shared ``SerialBus``.

One poll = one query per quantity: 0x90 pack, 0x93 MOS, 0x95 cell voltages (several frames),
0x96 temperatures (several frames), 0x97 balance, 0x98 alarms. At connect, 0x94 gives the cell
and sensor counts, checked against the bench file.

Addressing on a shared RS-485 bus (verify with the unit's documentation): board number ``n``
listens to host address 0x3F + n and answers from address n, so board 1 is the standard single
BMS (host 0x40, reply 0x01). The bus arbiter leaves Daly's ~20 ms of silence before each
request and drops anything left on the line first: some firmware pads multi-frame answers with
extra frames, which would otherwise be read as the next reply.
"""

from __future__ import annotations

import logging

from daq.errors import DeviceExceptionError, ProtocolError
from drivers.bms.daly.codec import (
    DalyCommand,
    DalyFrame,
    DalyMultiFrameAssembler,
    DalyStream,
    assemble_cell_voltages,
    assemble_temperatures,
    cell_frame_count,
    decode_alarms,
    decode_balance,
    decode_mos,
    decode_pack,
    decode_status,
    encode_request,
    temperature_frame_count,
)
from drivers.bms.errors import BmsFrameError, ChecksumError, DuplicateFrameError, TruncatedFrameError
from drivers.bms.shell import PollPart, SerialBmsDriver
from drivers.bms.sniff import DALY, describe_unframed
from drivers.bus import SerialBus

log = logging.getLogger(__name__)

HOST_ADDRESS_BASE = 0x3F  # host address byte = 0x3F + board number (board 1 -> 0x40)
MAX_BOARD = 16
_KEEP_RAW = 4096


def host_address(board: int) -> int:
    if not 1 <= board <= MAX_BOARD:
        raise ValueError(f"Daly board number must be 1..{MAX_BOARD}, got {board}")
    return HOST_ADDRESS_BASE + board


class DalyReplyCollector:
    """Collects the reply frames to one Daly query from the bytes of one transaction.

    With ``frames``, a multi-frame query (0x95, 0x96): done when every frame number
    1..frames has arrived; extra frame numbers (padding) and repeats are ignored. Frames for
    another command or address (a late reply, another board) are skipped. A damaged frame that
    carries our command ends the wait at once.
    """

    __slots__ = ("_assembler", "_stream", "address", "command", "damaged", "raw", "reply", "stray")

    def __init__(self, command: int, *, address: int, frames: int | None = None) -> None:
        self.command = command
        self.address = address
        self.reply: list[DalyFrame] = []
        self.damaged: BmsFrameError | None = None
        self.stray = 0
        self.raw = bytearray()
        self._stream = DalyStream()
        self._assembler = None if frames is None else DalyMultiFrameAssembler(command, expected_frames=frames)

    def feed(self, data: bytes) -> bool:
        if len(self.raw) < _KEEP_RAW:
            self.raw += data[: _KEEP_RAW - len(self.raw)]
        for event in self._stream.feed(data):
            if isinstance(event, DalyFrame):
                if event.command != self.command or event.address != self.address:
                    self.stray += 1
                    continue
                if self._assembler is None:
                    self.reply.append(event)
                    return True
                try:
                    done = self._assembler.add(event)
                except DuplicateFrameError:
                    continue  # the same frame again: nothing new in it
                except BmsFrameError as exc:
                    self.damaged = exc
                    return True
                self.reply.append(event)
                if done:
                    return True
            elif (
                isinstance(event, ChecksumError)
                and len(event.raw) > 2
                and event.raw[1] == self.address
                and event.raw[2] == self.command
            ):
                self.damaged = event
                return True
        return False

    def result(self, *, baud: int) -> list[DalyFrame]:
        """The reply frames; raises a BmsFrameError saying what arrived instead."""
        if self.damaged is not None:
            raise self.damaged
        if self._assembler is None:
            if self.reply:
                return self.reply
        elif self._assembler.complete:
            return self.reply
        elif self.reply:
            self._assembler.blocks()  # raises MissingFramesError naming the missing frames
        for leftover in self._stream.flush():
            raw = leftover.raw
            if len(raw) > 2 and raw[1] == self.address and raw[2] == self.command:
                raise TruncatedFrameError(
                    f"reply to command 0x{self.command:02X} cut short: {len(raw)} of 13 bytes arrived", raw=raw
                )
        raise BmsFrameError(describe_unframed(bytes(self.raw), expected=DALY, baud=baud), raw=bytes(self.raw))


class DalyDriver(SerialBmsDriver):
    """A Daly BMS (board ``address``) with ``cells`` series cells and ``sensors`` NTCs."""

    protocol = DALY

    def __init__(
        self,
        name: str,
        *,
        bus: SerialBus,
        cells: int,
        sensors: int,
        address: int = 1,
        timeout_s: float = 0.5,
        invert_current: bool = False,
    ) -> None:
        super().__init__(name, bus=bus, cells=cells, sensors=sensors, timeout_s=timeout_s)
        self.address = address
        self.invert_current = invert_current
        self._host_address = host_address(address)
        self.info["address"] = float(address)
        layout = self.layout
        self._parts = [
            PollPart("pack (0x90)", (layout.pack,), self._fill_pack),
            PollPart("MOS state (0x93)", (layout.fets,), self._fill_mos),
            PollPart("cell voltages (0x95)", (layout.cells,), self._fill_cells),
            *([PollPart("temperatures (0x96)", (layout.temps,), self._fill_temperatures)] if sensors else []),
            PollPart("balance (0x97)", (layout.balance,), self._fill_balance),
            PollPart("alarms (0x98)", (layout.alarms,), self._fill_alarms),
        ]

    async def query(self, command: int, *, frames: int | None = None) -> list[DalyFrame]:
        """Send one query; return its reply frame(s) (``frames`` of them for 0x95/0x96)."""
        collector = DalyReplyCollector(command, address=self.address, frames=frames)
        request = encode_request(command, address=self._host_address)
        await self.bus.transact(request, collector.feed, timeout_s=self.timeout_s)
        return collector.result(baud=self.bus.link.baud)

    async def probe(self) -> None:
        try:
            (frame,) = await self.query(DalyCommand.STATUS)
        except (ProtocolError, DeviceExceptionError) as exc:
            log.debug("%s: probe incomplete: %s", self.where, exc)
            return
        status = decode_status(frame.data)
        self.info["cycles"] = float(status.cycles)
        self.check_sizes(cells=status.cell_count, sensors=status.sensor_count)

    def parts(self) -> list[PollPart]:
        return self._parts

    async def _fill_pack(self, values: list[float], quality: bytearray) -> None:
        (frame,) = await self.query(DalyCommand.PACK)
        pack = decode_pack(frame.data, invert_current=self.invert_current)
        self.layout.put_pack(values, quality, voltage_v=pack.voltage_v, current_a=pack.current_a, soc_pct=pack.soc_pct)

    async def _fill_mos(self, values: list[float], quality: bytearray) -> None:
        (frame,) = await self.query(DalyCommand.MOS)
        mos = decode_mos(frame.data)
        self.layout.put_fets(values, quality, charge=mos.charge_mos, discharge=mos.discharge_mos)

    async def _fill_cells(self, values: list[float], quality: bytearray) -> None:
        frames = await self.query(DalyCommand.CELL_VOLTAGES, frames=cell_frame_count(self.cells))
        self.layout.put_cells(values, quality, assemble_cell_voltages(frames, self.cells))

    async def _fill_temperatures(self, values: list[float], quality: bytearray) -> None:
        frames = await self.query(DalyCommand.TEMPERATURES, frames=temperature_frame_count(self.sensors))
        self.layout.put_temperatures(values, quality, assemble_temperatures(frames, self.sensors))

    async def _fill_balance(self, values: list[float], quality: bytearray) -> None:
        (frame,) = await self.query(DalyCommand.BALANCE)
        self.layout.put_balance(values, quality, decode_balance(frame.data, min(self.cells, 48)))

    async def _fill_alarms(self, values: list[float], quality: bytearray) -> None:
        (frame,) = await self.query(DalyCommand.ALARMS)
        self.layout.put_alarms(values, quality, decode_alarms(frame.data))
