"""Simulated JBD BMS: request bytes + PackSnapshot -> the reply bytes a real JBD would send.

Pure: no I/O, no clock. A serial/pty endpoint feeds ``SimJbdDevice.feed`` whatever bytes the
host wrote and sends back what it returns. Replies are built with the driver's own codec, so the
simulator and the driver cannot drift apart.

Behaviour modelled on the real device: a request with a bad checksum or framing gets no answer;
a read of an unknown register gets status 0x80 (verify); a write (0x5A) is acknowledged with an
empty status-0 reply; measurements saturate at the edges of their fields like an ADC would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

from drivers.bms.errors import BmsFrameError
from drivers.bms.jbd.codec import (
    STATUS_ERROR,
    JbdBasicInfo,
    JbdRegister,
    JbdRequest,
    JbdRequestStream,
    decode_request,
    encode_basic_info,
    encode_cell_voltages,
    encode_hardware_name,
    encode_production_date,
    encode_reply,
)
from simulators.models.snapshot import PackSnapshot

# Field edges (raw limits / scale): a value beyond them reads as the edge.
_MAX_U16_CENTI = 0xFFFF / 100
_MAX_S16_CENTI = 0x7FFF / 100
_MIN_S16_CENTI = -0x8000 / 100
_NTC_MIN_C = -273.0  # raw 1: raw 0 is reserved for "open"
_NTC_MAX_C = (0xFFFE - 2731) / 10


@dataclass(slots=True)
class JbdDeviceState:
    """What a simulated JBD knows beyond the pack, and the faults a test can force."""

    hardware_name: str = "SIM-JBD-SP16S020"
    software_version: int = 0x10
    production_date: date = date(2024, 1, 15)
    cycles: int = 0  # counted before the simulation; the pack's equivalent full cycles add to it
    charge_fet: bool = True
    discharge_fet: bool = True
    ntc_cells: tuple[int, ...] = (0, -1)  # the cell each NTC sits on (index into the snapshot's cells)
    protection_bits: int = 0  # forced protections, e.g. protection_bits_for({...: AlarmLevel.ALARM})
    open_ntcs: frozenset[int] = frozenset()  # 0-based NTC numbers forced open (broken wire)
    refused_registers: frozenset[int] = frozenset()  # answered with status 0x80
    mute: bool = False  # answers nothing at all (dead BMS, swapped RX/TX)
    corrupt_checksum: bool = False  # every reply's checksum is off by one
    writes: list[JbdRequest] = field(default_factory=list)  # write requests received, oldest first


def _clamp(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value


def _ntc_temperature(snapshot: PackSnapshot, state: JbdDeviceState, ntc: int, cell: int) -> float:
    if ntc in state.open_ntcs:
        return math.nan
    temps = snapshot.cell_temperatures_c
    t = temps[cell] if -len(temps) <= cell < len(temps) else snapshot.ambient_c
    return t if math.isnan(t) else _clamp(t, _NTC_MIN_C, _NTC_MAX_C)


def basic_info(snapshot: PackSnapshot, state: JbdDeviceState) -> JbdBasicInfo:
    """What the BMS reports in register 0x03 for this pack state."""
    balance_bits = sum(1 << i for i, on in enumerate(snapshot.balancing[:32]) if on)
    return JbdBasicInfo(
        voltage_v=_clamp(snapshot.voltage_v, 0.0, _MAX_U16_CENTI),
        current_a=_clamp(snapshot.current_a, _MIN_S16_CENTI, _MAX_S16_CENTI),
        remaining_ah=_clamp(snapshot.remaining_ah, 0.0, _MAX_U16_CENTI),
        nominal_ah=_clamp(snapshot.nominal_ah, 0.0, _MAX_U16_CENTI),
        cycles=(state.cycles + math.floor(snapshot.cycles)) & 0xFFFF,
        production_date_raw=encode_production_date(state.production_date),
        balance_bits=balance_bits,
        protection_bits=state.protection_bits & 0xFFFF,
        software_version=state.software_version & 0xFF,
        soc_pct=float(round(_clamp(snapshot.soc * 100, 0.0, 100.0))),
        charge_fet=state.charge_fet,
        discharge_fet=state.discharge_fet,
        cell_count=len(snapshot.cell_voltages_v),
        temperatures_c=tuple(_ntc_temperature(snapshot, state, ntc, cell) for ntc, cell in enumerate(state.ntc_cells)),
    )


def _payload(register: int, snapshot: PackSnapshot, state: JbdDeviceState) -> bytes | None:
    if register == JbdRegister.BASIC_INFO:
        return encode_basic_info(basic_info(snapshot, state))
    if register == JbdRegister.CELL_VOLTAGES:
        return encode_cell_voltages([_clamp(v, 0.0, 65.535) for v in snapshot.cell_voltages_v])
    if register == JbdRegister.HARDWARE_NAME:
        return encode_hardware_name(state.hardware_name)
    return None


def jbd_reply(request: bytes | JbdRequest, snapshot: PackSnapshot, state: JbdDeviceState) -> bytes:
    """The reply to one request frame; b"" where a real JBD stays silent (bad frame, mute)."""
    if state.mute:
        return b""
    if not isinstance(request, JbdRequest):
        try:
            request = decode_request(request)
        except BmsFrameError:
            return b""
    if request.write:
        state.writes.append(request)
        reply = encode_reply(request.register, b"")
    else:
        payload = None if request.register in state.refused_registers else _payload(request.register, snapshot, state)
        if payload is None:
            reply = encode_reply(request.register, b"", status=STATUS_ERROR)
        else:
            reply = encode_reply(request.register, payload)
    if state.corrupt_checksum:
        reply = reply[:-2] + bytes(((reply[-2] + 1) & 0xFF,)) + reply[-1:]
    return reply


class SimJbdDevice:
    """A JBD BMS on a byte stream: ``feed`` the host's bytes, get the bytes to answer with."""

    __slots__ = ("_stream", "state")

    def __init__(self, state: JbdDeviceState | None = None) -> None:
        self.state = state if state is not None else JbdDeviceState()
        self._stream = JbdRequestStream()

    def feed(self, data: bytes, snapshot: PackSnapshot) -> bytes:
        """Replies to every request completed by ``data``; garbage is ignored like a real BMS does."""
        return b"".join(
            jbd_reply(ev, snapshot, self.state) for ev in self._stream.feed(data) if isinstance(ev, JbdRequest)
        )
