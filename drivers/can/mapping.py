"""DBC signals to the project's BMS channels, both directions. Pure: no bus, no clock, no asyncio.

A CAN BMS pushes cyclic frames; a DBC file says how each frame's bytes become named physical
signals (cantools does that part). This module adds what the bench needs on top:

- ``CanChannelSpec``: which DBC signal feeds which standard channel (``drivers.bms.model``),
  with the unit and sign normalised here (mV -> V, K -> degC, discharge-positive current -> + =
  charge), so the rest of the system sees a CAN BMS exactly like a JBD or Daly one;
- ``resolve_mapping``: checks the spec against a loaded DBC (every signal exists, its unit is
  convertible, its message has a cycle time) and lists every problem at once;
- ``CanFrameAssembler``: the latest frame of every (frame id, mux value) with the bench time it
  arrived; ``fill`` writes one record from them, marking what is too old (STALE), never seen
  (TIMEOUT), garbled (BAD_FRAME) or outside the DBC's range (OUT_OF_RANGE);
- ``CanFrameEncoder``: the simulator's side, SI values in, frame bytes out, from the same mapping.

A multiplexed message (cell voltages, usually) is one source per mux value: each mux value is
expected once per the message's cycle time (the BMS sends the whole rotation every cycle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from daq import channels as std
from daq.records import Channel, Quality
from drivers.bms.model import BALANCE_MASK, CHARGE_FET, DISCHARGE_FET, AlarmName, alarm_channel, bms_channels

NAN = math.nan
_GOOD = int(Quality.GOOD)

# DBC unit -> (factor, offset) into the channel's unit: si = physical * factor + offset
UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "V": {"V": (1.0, 0.0), "mV": (1e-3, 0.0), "kV": (1e3, 0.0)},
    "A": {"A": (1.0, 0.0), "mA": (1e-3, 0.0), "kA": (1e3, 0.0)},
    "%": {"%": (1.0, 0.0), "pct": (1.0, 0.0)},
    "degC": {u: (1.0, 0.0) for u in ("degC", "°C", "C", "deg C", "degreeC", "Cel")} | {"K": (1.0, -273.15)},
}

SlotKind = Literal["value", "level", "flag", "mask"]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One DBC signal for one channel. ``scale`` (SI per DBC unit) replaces the unit table, for
    signals whose unit is empty or unusual; ``discharge_positive`` flips a current's sign."""

    signal: str
    scale: float | None = None
    discharge_positive: bool = False


# A signal by name, or (name, mux value) for a signal sent in several mux values (DBC extended
# multiplexing, SG_MUL_VAL_), where the mux value says which cell the frame carries.
SignalName = str | tuple[str, int]


@dataclass(frozen=True, slots=True)
class CanChannelSpec:
    """Which DBC signal feeds which BMS channel. Cells and temperatures are in order, cell 1 first."""

    cells: tuple[SignalName, ...]
    temperatures: tuple[SignalName, ...] = ()
    voltage_v: SignalSpec | None = None
    current_a: SignalSpec | None = None
    soc_pct: SignalSpec | None = None
    balance_mask: str | None = None
    charge_fet: str | None = None
    discharge_fet: str | None = None
    alarms: tuple[tuple[AlarmName, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SlotMap:
    """One record slot fed by one signal: ``si = physical * factor + offset``."""

    slot: int
    signal: str
    factor: float
    offset: float
    minimum: float | None  # DBC physical range; outside it the value is OUT_OF_RANGE
    maximum: float | None
    kind: SlotKind


@dataclass(slots=True)
class Source:
    """One (frame id, mux value): what arrives together, and when it was last seen."""

    message: str
    frame_id: int
    mux: int | None
    cycle_s: float
    slots: tuple[SlotMap, ...]
    values: list[float] = field(default_factory=list)
    quality: bytearray = field(default_factory=bytearray)
    t_s: float = -math.inf  # bench monotonic seconds of the last frame; -inf = never
    problem: str = ""  # why the last frame was not good, for the log

    @property
    def label(self) -> str:
        return self.message if self.mux is None else f"{self.message}[mux {self.mux}]"


@dataclass(frozen=True, slots=True)
class FrameMap:
    message: Any  # cantools Message
    mux_signal: str | None
    sources: dict[int | None, Source]


@dataclass(slots=True)
class CanMapping:
    channels: tuple[Channel, ...]
    frames: dict[int, FrameMap]
    alarm_level_slot: int
    alarm_slots: tuple[int, ...]  # the slots of the mapped alarms
    unmapped_slots: tuple[int, ...]  # NaN, GOOD: this BMS cannot tell (e.g. an alarm its DBC lacks)

    @property
    def sources(self) -> list[Source]:
        return [s for f in self.frames.values() for s in f.sources.values()]


def expand_signal_names(names: str | Sequence[str], count: int) -> tuple[str, ...]:
    """``"Cell{n:02d}_Voltage"`` -> one name per n = 1..count; a list is taken as it is."""
    if isinstance(names, str):
        return tuple(names.format(n=n) for n in range(1, count + 1))
    return tuple(names)


def mux_indexed(signals: Sequence[str], count: int, *, first_mux: int = 0) -> tuple[tuple[str, int], ...]:
    """Cells carried k per frame, the mux value giving the group: cell n is ``signals[(n-1) % k]``
    in mux value ``first_mux + (n-1) // k`` (the foxBMS-style layout)."""
    k = len(signals)
    return tuple((signals[(n - 1) % k], first_mux + (n - 1) // k) for n in range(1, count + 1))


def _conversion(
    signal: Any, target: str, spec: SignalSpec | None, where: str, problems: list[str]
) -> tuple[float, float]:
    sign = -1.0 if spec is not None and spec.discharge_positive else 1.0
    if spec is not None and spec.scale is not None:
        return spec.scale * sign, 0.0
    unit = (signal.unit or "").strip()
    conv = UNIT_CONVERSIONS[target].get(unit)
    if conv is None:
        known = ", ".join(repr(u) for u in UNIT_CONVERSIONS[target])
        problems.append(
            f"{where}: signal {signal.name} has unit {unit!r}, which does not convert to {target} (known: {known});"
            f" give scale: (the factor to {target}) in the mapping"
        )
        return 1.0, 0.0
    return conv[0] * sign, conv[1]


def resolve_mapping(
    db: Any,
    spec: CanChannelSpec,
    *,
    cells: int,
    sensors: int,
    cycle_times_s: dict[str, float] | None = None,
    where: str = "signals",
) -> tuple[CanMapping | None, list[str]]:
    """Check ``spec`` against the DBC ``db`` (a cantools Database). Returns the mapping, or None
    and one line per problem (signal not in the DBC, unit not convertible, no cycle time, ...)."""
    problems: list[str] = []
    channels = bms_channels(cells, sensors)
    index = {c.name: i for i, c in enumerate(channels)}
    if len(spec.cells) != cells:
        problems.append(f"{where}.cells: {len(spec.cells)} signals for {cells} cells")
    if len(spec.temperatures) != sensors:
        problems.append(f"{where}.temperatures: {len(spec.temperatures)} signals for {sensors} sensors")
    by_signal: dict[str, list[Any]] = {}
    for message in db.messages:
        for sig in message.signals:
            by_signal.setdefault(sig.name, []).append(message)
    # channel, signal, its mux value when the spec fixes it, spec, unit, kind
    wanted: list[tuple[str, str, int | None, SignalSpec | None, str, SlotKind]] = []
    for name, target in ((std.VOLTAGE, "V"), (std.CURRENT, "A"), (std.SOC, "%")):
        s = getattr(spec, name)
        if s is not None:
            wanted.append((name, s.signal, None, s, target, "value"))
    for channels_of, names, target in (
        (std.cell_voltage, spec.cells[:cells], "V"),
        (std.cell_temperature, spec.temperatures[:sensors], "degC"),
    ):
        for n, ref in enumerate(names, 1):
            signal, mux = (ref, None) if isinstance(ref, str) else ref
            wanted.append((channels_of(n), signal, mux, None, target, "value"))
    for channel, kind in ((BALANCE_MASK, "mask"), (CHARGE_FET, "flag"), (DISCHARGE_FET, "flag")):
        sig = getattr(spec, channel)
        if sig is not None:
            wanted.append((channel, sig, None, None, "", kind))
    wanted += [(alarm_channel(alarm), sig, None, None, "", "level") for alarm, sig in spec.alarms]
    cycle_times_s = cycle_times_s or {}
    known_messages = {m.name for m in db.messages}
    for name in sorted(set(cycle_times_s) - known_messages):
        problems.append(f"{where}: cycle_times_s names message {name!r}, which the DBC does not define")
    frames: dict[int, FrameMap] = {}
    slots_by_source: dict[tuple[int, int | None], list[SlotMap]] = {}
    for channel, signal_name, fixed_mux, sig_spec, target, kind in wanted:
        messages = by_signal.get(signal_name)
        if not messages:
            problems.append(
                f"{where}: {channel} maps signal {signal_name!r}, which the DBC does not define;"
                " check the name (case matters) or the dbc: file"
            )
            continue
        if len(messages) > 1:
            problems.append(
                f"{where}: signal {signal_name!r} is in several messages ({', '.join(m.name for m in messages)});"
                " rename it in the DBC"
            )
            continue
        message = messages[0]
        sig = message.get_signal_by_name(signal_name)
        factor, offset = (1.0, 0.0) if kind != "value" else _conversion(sig, target, sig_spec, where, problems)
        cycle_s = cycle_times_s.get(message.name)
        if cycle_s is None and message.cycle_time:
            cycle_s = message.cycle_time / 1000.0
        if cycle_s is None:
            problems.append(
                f"{where}: message {message.name} (signal {signal_name}) has no cycle time in the DBC"
                f" (GenMsgCycleTime); give cycle_times_s: {{{message.name}: SECONDS}}"
            )
            continue
        muxes: list[int | None] = list(sig.multiplexer_ids or [None])
        if fixed_mux is not None:
            if fixed_mux not in muxes:
                problems.append(
                    f"{where}: {channel} maps signal {signal_name!r} in mux value {fixed_mux}, but the DBC sends it"
                    f" in mux values {_ranges(muxes)}; check first_mux and the number of cells"
                )
                continue
            muxes = [fixed_mux]
        elif len(muxes) > 1:
            problems.append(
                f"{where}: {channel} maps signal {signal_name!r}, which the DBC sends in mux values {_ranges(muxes)}:"
                " the mux value says which cell it is; map the cells with {signals: [...], first_mux: N}"
            )
            continue
        mux_signal = next((s.name for s in message.signals if s.is_multiplexer), None)
        frame = frames.get(message.frame_id)
        if frame is None:
            frame = frames[message.frame_id] = FrameMap(message, mux_signal, {})
        for mux in muxes:
            if mux not in frame.sources:
                frame.sources[mux] = Source(message.name, message.frame_id, mux, cycle_s, ())
            slots_by_source.setdefault((message.frame_id, mux), []).append(
                SlotMap(index[channel], signal_name, factor, offset, sig.minimum, sig.maximum, kind)
            )
    if problems:
        return None, problems
    for frame in frames.values():
        for mux, source in frame.sources.items():
            source.slots = tuple(slots_by_source[(source.frame_id, mux)])
            source.values = [NAN] * len(source.slots)
            source.quality = bytearray([int(Quality.TIMEOUT)]) * len(source.slots)
    mapped = {slot.slot for f in frames.values() for s in f.sources.values() for slot in s.slots}
    alarm_level_slot = index[std.ALARM_LEVEL]
    alarm_slots = tuple(index[alarm_channel(a)] for a, _ in spec.alarms)
    unmapped = tuple(i for i in range(len(channels)) if i not in mapped and i != alarm_level_slot)
    return CanMapping(channels, frames, alarm_level_slot, alarm_slots, unmapped), []


def _ranges(values: Sequence[int | None]) -> str:
    numbers = sorted(v for v in values if v is not None)
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 2 else ", ".join(map(str, numbers))


def _physical(slot: SlotMap, value: float) -> tuple[float, int]:
    """A decoded physical value -> (SI value, quality)."""
    if (slot.minimum is not None and value < slot.minimum) or (slot.maximum is not None and value > slot.maximum):
        return NAN, int(Quality.OUT_OF_RANGE)
    if slot.kind == "level":
        return (float(value), _GOOD) if value in (0, 1, 2) else (NAN, int(Quality.OUT_OF_RANGE))
    if slot.kind == "flag":
        return (1.0 if value else 0.0), _GOOD
    return float(value) * slot.factor + slot.offset, _GOOD


class CanFrameAssembler:
    """The latest state of every source, and records built from it at any instant."""

    def __init__(self, mapping: CanMapping, *, stale_factor: float = 3.0) -> None:
        self.mapping = mapping
        self.stale_factor = stale_factor
        self.sources = mapping.sources
        # No frame at all for this long: the bus (or the BMS) is silent, not one frame missing.
        self.silence_s = max(s.cycle_s for s in self.sources) * stale_factor if self.sources else 1.0
        self.last_frame_s = -math.inf
        self.started_s = 0.0
        self.frames = 0
        self.bad_frames = 0

    def reset(self, now_s: float) -> None:
        """A fresh connection: nothing seen yet."""
        self.started_s = now_s
        self.last_frame_s = -math.inf
        for source in self.sources:
            source.t_s = -math.inf
            source.problem = ""

    def update(self, frame_id: int, data: bytes, now_s: float) -> bool:
        """One received frame. Returns False when the frame id is not mapped (ignored)."""
        frame = self.mapping.frames.get(frame_id)
        if frame is None:
            return False
        self.frames += 1
        self.last_frame_s = now_s
        message = frame.message
        if len(data) != message.length:
            self._bad(frame.sources.values(), now_s, f"wrong DLC: {len(data)} bytes, the DBC says {message.length}")
            return True
        try:
            decoded = message.decode(bytes(data), decode_choices=False, scaling=True)
        except Exception as exc:  # cantools raises its own errors and ValueError for undecodable bytes
            self._bad(frame.sources.values(), now_s, f"cannot decode: {exc}")
            return True
        mux = decoded.get(frame.mux_signal) if frame.mux_signal is not None else None
        source = frame.sources.get(mux)  # type: ignore[arg-type]
        if source is None:
            return True  # a mux value none of our signals is in
        problems = []
        for k, slot in enumerate(source.slots):
            raw = decoded.get(slot.signal)
            if raw is None:
                source.values[k], source.quality[k] = NAN, int(Quality.BAD_FRAME)
                problems.append(f"{slot.signal} missing")
                continue
            value, q = _physical(slot, float(raw))
            source.values[k], source.quality[k] = value, q
            if q != _GOOD:
                problems.append(f"{slot.signal} = {raw:g} outside the DBC range [{slot.minimum:g}, {slot.maximum:g}]")
        source.t_s = now_s
        source.problem = "; ".join(problems)
        return True

    def _bad(self, sources: Any, now_s: float, problem: str) -> None:
        self.bad_frames += 1
        for source in sources:
            source.t_s = now_s
            source.problem = problem
            for k in range(len(source.slots)):
                source.values[k] = NAN
                source.quality[k] = int(Quality.BAD_FRAME)

    def bus_silent(self, now_s: float) -> bool:
        last = self.last_frame_s if self.last_frame_s > -math.inf else self.started_s
        return now_s - last > self.silence_s

    def fill(self, values: list[float], quality: bytearray, now_s: float) -> list[str]:
        """Write one record at ``now_s``; returns the problems (one line per source), for the log."""
        mapping = self.mapping
        if self.bus_silent(now_s):
            lost = int(Quality.COMM_LOST)
            for i in range(len(values)):
                values[i] = NAN
                quality[i] = lost
            return []
        problems = []
        stale_code = int(Quality.STALE)
        timeout = int(Quality.TIMEOUT)
        for source in self.sources:
            if source.t_s == -math.inf:
                for slot in source.slots:
                    values[slot.slot] = NAN
                    quality[slot.slot] = timeout
                if now_s - self.started_s > source.cycle_s * self.stale_factor:
                    problems.append(f"{source.label}: never received")
                continue
            age = now_s - source.t_s
            stale = age > source.cycle_s * self.stale_factor
            for k, slot in enumerate(source.slots):
                values[slot.slot] = source.values[k]
                quality[slot.slot] = stale_code if stale else source.quality[k]
            if stale:
                problems.append(f"{source.label}: no frame for {age:.2f} s (cycle {source.cycle_s:g} s)")
            elif source.problem:
                problems.append(f"{source.label}: {source.problem}")
        for i in mapping.unmapped_slots:
            values[i] = NAN
            quality[i] = _GOOD
        level_slot = mapping.alarm_level_slot
        if mapping.alarm_slots:
            worst_q = max(quality[i] for i in mapping.alarm_slots)
            good_levels = [values[i] for i in mapping.alarm_slots if quality[i] == _GOOD]
            values[level_slot] = max(good_levels) if worst_q == _GOOD else NAN
            quality[level_slot] = worst_q
        else:
            values[level_slot] = NAN
            quality[level_slot] = _GOOD
        return problems


class CanFrameEncoder:
    """The simulator's side: record-ordered SI values -> the frame bytes of one source."""

    def __init__(self, mapping: CanMapping) -> None:
        self.mapping = mapping

    def encode(self, source: Source, values: Sequence[float], *, out_of_range: frozenset[str] = frozenset()) -> bytes:
        """``values`` in the order of ``mapping.channels``; signals in ``out_of_range`` are sent as
        their all-ones raw value (the usual "invalid" marker, outside the DBC range)."""
        frame = self.mapping.frames[source.frame_id]
        message = frame.message
        data: dict[str, float] = {}
        for sig in message.signals:
            if sig.multiplexer_ids and source.mux not in sig.multiplexer_ids:
                continue
            data[sig.name] = 0
        if frame.mux_signal is not None:
            data[frame.mux_signal] = source.mux  # type: ignore[assignment]
        for slot in source.slots:
            v = values[slot.slot]
            if slot.kind == "value":
                phys = (v - slot.offset) / slot.factor
            else:
                phys = 0.0 if math.isnan(v) else v
            data[slot.signal] = _clip(message.get_signal_by_name(slot.signal), phys)
        for name in out_of_range & data.keys():
            sig = message.get_signal_by_name(name)
            raw = (1 << (sig.length - 1)) - 1 if sig.is_signed else (1 << sig.length) - 1
            data[name] = sig.conversion.raw_to_scaled(raw)
        return message.encode(data, scaling=True, strict=False)


def _clip(sig: Any, phys: float) -> float:
    """NaN (no reading) -> the all-ones raw marker; otherwise within the DBC range."""
    if math.isnan(phys):
        raw = (1 << (sig.length - 1)) - 1 if sig.is_signed else (1 << sig.length) - 1
        return sig.conversion.raw_to_scaled(raw)
    if sig.minimum is not None:
        phys = max(sig.minimum, phys)
    if sig.maximum is not None:
        phys = min(sig.maximum, phys)
    if not sig.is_float and sig.scale == 1 and sig.offset == 0:
        return round(phys)
    return phys
