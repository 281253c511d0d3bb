"""JBD / Xiaoxiang BMS protocol (UART or RS-485, 9600 8N1): pure codec, both directions.

Frame layout, identical for requests and replies (DOMAIN.md section 3)::

    request  DD  A5|5A  reg     len  data     chk_hi chk_lo  77
    reply    DD  reg    status  len  payload  chk_hi chk_lo  77

so a frame is always ``7 + len`` bytes and its checksum, u16 big-endian, is
``0x10000 - sum(bytes[2 : 4 + len])`` masked to 16 bits (reg, len and data for a request;
status, len and payload for a reply).

Facts this module relies on, beyond DOMAIN.md (verify where marked):
- Current is s16 in 10 mA with + = charging, already the project's convention.
- Some firmware echoes the read op 0xA5 instead of the register in its reply (public captures
  ``DD A5 00 1B ...``); a reply register of 0xA5 is therefore accepted for any register.
- Status 0x80 is what a JBD sends for a request it refuses (verify); any non-zero status is an
  error here.
- Production date u16: day = bits 0-4, month = bits 5-8, year = 2000 + bits 9-15 (verify).
- Newer firmware appends fields after the NTC readings; they are kept in ``extra``, not parsed.
- Open thermistor: raw 0 (0 K) is what an open NTC reads (infinite resistance = the cold end of
  the scale), and this codec encodes an open sensor that way; raw 0xFFFF is also decoded as
  "no reading". Both decode to NaN.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

from drivers.bms.errors import (
    BmsFrameError,
    BmsStatusError,
    ChecksumError,
    LengthMismatchError,
    MissingEndByteError,
    PayloadError,
    SkippedBytesError,
    StartByteError,
    TruncatedFrameError,
    UnexpectedResponseError,
)
from drivers.bms.model import AlarmLevel, AlarmName, BmsReading

START = 0xDD
END = 0x77
OP_READ = 0xA5
OP_WRITE = 0x5A
STATUS_OK = 0x00
STATUS_ERROR = 0x80
HEADER_LEN = 4  # DD, op/reg, reg/status, len
FRAME_OVERHEAD = 7  # header + checksum (2) + end byte
MAX_FRAME_LEN = FRAME_OVERHEAD + 0xFF
MAX_BALANCE_CELLS = 32
NTC_ZERO_C_RAW = 2731  # the JBD convention: degC = raw / 10 - 273.1 (integer math keeps 20.3 exact)
NTC_OPEN_RAW = 0x0000
NTC_INVALID_RAW = 0xFFFF


class JbdRegister(IntEnum):
    BASIC_INFO = 0x03
    CELL_VOLTAGES = 0x04
    HARDWARE_NAME = 0x05


# Protection bit -> neutral alarm. JBD protections carry no level: every one is an ALARM.
PROTECTION_BITS: tuple[tuple[int, AlarmName], ...] = (
    (0, AlarmName.CELL_OVERVOLTAGE),
    (1, AlarmName.CELL_UNDERVOLTAGE),
    (2, AlarmName.PACK_OVERVOLTAGE),
    (3, AlarmName.PACK_UNDERVOLTAGE),
    (4, AlarmName.CHARGE_OVERTEMPERATURE),
    (5, AlarmName.CHARGE_UNDERTEMPERATURE),
    (6, AlarmName.DISCHARGE_OVERTEMPERATURE),
    (7, AlarmName.DISCHARGE_UNDERTEMPERATURE),
    (8, AlarmName.CHARGE_OVERCURRENT),
    (9, AlarmName.DISCHARGE_OVERCURRENT),
    (10, AlarmName.SHORT_CIRCUIT),
    (11, AlarmName.INTERNAL_FAILURE),  # front-end IC error
    (12, AlarmName.SOFTWARE_LOCK),
)

_BASIC_HEAD = struct.Struct(">HhHHHHHHHBBBBB")  # 23 bytes, up to and including the NTC count
_U16 = struct.Struct(">H")


def checksum(body: bytes | bytearray | memoryview) -> int:
    """The JBD checksum of ``body`` (reg/status, len and data bytes)."""
    return (0x10000 - sum(body)) & 0xFFFF


def _frame(b1: int, b2: int, data: bytes) -> bytes:
    if len(data) > 0xFF:
        raise ValueError(f"JBD frame data is at most 255 bytes, got {len(data)}")
    body = bytes((b2, len(data))) + data
    return bytes((START, b1)) + body + _U16.pack(checksum(body)) + bytes((END,))


# --- requests (host -> BMS) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JbdRequest:
    register: int
    data: bytes = b""
    write: bool = False


def encode_read_request(register: int) -> bytes:
    """``DD A5 <reg> 00 <chk> 77``, e.g. basic info ``DD A5 03 00 FF FD 77``."""
    return _frame(OP_READ, register, b"")


def encode_write_request(register: int, data: bytes) -> bytes:
    return _frame(OP_WRITE, register, bytes(data))


def decode_request(frame: bytes) -> JbdRequest:
    """Parse one complete request frame (the device side). Raises a BmsFrameError subclass."""
    b1, register, data = _split(frame, what="JBD request")
    if b1 not in (OP_READ, OP_WRITE):
        raise UnexpectedResponseError(
            f"JBD request: operation byte 0x{b1:02X} is neither read (0xA5) nor write (0x5A)", raw=frame
        )
    return JbdRequest(register=register, data=data, write=b1 == OP_WRITE)


# --- replies (BMS -> host) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JbdReply:
    register: int  # 0xA5 on firmware that echoes the read op instead of the register
    status: int
    payload: bytes

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def payload_for(self, register: int) -> bytes:
        """The payload, after checking this is a successful answer to ``register``."""
        if self.register not in (register, OP_READ):
            raise UnexpectedResponseError(
                f"JBD reply is for register 0x{self.register:02X}, expected 0x{register:02X} "
                "(a late reply to an earlier request, or two hosts on the bus)",
                raw=encode_reply(self.register, self.payload, status=self.status),
            )
        if self.status != STATUS_OK:
            raise BmsStatusError(
                f"JBD refused register 0x{register:02X} with status 0x{self.status:02X} "
                "(register not supported, or a write outside factory mode)",
                code=self.status,
                register=register,
            )
        return self.payload


def encode_reply(register: int, payload: bytes, *, status: int = STATUS_OK) -> bytes:
    """``DD <reg> <status> <len> <payload> <chk> 77`` (the device side)."""
    return _frame(register, status, bytes(payload))


def decode_reply(frame: bytes, *, register: int | None = None) -> JbdReply:
    """Parse one complete reply frame.

    With ``register``, also check it answers that register and reports success (raises
    UnexpectedResponseError or BmsStatusError). Framing problems raise BmsFrameError subclasses.
    """
    reg, status, payload = _split(frame, what="JBD reply")
    reply = JbdReply(register=reg, status=status, payload=payload)
    if register is not None:
        reply.payload_for(register)
    return reply


def _split(frame: bytes, *, what: str) -> tuple[int, int, bytes]:
    """Check one complete frame's framing and checksum; return (byte1, byte2, data)."""
    frame = bytes(frame)
    if not frame or frame[0] != START:
        raise StartByteError(f"{what}: does not start with 0xDD", raw=frame)
    if len(frame) < HEADER_LEN:
        raise TruncatedFrameError(f"{what}: {len(frame)} bytes, shorter than a header", raw=frame)
    n = frame[3]
    expected_len = FRAME_OVERHEAD + n
    if len(frame) < expected_len:
        if frame[-1] == END and len(frame) >= FRAME_OVERHEAD:
            raise LengthMismatchError(
                f"{what}: length byte says {n} data bytes but the frame holds {len(frame) - FRAME_OVERHEAD}",
                raw=frame,
            )
        raise TruncatedFrameError(f"{what}: {len(frame)} of {expected_len} bytes arrived", raw=frame)
    if len(frame) > expected_len:
        raise LengthMismatchError(
            f"{what}: length byte says {n} data bytes but {len(frame) - FRAME_OVERHEAD} arrived", raw=frame
        )
    if frame[-1] != END:
        raise MissingEndByteError(f"{what}: ends with 0x{frame[-1]:02X}, not 0x77", raw=frame)
    received = (frame[-3] << 8) | frame[-2]
    expected = checksum(frame[2 : 4 + n])
    if received != expected:
        raise ChecksumError(
            f"{what}: checksum 0x{received:04X} != computed 0x{expected:04X} (line noise or wrong baud rate)",
            raw=frame,
            expected=expected,
            received=received,
        )
    return frame[1], frame[2], frame[4 : 4 + n]


# --- stream decoding --------------------------------------------------------------------------


def _valid_frame_at(buf: bytearray, pos: int) -> bool:
    """Whether a complete, checksum-valid frame starts at ``pos``."""
    if len(buf) - pos < FRAME_OVERHEAD:
        return False
    end = pos + FRAME_OVERHEAD + buf[pos + 3]
    if end > len(buf) or buf[end - 1] != END:
        return False
    return ((buf[end - 3] << 8) | buf[end - 2]) == checksum(buf[pos + 2 : end - 3])


class _FrameSplitter:
    """Cuts a byte stream into checksum-valid frames, resynchronising on 0xDD after garbage.

    No byte is dropped silently: each one ends up in a frame, in the ``raw`` of a frame error or
    in a SkippedBytesError. A rejected candidate costs only its start byte: the search resumes at
    the next 0xDD inside it. The buffer holds at most one incomplete frame between feeds.
    """

    __slots__ = ("_buf", "_what")

    def __init__(self, what: str) -> None:
        self._buf = bytearray()
        self._what = what

    def _frames(self, data: bytes) -> list[bytes | BmsFrameError]:
        buf = self._buf
        buf += data
        out: list[bytes | BmsFrameError] = []
        pos = 0
        while pos < len(buf):
            start = buf.find(START, pos)
            if start < 0:
                out.append(self._skipped(buf[pos:]))
                pos = len(buf)
                break
            if start > pos:
                out.append(self._skipped(buf[pos:start]))
                pos = start
            if len(buf) - pos < HEADER_LEN:
                break
            end = pos + FRAME_OVERHEAD + buf[pos + 3]
            if end > len(buf):
                # Incomplete: wait for the rest, unless a complete valid frame already follows,
                # in which case this 0xDD was garbage (its length byte would stall us).
                later = next(
                    (p for p in _positions(buf, pos + 1) if _valid_frame_at(buf, p)),
                    None,
                )
                if later is None:
                    break
                out.append(self._skipped(buf[pos:later]))
                pos = later
                continue
            frame = bytes(buf[pos:end])
            if frame[-1] != END:
                out.append(MissingEndByteError(f"{self._what}: no 0x77 where the length byte puts it", raw=frame))
                pos = self._next_start(buf, pos, end)
                continue
            received = (frame[-3] << 8) | frame[-2]
            expected = checksum(frame[2:-3])
            if received != expected:
                out.append(
                    ChecksumError(
                        f"{self._what}: checksum 0x{received:04X} != computed 0x{expected:04X}",
                        raw=frame,
                        expected=expected,
                        received=received,
                    )
                )
                pos = self._next_start(buf, pos, end)
                continue
            out.append(frame)
            pos = end
        del buf[:pos]
        return out

    @staticmethod
    def _next_start(buf: bytearray, pos: int, end: int) -> int:
        """After a bad candidate at ``pos``: resume at the next 0xDD inside it, or after it."""
        nxt = buf.find(START, pos + 1, end)
        return end if nxt < 0 else nxt

    def _skipped(self, junk: bytes | bytearray) -> SkippedBytesError:
        return SkippedBytesError(f"{self._what}: skipped {len(junk)} bytes before a frame start", raw=junk)

    def _flush(self) -> list[BmsFrameError]:
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [TruncatedFrameError(f"{self._what}: stream ended inside a frame ({len(rest)} bytes)", raw=rest)]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)


def _positions(buf: bytearray, start: int) -> Iterator[int]:
    pos = buf.find(START, start)
    while pos >= 0:
        yield pos
        pos = buf.find(START, pos + 1)


class JbdReplyStream(_FrameSplitter):
    """Host side: feed received bytes, get replies and framing errors in arrival order."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("JBD reply stream")

    def feed(self, data: bytes) -> list[JbdReply | BmsFrameError]:
        return [
            JbdReply(register=ev[1], status=ev[2], payload=ev[4:-3]) if isinstance(ev, bytes) else ev
            for ev in self._frames(data)
        ]

    def flush(self) -> list[BmsFrameError]:
        """End of input (e.g. a reply timeout): report a partial frame still held back."""
        return self._flush()


class JbdRequestStream(_FrameSplitter):
    """Device side: feed bytes from the host, get requests and framing errors."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("JBD request stream")

    def feed(self, data: bytes) -> list[JbdRequest | BmsFrameError]:
        out: list[JbdRequest | BmsFrameError] = []
        for ev in self._frames(data):
            if isinstance(ev, bytes):
                try:
                    out.append(decode_request(ev))
                except BmsFrameError as exc:
                    out.append(exc)
            else:
                out.append(ev)
        return out

    def flush(self) -> list[BmsFrameError]:
        return self._flush()


# --- payloads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JbdBasicInfo:
    """Register 0x03, decoded. Units SI; current + = charging."""

    voltage_v: float
    current_a: float
    remaining_ah: float
    nominal_ah: float
    cycles: int
    production_date_raw: int
    balance_bits: int  # bit 0 = cell 1 .. bit 31 = cell 32
    protection_bits: int
    software_version: int
    soc_pct: float
    charge_fet: bool
    discharge_fet: bool
    cell_count: int
    temperatures_c: tuple[float, ...]  # NaN = open thermistor
    extra: bytes = b""  # fields newer firmware appends after the NTCs, not parsed

    @property
    def balancing(self) -> tuple[bool, ...]:
        return tuple(bool(self.balance_bits >> i & 1) for i in range(min(self.cell_count, MAX_BALANCE_CELLS)))

    @property
    def alarms(self) -> dict[AlarmName, AlarmLevel]:
        return protection_alarms(self.protection_bits)

    @property
    def production_date(self) -> date | None:
        """The production date, or None if the field does not hold a valid date."""
        return decode_production_date(self.production_date_raw)


def decode_production_date(raw: int) -> date | None:
    try:
        return date(2000 + (raw >> 9), (raw >> 5) & 0x0F, raw & 0x1F)
    except ValueError:
        return None


def encode_production_date(day: date) -> int:
    if not 2000 <= day.year <= 2127:
        raise ValueError(f"JBD production date year must be 2000..2127, got {day.year}")
    return (day.year - 2000) << 9 | day.month << 5 | day.day


def protection_alarms(bits: int) -> dict[AlarmName, AlarmLevel]:
    """Neutral alarms from the protection word; every JBD protection is an ALARM."""
    return {name: AlarmLevel.ALARM if bits >> bit & 1 else AlarmLevel.OK for bit, name in PROTECTION_BITS}


def protection_bits_for(alarms: dict[AlarmName, AlarmLevel]) -> int:
    """The protection word that reports ``alarms`` (any level above OK sets the bit).

    Alarms JBD cannot report are ignored.
    """
    return sum(1 << bit for bit, name in PROTECTION_BITS if alarms.get(name, AlarmLevel.OK) > AlarmLevel.OK)


def ntc_to_celsius(raw: int) -> float:
    if raw in (NTC_OPEN_RAW, NTC_INVALID_RAW):
        return math.nan
    return (raw - NTC_ZERO_C_RAW) / 10


def celsius_to_ntc(temperature_c: float) -> int:
    if math.isnan(temperature_c):
        return NTC_OPEN_RAW
    raw = round(temperature_c * 10) + NTC_ZERO_C_RAW
    if not NTC_OPEN_RAW < raw < NTC_INVALID_RAW:
        raise ValueError(f"JBD temperature {temperature_c} degC is outside the NTC field")
    return raw


def decode_basic_info(payload: bytes) -> JbdBasicInfo:
    """Register 0x03 payload -> JbdBasicInfo. Raises PayloadError if it is too short."""
    if len(payload) < _BASIC_HEAD.size:
        raise PayloadError(f"JBD basic info: {len(payload)} bytes, need at least {_BASIC_HEAD.size}", raw=payload)
    (
        voltage,
        current,
        remaining,
        nominal,
        cycles,
        prod_date,
        bal_lo,
        bal_hi,
        protection,
        version,
        rsoc,
        fet,
        cell_count,
        ntc_count,
    ) = _BASIC_HEAD.unpack_from(payload)
    ntc_end = _BASIC_HEAD.size + 2 * ntc_count
    if len(payload) < ntc_end:
        raise PayloadError(
            f"JBD basic info: announces {ntc_count} NTCs but holds {len(payload) - _BASIC_HEAD.size} bytes of them",
            raw=payload,
        )
    temps = tuple(ntc_to_celsius(raw) for (raw,) in _U16.iter_unpack(payload[_BASIC_HEAD.size : ntc_end]))
    return JbdBasicInfo(
        voltage_v=voltage / 100,
        current_a=current / 100,
        remaining_ah=remaining / 100,
        nominal_ah=nominal / 100,
        cycles=cycles,
        production_date_raw=prod_date,
        balance_bits=bal_lo | bal_hi << 16,
        protection_bits=protection,
        software_version=version,
        soc_pct=float(rsoc),
        charge_fet=bool(fet & 0x01),
        discharge_fet=bool(fet & 0x02),
        cell_count=cell_count,
        temperatures_c=temps,
        extra=bytes(payload[ntc_end:]),
    )


def _scaled(value: float, scale: float, lo: int, hi: int, field: str) -> int:
    raw = round(value * scale)
    if not lo <= raw <= hi:
        raise ValueError(f"JBD {field}={value} does not fit its field ({lo / scale}..{hi / scale})")
    return raw


def encode_basic_info(info: JbdBasicInfo) -> bytes:
    """JbdBasicInfo -> register 0x03 payload. Raises ValueError for a value outside its field."""
    head = _BASIC_HEAD.pack(
        _scaled(info.voltage_v, 100, 0, 0xFFFF, "voltage_v"),
        _scaled(info.current_a, 100, -0x8000, 0x7FFF, "current_a"),
        _scaled(info.remaining_ah, 100, 0, 0xFFFF, "remaining_ah"),
        _scaled(info.nominal_ah, 100, 0, 0xFFFF, "nominal_ah"),
        info.cycles,
        info.production_date_raw,
        info.balance_bits & 0xFFFF,
        info.balance_bits >> 16 & 0xFFFF,
        info.protection_bits,
        info.software_version,
        _scaled(info.soc_pct, 1, 0, 100, "soc_pct"),
        (0x01 if info.charge_fet else 0) | (0x02 if info.discharge_fet else 0),
        info.cell_count,
        len(info.temperatures_c),
    )
    ntcs = b"".join(_U16.pack(celsius_to_ntc(t)) for t in info.temperatures_c)
    return head + ntcs + info.extra


def decode_cell_voltages(payload: bytes) -> tuple[float, ...]:
    """Register 0x04 payload (u16 mV per cell) -> volts, cell 1 first."""
    if len(payload) % 2:
        raise PayloadError(f"JBD cell voltages: odd payload length {len(payload)}", raw=payload)
    return tuple(mv / 1000 for (mv,) in _U16.iter_unpack(payload))


def encode_cell_voltages(voltages_v: tuple[float, ...] | list[float]) -> bytes:
    return b"".join(_U16.pack(_scaled(v, 1000, 0, 0xFFFF, "cell voltage")) for v in voltages_v)


def decode_hardware_name(payload: bytes) -> str:
    """Register 0x05 payload: the BMS model name in ASCII."""
    return payload.decode("ascii", errors="replace")


def encode_hardware_name(name: str) -> bytes:
    return name.encode("ascii", errors="replace")[:0xFF]


# --- normalised reading -----------------------------------------------------------------------


def to_reading(basic: JbdBasicInfo, cell_voltages_v: tuple[float, ...]) -> BmsReading:
    """Combine a basic-info and a cell-voltage reply into the neutral BmsReading."""
    if len(cell_voltages_v) != basic.cell_count:
        raise PayloadError(
            f"JBD: basic info reports {basic.cell_count} cells but the cell-voltage reply holds {len(cell_voltages_v)}"
        )
    return BmsReading(
        voltage_v=basic.voltage_v,
        current_a=basic.current_a,
        soc_pct=basic.soc_pct,
        cell_voltages_v=tuple(cell_voltages_v),
        temperatures_c=basic.temperatures_c,
        balancing=basic.balancing + (False,) * max(0, basic.cell_count - MAX_BALANCE_CELLS),
        charge_fet=basic.charge_fet,
        discharge_fet=basic.discharge_fet,
        cycles=basic.cycles,
        remaining_ah=basic.remaining_ah,
        nominal_ah=basic.nominal_ah,
        alarms=basic.alarms,
    )
