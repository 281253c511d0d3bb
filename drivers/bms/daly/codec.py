"""Daly BMS UART/RS-485 protocol (9600 8N1): pure codec, both directions.

Every frame is 13 bytes (DOMAIN.md section 3)::

    A5  <addr>  <cmd>  08  <8 data bytes>  <chk = sum of the first 12 bytes & 0xFF>

The host sends with address 0x40 (0x80 is seen from Bluetooth modules); the BMS answers with
0x01. Data layouts per command, big-endian (verify where marked):

    0x90  pack V u16 x0.1 V | acquisition V u16 x0.1 V | current u16 (raw - 30000) x0.1 A | SOC u16 x0.1 %
    0x91  max cell mV u16 | max cell no u8 | min cell mV u16 | min cell no u8 | 2 reserved
    0x92  max temp u8 (+40) | max sensor no | min temp u8 (+40) | min sensor no | 4 reserved
    0x93  state u8 (0 idle, 1 charging, 2 discharging) | charge MOS u8 | discharge MOS u8 |
          BMS life u8 (0-255, rolls over) | remaining capacity u32 mAh
    0x94  cell count u8 | NTC count u8 | charger on u8 | load on u8 | DI/DO bits u8 | cycles u16 | 1 reserved
    0x95  one frame per 3 cells: frame no u8 (1-based) | 3 x cell mV u16 | 1 reserved
    0x96  one frame per 7 sensors: frame no u8 (1-based) | 7 x temp u8 (+40)
    0x97  balance bits: data byte 0 bit 0 = cell 1 .. byte 5 bit 7 = cell 48 (verify) | 2 reserved
    0x98  alarm bits, bytes 0-6 (table ``ALARM_BITS``) | byte 7 fault code

Current sign: in most public descriptions raw > 30000 is charging, so ``(raw - 30000) x 0.1`` is
already + = charging. At least one public driver notes the opposite on its unit; pass
``invert_current=True`` for such a device.

Open thermistor: an open NTC reads the cold end of the scale, raw 0 = -40 degC, and is decoded
to NaN (an unbroken sensor really at -40 degC is indistinguishable and reads NaN too).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from drivers.bms.errors import (
    BmsFrameError,
    ChecksumError,
    DuplicateFrameError,
    LengthMismatchError,
    MissingFramesError,
    PayloadError,
    SkippedBytesError,
    StartByteError,
    TruncatedFrameError,
    UnexpectedResponseError,
)
from drivers.bms.model import AlarmLevel, AlarmName, BmsReading

START = 0xA5
HOST_ADDRESS = 0x40
BMS_ADDRESS = 0x01
DATA_LEN = 8
FRAME_LEN = 13
CURRENT_OFFSET_RAW = 30000
TEMPERATURE_OFFSET_C = 40
TEMPERATURE_OPEN_RAW = 0  # -40 degC: what an open NTC reads
CELLS_PER_FRAME = 3
SENSORS_PER_FRAME = 7
MAX_BALANCE_CELLS = 48

_EMPTY = bytes(DATA_LEN)


class DalyCommand(IntEnum):
    PACK = 0x90
    CELL_RANGE = 0x91
    TEMPERATURE_RANGE = 0x92
    MOS = 0x93
    STATUS = 0x94
    CELL_VOLTAGES = 0x95
    TEMPERATURES = 0x96
    BALANCE = 0x97
    ALARMS = 0x98


class DalyChargeState(IntEnum):
    IDLE = 0
    CHARGING = 1
    DISCHARGING = 2


def checksum(head: bytes | bytearray | memoryview) -> int:
    return sum(head) & 0xFF


# --- frames -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DalyFrame:
    address: int
    command: int
    data: bytes  # always 8 bytes


def encode_frame(address: int, command: int, data: bytes = _EMPTY) -> bytes:
    if len(data) != DATA_LEN:
        raise ValueError(f"Daly frame data must be {DATA_LEN} bytes, got {len(data)}")
    head = bytes((START, address, command, DATA_LEN)) + data
    return head + bytes((checksum(head),))


def encode_request(command: int, *, address: int = HOST_ADDRESS, data: bytes = _EMPTY) -> bytes:
    """E.g. ``encode_request(0x90)`` -> ``A5 40 90 08 00 00 00 00 00 00 00 00 7D``."""
    return encode_frame(address, command, data)


def decode_frame(raw: bytes) -> DalyFrame:
    """Check one 13-byte frame's framing and checksum (either direction)."""
    raw = bytes(raw)
    if not raw or raw[0] != START:
        raise StartByteError("Daly frame: does not start with 0xA5", raw=raw)
    if len(raw) < FRAME_LEN:
        raise TruncatedFrameError(f"Daly frame: {len(raw)} of {FRAME_LEN} bytes arrived", raw=raw)
    if len(raw) > FRAME_LEN:
        raise LengthMismatchError(f"Daly frame: {len(raw)} bytes, frames are {FRAME_LEN}", raw=raw)
    if raw[3] != DATA_LEN:
        raise LengthMismatchError(f"Daly frame: data length byte 0x{raw[3]:02X}, expected 0x08", raw=raw)
    expected = checksum(raw[:12])
    if raw[12] != expected:
        raise ChecksumError(
            f"Daly frame: checksum 0x{raw[12]:02X} != computed 0x{expected:02X} (line noise or wrong baud rate)",
            raw=raw,
            expected=expected,
            received=raw[12],
        )
    return DalyFrame(address=raw[1], command=raw[2], data=raw[4:12])


def check_reply(frame: DalyFrame, *, command: int, address: int = BMS_ADDRESS) -> DalyFrame:
    """Raise UnexpectedResponseError unless ``frame`` is the BMS's answer to ``command``."""
    if frame.command != command or frame.address != address:
        raise UnexpectedResponseError(
            f"Daly reply: command 0x{frame.command:02X} from address 0x{frame.address:02X}, expected "
            f"0x{command:02X} from 0x{address:02X} (a late reply, or another device on the bus)",
            raw=encode_frame(frame.address, frame.command, frame.data),
        )
    return frame


def decode_reply(raw: bytes, *, command: int, address: int = BMS_ADDRESS) -> DalyFrame:
    return check_reply(decode_frame(raw), command=command, address=address)


def encode_reply(command: int, data: bytes, *, address: int = BMS_ADDRESS) -> bytes:
    return encode_frame(address, command, data)


class DalyStream:
    """Cuts a byte stream (either direction) into checksum-valid frames, resynchronising on 0xA5.

    ``feed`` returns frames and framing errors in arrival order. A rejected 13-byte candidate
    costs only its start byte. The 8-bit checksum lets about 1 in 256 random candidates through
    that also carry the 0x08 length byte: that is the protocol's limit, not this decoder's.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[DalyFrame | BmsFrameError]:
        buf = self._buf
        buf += data
        out: list[DalyFrame | BmsFrameError] = []
        pos = 0
        n = len(buf)
        while pos < n:
            start = buf.find(START, pos)
            if start < 0:
                out.append(_skipped(buf[pos:]))
                pos = n
                break
            if start > pos:
                out.append(_skipped(buf[pos:start]))
                pos = start
            if n - pos < FRAME_LEN:
                break
            candidate = bytes(buf[pos : pos + FRAME_LEN])
            try:
                out.append(decode_frame(candidate))
            except BmsFrameError as exc:
                out.append(exc)
                nxt = buf.find(START, pos + 1, pos + FRAME_LEN)
                pos = pos + FRAME_LEN if nxt < 0 else nxt
            else:
                pos += FRAME_LEN
        del buf[:pos]
        return out

    def flush(self) -> list[BmsFrameError]:
        """End of input (e.g. a reply timeout): report a partial frame still held back."""
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [TruncatedFrameError(f"Daly stream ended inside a frame ({len(rest)} bytes)", raw=rest)]

    @property
    def pending(self) -> int:
        return len(self._buf)


def _data(data: bytes, what: str) -> bytes:
    if len(data) != DATA_LEN:
        raise PayloadError(f"Daly {what}: {len(data)} data bytes, expected {DATA_LEN}", raw=data)
    return data


def _skipped(junk: bytes | bytearray) -> SkippedBytesError:
    return SkippedBytesError(f"Daly stream: skipped {len(junk)} bytes before a frame start", raw=junk)


# --- field helpers ----------------------------------------------------------------------------


def _scaled(value: float, scale: float, lo: int, hi: int, field: str) -> int:
    raw = round(value * scale)
    if not lo <= raw <= hi:
        raise ValueError(f"Daly {field}={value} does not fit its field ({lo / scale}..{hi / scale})")
    return raw


def temperature_from_raw(raw: int) -> float:
    return math.nan if raw == TEMPERATURE_OPEN_RAW else float(raw - TEMPERATURE_OFFSET_C)


def temperature_to_raw(temperature_c: float) -> int:
    """NaN (open sensor) -> raw 0. Real temperatures -39..215 degC, rounded to whole degrees."""
    if math.isnan(temperature_c):
        return TEMPERATURE_OPEN_RAW
    raw = round(temperature_c) + TEMPERATURE_OFFSET_C
    if not TEMPERATURE_OPEN_RAW < raw <= 0xFF:
        raise ValueError(f"Daly temperature {temperature_c} degC is outside -39..215 degC")
    return raw


# --- 0x90 pack --------------------------------------------------------------------------------

_PACK = struct.Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class DalyPack:
    voltage_v: float
    acquisition_voltage_v: float
    current_a: float  # + = charging
    soc_pct: float


def decode_pack(data: bytes, *, invert_current: bool = False) -> DalyPack:
    voltage, acquisition, current, soc = _PACK.unpack(_data(data, "0x90 pack"))
    current_a = (current - CURRENT_OFFSET_RAW) / 10
    return DalyPack(
        voltage_v=voltage / 10,
        acquisition_voltage_v=acquisition / 10,
        current_a=-current_a if invert_current else current_a,
        soc_pct=soc / 10,
    )


def encode_pack(pack: DalyPack) -> bytes:
    return _PACK.pack(
        _scaled(pack.voltage_v, 10, 0, 0xFFFF, "voltage_v"),
        _scaled(pack.acquisition_voltage_v, 10, 0, 0xFFFF, "acquisition_voltage_v"),
        _scaled(pack.current_a, 10, -CURRENT_OFFSET_RAW, 0xFFFF - CURRENT_OFFSET_RAW, "current_a") + CURRENT_OFFSET_RAW,
        _scaled(pack.soc_pct, 10, 0, 1000, "soc_pct"),
    )


# --- 0x91 / 0x92 ranges -----------------------------------------------------------------------

_CELL_RANGE = struct.Struct(">HBHB2x")
_TEMP_RANGE = struct.Struct(">BBBB4x")


@dataclass(frozen=True, slots=True)
class DalyCellRange:
    max_cell_v: float
    max_cell: int  # 1-based cell number
    min_cell_v: float
    min_cell: int


def decode_cell_range(data: bytes) -> DalyCellRange:
    max_mv, max_cell, min_mv, min_cell = _CELL_RANGE.unpack(_data(data, "0x91 cell range"))
    return DalyCellRange(max_mv / 1000, max_cell, min_mv / 1000, min_cell)


def encode_cell_range(cr: DalyCellRange) -> bytes:
    return _CELL_RANGE.pack(
        _scaled(cr.max_cell_v, 1000, 0, 0xFFFF, "max_cell_v"),
        cr.max_cell,
        _scaled(cr.min_cell_v, 1000, 0, 0xFFFF, "min_cell_v"),
        cr.min_cell,
    )


@dataclass(frozen=True, slots=True)
class DalyTemperatureRange:
    max_c: float  # NaN = open sensor
    max_sensor: int  # 1-based sensor number
    min_c: float
    min_sensor: int


def decode_temperature_range(data: bytes) -> DalyTemperatureRange:
    max_raw, max_sensor, min_raw, min_sensor = _TEMP_RANGE.unpack(_data(data, "0x92 temperature range"))
    return DalyTemperatureRange(temperature_from_raw(max_raw), max_sensor, temperature_from_raw(min_raw), min_sensor)


def encode_temperature_range(tr: DalyTemperatureRange) -> bytes:
    return _TEMP_RANGE.pack(temperature_to_raw(tr.max_c), tr.max_sensor, temperature_to_raw(tr.min_c), tr.min_sensor)


# --- 0x93 MOS and capacity --------------------------------------------------------------------

_MOS = struct.Struct(">BBBBI")


@dataclass(frozen=True, slots=True)
class DalyMos:
    state: DalyChargeState | int  # an int when the BMS sends a state this codec does not know
    charge_mos: bool
    discharge_mos: bool
    bms_life: int
    remaining_ah: float


def decode_mos(data: bytes) -> DalyMos:
    state, charge, discharge, life, remaining_mah = _MOS.unpack(_data(data, "0x93 MOS"))
    known = state in DalyChargeState._value2member_map_
    return DalyMos(
        state=DalyChargeState(state) if known else state,
        charge_mos=bool(charge),
        discharge_mos=bool(discharge),
        bms_life=life,
        remaining_ah=remaining_mah / 1000,
    )


def encode_mos(mos: DalyMos) -> bytes:
    return _MOS.pack(
        int(mos.state),
        1 if mos.charge_mos else 0,
        1 if mos.discharge_mos else 0,
        mos.bms_life & 0xFF,
        _scaled(mos.remaining_ah, 1000, 0, 0xFFFF_FFFF, "remaining_ah"),
    )


# --- 0x94 status ------------------------------------------------------------------------------

_STATUS = struct.Struct(">BBBBBHx")


@dataclass(frozen=True, slots=True)
class DalyStatus:
    cell_count: int
    sensor_count: int
    charger_connected: bool
    load_connected: bool
    dio_bits: int  # DI1..DI4 = bits 0-3, DO1..DO4 = bits 4-7
    cycles: int


def decode_status(data: bytes) -> DalyStatus:
    cells, sensors, charger, load, dio, cycles = _STATUS.unpack(_data(data, "0x94 status"))
    return DalyStatus(cells, sensors, bool(charger), bool(load), dio, cycles)


def encode_status(st: DalyStatus) -> bytes:
    return _STATUS.pack(
        st.cell_count,
        st.sensor_count,
        1 if st.charger_connected else 0,
        1 if st.load_connected else 0,
        st.dio_bits,
        st.cycles,
    )


# --- 0x95 / 0x96 multi-frame answers ----------------------------------------------------------

_CELL_FRAME = struct.Struct(">BHHHx")
_TEMP_FRAME = struct.Struct(">B7B")


def cell_frame_count(cells: int) -> int:
    return -(-cells // CELLS_PER_FRAME)


def temperature_frame_count(sensors: int) -> int:
    return -(-sensors // SENSORS_PER_FRAME)


def encode_cell_frame(number: int, voltages_v: Iterable[float]) -> bytes:
    """One 0x95 data block: frame ``number`` (1-based) with up to 3 cells; missing slots are 0."""
    mv = [_scaled(v, 1000, 0, 0xFFFF, "cell voltage") for v in voltages_v]
    if len(mv) > CELLS_PER_FRAME:
        raise ValueError(f"a Daly cell frame holds {CELLS_PER_FRAME} cells, got {len(mv)}")
    return _CELL_FRAME.pack(number, *mv, *([0] * (CELLS_PER_FRAME - len(mv))))


def encode_temperature_frame(number: int, temperatures_c: Iterable[float]) -> bytes:
    """One 0x96 data block: frame ``number`` (1-based) with up to 7 sensors; missing slots are 0."""
    raws = [temperature_to_raw(t) for t in temperatures_c]
    if len(raws) > SENSORS_PER_FRAME:
        raise ValueError(f"a Daly temperature frame holds {SENSORS_PER_FRAME} sensors, got {len(raws)}")
    return _TEMP_FRAME.pack(number, *raws, *([0] * (SENSORS_PER_FRAME - len(raws))))


class DalyMultiFrameAssembler:
    """Collects the reply frames of one multi-frame query (0x95 cells, 0x96 temperatures).

    Frames may arrive in any order. Frame numbers above ``expected_frames`` are ignored: some
    firmware (reportedly over Bluetooth) always sends every frame it has room for.
    """

    __slots__ = ("_blocks", "command", "expected_frames")

    def __init__(self, command: int, *, expected_frames: int) -> None:
        if expected_frames < 0:
            raise ValueError(f"expected_frames must be >= 0, got {expected_frames}")
        self.command = command
        self.expected_frames = expected_frames
        self._blocks: dict[int, bytes] = {}

    @property
    def complete(self) -> bool:
        return len(self._blocks) == self.expected_frames

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(n for n in range(1, self.expected_frames + 1) if n not in self._blocks)

    def add(self, frame: DalyFrame) -> bool:
        """Take one reply frame; return whether the answer is now complete."""
        raw = encode_frame(frame.address, frame.command, frame.data)
        if frame.command != self.command:
            raise UnexpectedResponseError(
                f"Daly multi-frame 0x{self.command:02X}: got a 0x{frame.command:02X} frame", raw=raw
            )
        number = frame.data[0]
        if number == 0:
            raise UnexpectedResponseError(
                f"Daly multi-frame 0x{self.command:02X}: frame number 0 (numbers start at 1)", raw=raw
            )
        if number in self._blocks:
            raise DuplicateFrameError(
                f"Daly multi-frame 0x{self.command:02X}: frame {number} arrived twice",
                raw=raw,
                frame_number=number,
            )
        if number <= self.expected_frames:
            self._blocks[number] = frame.data
        return self.complete

    def blocks(self) -> tuple[bytes, ...]:
        """The data blocks in frame order. Raises MissingFramesError if any is missing."""
        missing = self.missing
        if missing:
            raise MissingFramesError(
                f"Daly multi-frame 0x{self.command:02X}: frames {list(missing)} of "
                f"{self.expected_frames} never arrived",
                missing=missing,
            )
        return tuple(self._blocks[n] for n in range(1, self.expected_frames + 1))


def _assemble(command: int, frames: Iterable[DalyFrame], expected_frames: int) -> tuple[bytes, ...]:
    assembler = DalyMultiFrameAssembler(command, expected_frames=expected_frames)
    for frame in frames:
        assembler.add(frame)
    return assembler.blocks()


def assemble_cell_voltages(frames: Iterable[DalyFrame], cell_count: int) -> tuple[float, ...]:
    """0x95 reply frames -> ``cell_count`` cell voltages in volts, cell 1 first."""
    values: list[float] = []
    for block in _assemble(DalyCommand.CELL_VOLTAGES, frames, cell_frame_count(cell_count)):
        _, *mv = _CELL_FRAME.unpack(block)
        values.extend(m / 1000 for m in mv)
    return tuple(values[:cell_count])


def assemble_temperatures(frames: Iterable[DalyFrame], sensor_count: int) -> tuple[float, ...]:
    """0x96 reply frames -> ``sensor_count`` temperatures in degC (NaN = open sensor)."""
    values: list[float] = []
    for block in _assemble(DalyCommand.TEMPERATURES, frames, temperature_frame_count(sensor_count)):
        values.extend(temperature_from_raw(raw) for raw in block[1:])
    return tuple(values[:sensor_count])


# --- 0x97 balance -----------------------------------------------------------------------------


def decode_balance(data: bytes, cell_count: int) -> tuple[bool, ...]:
    _data(data, "0x97 balance")
    if cell_count > MAX_BALANCE_CELLS:
        raise PayloadError(f"Daly balance bits cover {MAX_BALANCE_CELLS} cells, asked for {cell_count}")
    return tuple(bool(data[i // 8] >> (i % 8) & 1) for i in range(cell_count))


def encode_balance(flags: Iterable[bool]) -> bytes:
    out = bytearray(DATA_LEN)
    for i, on in enumerate(flags):
        if i >= MAX_BALANCE_CELLS:
            raise ValueError(f"Daly balance bits cover {MAX_BALANCE_CELLS} cells")
        if on:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


# --- 0x98 alarms ------------------------------------------------------------------------------

_W, _A = AlarmLevel.WARNING, AlarmLevel.ALARM


@dataclass(frozen=True, slots=True)
class DalyAlarmBit:
    byte: int
    bit: int
    label: str
    alarm: AlarmName | None  # None: no neutral equivalent; visible in ``active_alarm_labels`` only
    level: AlarmLevel


def _leveled(byte: int, first_bit: int, label: str, alarm: AlarmName | None) -> tuple[DalyAlarmBit, ...]:
    return (
        DalyAlarmBit(byte, first_bit, f"{label} level 1", alarm, _W),
        DalyAlarmBit(byte, first_bit + 1, f"{label} level 2", alarm, _A),
    )


# Bit table of the public "Daly RS485+UART protocol" document (verify against a real unit).
# Byte 0 bit 7 = "total voltage too low, level 2" is confirmed by Daly's own protocol notes.
# Level 1 maps to WARNING and level 2 to ALARM; the byte 4-6 faults carry no level and are ALARM.
ALARM_BITS: tuple[DalyAlarmBit, ...] = (
    *_leveled(0, 0, "cell voltage too high", AlarmName.CELL_OVERVOLTAGE),
    *_leveled(0, 2, "cell voltage too low", AlarmName.CELL_UNDERVOLTAGE),
    *_leveled(0, 4, "total voltage too high", AlarmName.PACK_OVERVOLTAGE),
    *_leveled(0, 6, "total voltage too low", AlarmName.PACK_UNDERVOLTAGE),
    *_leveled(1, 0, "charge temperature too high", AlarmName.CHARGE_OVERTEMPERATURE),
    *_leveled(1, 2, "charge temperature too low", AlarmName.CHARGE_UNDERTEMPERATURE),
    *_leveled(1, 4, "discharge temperature too high", AlarmName.DISCHARGE_OVERTEMPERATURE),
    *_leveled(1, 6, "discharge temperature too low", AlarmName.DISCHARGE_UNDERTEMPERATURE),
    *_leveled(2, 0, "charge overcurrent", AlarmName.CHARGE_OVERCURRENT),
    *_leveled(2, 2, "discharge overcurrent", AlarmName.DISCHARGE_OVERCURRENT),
    *_leveled(2, 4, "SOC too high", None),
    *_leveled(2, 6, "SOC too low", AlarmName.LOW_SOC),
    *_leveled(3, 0, "cell voltage difference too high", AlarmName.CELL_IMBALANCE),
    *_leveled(3, 2, "temperature difference too high", None),
    DalyAlarmBit(4, 0, "charge MOS over-temperature", AlarmName.MOS_OVERTEMPERATURE, _A),
    DalyAlarmBit(4, 1, "discharge MOS over-temperature", AlarmName.MOS_OVERTEMPERATURE, _A),
    DalyAlarmBit(4, 2, "charge MOS temperature sensor fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(4, 3, "discharge MOS temperature sensor fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(4, 4, "charge MOS welded (adhesion)", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(4, 5, "discharge MOS welded (adhesion)", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(4, 6, "charge MOS open circuit", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(4, 7, "discharge MOS open circuit", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 0, "AFE acquisition chip fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 1, "cell voltage acquisition lost", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 2, "cell temperature sensor fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 3, "EEPROM fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 4, "RTC fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 5, "precharge failure", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 6, "vehicle communication fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(5, 7, "internal communication fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(6, 0, "current module fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(6, 1, "total voltage detection fault", AlarmName.INTERNAL_FAILURE, _A),
    DalyAlarmBit(6, 2, "short circuit protection", AlarmName.SHORT_CIRCUIT, _A),
    DalyAlarmBit(6, 3, "low voltage, charging forbidden", AlarmName.CELL_UNDERVOLTAGE, _A),
)
REPORTED_ALARMS: frozenset[AlarmName] = frozenset(b.alarm for b in ALARM_BITS if b.alarm is not None)
FAULT_CODE_BYTE = 7


def decode_alarms(data: bytes) -> dict[AlarmName, AlarmLevel]:
    """0x98 data -> the worst level per neutral alarm, for every alarm Daly can report."""
    _data(data, "0x98 alarms")
    alarms = dict.fromkeys(REPORTED_ALARMS, AlarmLevel.OK)
    for b in ALARM_BITS:
        if b.alarm is not None and data[b.byte] >> b.bit & 1 and b.level > alarms[b.alarm]:
            alarms[b.alarm] = b.level
    return alarms


def active_alarm_labels(data: bytes) -> list[str]:
    """Human-readable names of every set bit, including those with no neutral equivalent."""
    _data(data, "0x98 alarms")
    labels = [b.label for b in ALARM_BITS if data[b.byte] >> b.bit & 1]
    known = {(b.byte, b.bit) for b in ALARM_BITS}
    labels += [
        f"reserved bit {bit} of byte {byte}"
        for byte in range(FAULT_CODE_BYTE)
        for bit in range(8)
        if data[byte] >> bit & 1 and (byte, bit) not in known
    ]
    return labels


def encode_alarms(alarms: dict[AlarmName, AlarmLevel], *, fault_code: int = 0) -> bytes:
    """0x98 data that reports ``alarms``: for each one above OK, the first bit of its level.

    Alarms Daly cannot report (fuse, software lock) are ignored.
    """
    out = bytearray(DATA_LEN)
    for name, level in alarms.items():
        if level == AlarmLevel.OK:
            continue
        bit = next((b for b in ALARM_BITS if b.alarm == name and b.level == level), None)
        if bit is None:  # no bit at this level (e.g. MOS over-temperature only has ALARM)
            bit = next((b for b in ALARM_BITS if b.alarm == name), None)
        if bit is not None:
            out[bit.byte] |= 1 << bit.bit
    out[FAULT_CODE_BYTE] = fault_code
    return bytes(out)


# --- normalised reading -----------------------------------------------------------------------


def to_reading(
    *,
    pack: DalyPack,
    mos: DalyMos,
    status: DalyStatus,
    cell_voltages_v: tuple[float, ...],
    temperatures_c: tuple[float, ...],
    balancing: tuple[bool, ...],
    alarms: dict[AlarmName, AlarmLevel],
) -> BmsReading:
    """Combine the answers to 0x90, 0x93-0x98 into the neutral BmsReading.

    Daly reports no nominal capacity in these answers: ``nominal_ah`` is NaN.
    """
    return BmsReading(
        voltage_v=pack.voltage_v,
        current_a=pack.current_a,
        soc_pct=pack.soc_pct,
        cell_voltages_v=tuple(cell_voltages_v),
        temperatures_c=tuple(temperatures_c),
        balancing=tuple(balancing),
        charge_fet=mos.charge_mos,
        discharge_fet=mos.discharge_mos,
        cycles=status.cycles,
        remaining_ah=mos.remaining_ah,
        nominal_ah=math.nan,
        alarms=alarms,
    )
