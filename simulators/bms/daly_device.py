"""Simulated Daly BMS: request bytes + PackSnapshot -> the reply bytes a real Daly would send.

Pure: no I/O, no clock. Replies are built with the driver's own codec. Behaviour modelled on the
real device: it answers requests from the host addresses (0x40 PC/UART, 0x80 Bluetooth) with
address 0x01; a frame with a bad checksum or an unknown command gets no answer; cells (0x95)
and temperatures (0x96) come as several consecutive frames; measurements saturate at the edges
of their fields; an open thermistor reads raw 0 (-40 degC on the Daly scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.bms.daly.codec import (
    BMS_ADDRESS,
    CELLS_PER_FRAME,
    DATA_LEN,
    SENSORS_PER_FRAME,
    DalyCellRange,
    DalyChargeState,
    DalyCommand,
    DalyFrame,
    DalyMos,
    DalyPack,
    DalyStatus,
    DalyStream,
    DalyTemperatureRange,
    cell_frame_count,
    decode_frame,
    encode_balance,
    encode_cell_frame,
    encode_cell_range,
    encode_mos,
    encode_pack,
    encode_reply,
    encode_status,
    encode_temperature_frame,
    encode_temperature_range,
    temperature_frame_count,
)
from drivers.bms.errors import BmsFrameError
from simulators.models.snapshot import PackSnapshot

# Field edges: a value beyond them reads as the edge.
_MAX_DECI = 0xFFFF / 10
_MIN_CURRENT_A = -3000.0
_MAX_CURRENT_A = (0xFFFF - 30000) / 10
_MIN_TEMP_C = -39.0  # raw 1: raw 0 is what an open sensor reads
_MAX_TEMP_C = 215.0
_IDLE_CURRENT_A = 0.1  # below this magnitude the BMS reports "idle" (one count of the current field)


@dataclass(slots=True)
class DalyDeviceState:
    """What a simulated Daly knows beyond the pack, and the faults a test can force."""

    address: int = BMS_ADDRESS
    host_addresses: frozenset[int] = frozenset({0x40, 0x80})
    cycles: int = 0  # counted before the simulation; the pack's equivalent full cycles add to it
    bms_life: int = 0
    charge_mos: bool = True
    discharge_mos: bool = True
    dio_bits: int = 0
    sensor_cells: tuple[int, ...] = (0,)  # the cell each NTC sits on (index into the snapshot's cells)
    open_sensors: frozenset[int] = frozenset()  # 0-based sensor numbers forced open
    alarm_data: bytes = bytes(DATA_LEN)  # forced 0x98 data, e.g. encode_alarms({...})
    cell_frames: int | None = None  # frames sent for 0x95; None = just enough (ceil(cells / 3))
    temperature_frames: int | None = None  # frames sent for 0x96; None = ceil(sensors / 7)
    dropped_frames: frozenset[int] = frozenset()  # 0x95/0x96 frame numbers never sent
    duplicated_frames: frozenset[int] = frozenset()  # 0x95/0x96 frame numbers sent twice
    mute: bool = False
    corrupt_checksum: bool = False


def _clamp(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value


def _sensor_temperatures(snapshot: PackSnapshot, state: DalyDeviceState) -> tuple[float, ...]:
    temps = snapshot.cell_temperatures_c
    out = []
    for sensor, cell in enumerate(state.sensor_cells):
        t = temps[cell] if -len(temps) <= cell < len(temps) else snapshot.ambient_c
        if sensor in state.open_sensors or math.isnan(t):
            out.append(math.nan)
        else:
            out.append(_clamp(t, _MIN_TEMP_C, _MAX_TEMP_C))
    return tuple(out)


def _charge_state(current_a: float) -> DalyChargeState:
    if current_a >= _IDLE_CURRENT_A:
        return DalyChargeState.CHARGING
    if current_a <= -_IDLE_CURRENT_A:
        return DalyChargeState.DISCHARGING
    return DalyChargeState.IDLE


def _cell_range(cells: tuple[float, ...]) -> DalyCellRange:
    if not cells:
        return DalyCellRange(0.0, 0, 0.0, 0)
    clamped = [_clamp(v, 0.0, 65.535) for v in cells]
    hi = max(range(len(clamped)), key=clamped.__getitem__)
    lo = min(range(len(clamped)), key=clamped.__getitem__)
    return DalyCellRange(clamped[hi], hi + 1, clamped[lo], lo + 1)


def _temperature_range(temps: tuple[float, ...]) -> DalyTemperatureRange:
    # The BMS compares raw readings, so an open sensor (raw 0) is the minimum.
    if not temps:
        return DalyTemperatureRange(math.nan, 0, math.nan, 0)
    as_raw = [-math.inf if math.isnan(t) else t for t in temps]
    hi = max(range(len(temps)), key=as_raw.__getitem__)
    lo = min(range(len(temps)), key=as_raw.__getitem__)
    return DalyTemperatureRange(temps[hi], hi + 1, temps[lo], lo + 1)


def _multi_frame(command: int, blocks: list[bytes], count: int | None, state: DalyDeviceState) -> list[bytes]:
    """Frame data blocks 1..count (padding with empty frames), applying the frame faults."""
    total = len(blocks) if count is None else count
    out = []
    for number in range(1, total + 1):
        if number in state.dropped_frames:
            continue
        data = blocks[number - 1] if number <= len(blocks) else bytes((number,)) + bytes(DATA_LEN - 1)
        frame = encode_reply(command, data, address=state.address)
        out.append(frame)
        if number in state.duplicated_frames:
            out.append(frame)
    return out


def _replies(command: int, snapshot: PackSnapshot, state: DalyDeviceState) -> list[bytes]:
    def one(data: bytes) -> list[bytes]:
        return [encode_reply(command, data, address=state.address)]

    cells = snapshot.cell_voltages_v
    if command == DalyCommand.PACK:
        return one(
            encode_pack(
                DalyPack(
                    voltage_v=_clamp(snapshot.voltage_v, 0.0, _MAX_DECI),
                    acquisition_voltage_v=_clamp(snapshot.voltage_v, 0.0, _MAX_DECI),
                    current_a=_clamp(snapshot.current_a, _MIN_CURRENT_A, _MAX_CURRENT_A),
                    soc_pct=_clamp(snapshot.soc * 100, 0.0, 100.0),
                )
            )
        )
    if command == DalyCommand.CELL_RANGE:
        return one(encode_cell_range(_cell_range(cells)))
    if command == DalyCommand.TEMPERATURE_RANGE:
        return one(encode_temperature_range(_temperature_range(_sensor_temperatures(snapshot, state))))
    if command == DalyCommand.MOS:
        mos = DalyMos(
            state=_charge_state(snapshot.current_a),
            charge_mos=state.charge_mos,
            discharge_mos=state.discharge_mos,
            bms_life=state.bms_life,
            remaining_ah=_clamp(snapshot.remaining_ah, 0.0, 0xFFFF_FFFF / 1000),
        )
        return one(encode_mos(mos))
    if command == DalyCommand.STATUS:
        status = DalyStatus(
            cell_count=len(cells),
            sensor_count=len(state.sensor_cells),
            charger_connected=snapshot.current_a >= _IDLE_CURRENT_A,
            load_connected=snapshot.current_a <= -_IDLE_CURRENT_A,
            dio_bits=state.dio_bits & 0xFF,
            cycles=(state.cycles + math.floor(snapshot.cycles)) & 0xFFFF,
        )
        return one(encode_status(status))
    if command == DalyCommand.CELL_VOLTAGES:
        clamped = [_clamp(v, 0.0, 65.535) for v in cells]
        blocks = [
            encode_cell_frame(n + 1, clamped[n * CELLS_PER_FRAME : (n + 1) * CELLS_PER_FRAME])
            for n in range(cell_frame_count(len(cells)))
        ]
        return _multi_frame(command, blocks, state.cell_frames, state)
    if command == DalyCommand.TEMPERATURES:
        temps = _sensor_temperatures(snapshot, state)
        blocks = [
            encode_temperature_frame(n + 1, temps[n * SENSORS_PER_FRAME : (n + 1) * SENSORS_PER_FRAME])
            for n in range(temperature_frame_count(len(temps)))
        ]
        return _multi_frame(command, blocks, state.temperature_frames, state)
    if command == DalyCommand.BALANCE:
        return one(encode_balance(snapshot.balancing[:48]))
    if command == DalyCommand.ALARMS:
        return one(bytes(state.alarm_data))
    return []


def daly_reply(request: bytes | DalyFrame, snapshot: PackSnapshot, state: DalyDeviceState) -> bytes:
    """All reply bytes for one request frame; b"" where a real Daly stays silent."""
    if state.mute:
        return b""
    if not isinstance(request, DalyFrame):
        try:
            request = decode_frame(request)
        except BmsFrameError:
            return b""
    if request.address not in state.host_addresses:
        return b""
    frames = _replies(request.command, snapshot, state)
    if state.corrupt_checksum:
        frames = [f[:-1] + bytes(((f[-1] + 1) & 0xFF,)) for f in frames]
    return b"".join(frames)


class SimDalyDevice:
    """A Daly BMS on a byte stream: ``feed`` the host's bytes, get the bytes to answer with."""

    __slots__ = ("_stream", "state")

    def __init__(self, state: DalyDeviceState | None = None) -> None:
        self.state = state if state is not None else DalyDeviceState()
        self._stream = DalyStream()

    def feed(self, data: bytes, snapshot: PackSnapshot) -> bytes:
        return b"".join(
            daly_reply(ev, snapshot, self.state) for ev in self._stream.feed(data) if isinstance(ev, DalyFrame)
        )
