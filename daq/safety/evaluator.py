"""The live safety evaluator: fed every record as soon as it is polled, returns alarm events.

Plain Python on the hot path. The first record of a schema builds a plan (channel indices and
the checks each channel feeds); later records of that schema only walk the plan.

Semantics (see ``limits`` for which channel feeds which limit):
- Time is the records' ``t_ns``, never the wall clock, so debounce works at any time scale.
- Only GOOD, finite values are judged. A value of another quality neither starts nor ends a
  condition: the last good sample stands until a new good one arrives.
- A warning is raised once its condition has held for ``persistence_s`` and cleared when the
  value comes back past the hysteresis band.
- A trip latches: the evaluator stays ``tripped`` until ``acknowledge``. If the condition still
  holds after the acknowledgement, the next sample trips again.
- An open or out-of-range temperature sensor (NaN, or quality OUT_OF_RANGE) is a fault of its
  own (trip by default) and its reading is never compared with a min limit, so it cannot pass
  for "cool".
- Lost communication: a device whose last good record (voltage, current and cell voltages all
  GOOD) is older than its ``data_age_max_s``; checked on each of its records and by
  ``check_stale`` for devices that went silent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from daq.channels import ALARM_LEVEL, CELL_VOLTAGE_RE, CURRENT, TEMPERATURE, TEMPERATURE_RE, VOLTAGE
from daq.records import DeviceSchema, Quality, Record
from daq.safety.events import (
    CLEARED,
    RAISED,
    TRIP,
    TRIPPED,
    WARNING,
    AlarmEvent,
    EventKind,
    Excursion,
    Level,
)
from daq.safety.limits import LIMIT_UNITS, LimitSet, ThresholdLimit, UpperLimit

NS = 1_000_000_000
NS_PER_HOUR = 3600 * NS
INF = math.inf
NAN = math.nan
_GOOD = int(Quality.GOOD)
_STALE = int(Quality.STALE)
_OUT_OF_RANGE = int(Quality.OUT_OF_RANGE)

# How a check words its messages.
_PLAIN, _AGE, _SENSOR, _MISMATCH = range(4)

AlarmKey = tuple[str, str, str]  # (limit, device, channel)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _secs(ns: int) -> str:
    return f"{ns / NS:.3f}".rstrip("0").rstrip(".")


class _Alarms:
    """Alarm state shared by every check: this call's events, active warnings, latched trips."""

    __slots__ = ("latched", "on_excursion", "out", "warnings")

    def __init__(self, on_excursion: Callable[[Excursion], None] | None) -> None:
        self.out: list[AlarmEvent] = []
        self.warnings: dict[AlarmKey, AlarmEvent] = {}
        self.latched: dict[AlarmKey, tuple[_Check, AlarmEvent]] = {}
        self.on_excursion = on_excursion


class _Check:
    """One limit on one (device, channel): thresholds plus the debounce and latch state.

    Values are compared in "sign space" (x = sign * value) so max and min limits share code.
    """

    __slots__ = (
        "channel",
        "device",
        "gen",
        "hysteresis",
        "key",
        "latched",
        "limit",
        "note",
        "persist_ns",
        "s_trip",
        "s_warn",
        "sign",
        "style",
        "t_active",
        "t_peak",
        "t_since",
        "t_thr",
        "unit",
        "w_active",
        "w_peak",
        "w_since",
        "w_thr",
    )

    def __init__(self, limit: str, device: str, channel: str, *, style: int, note: str) -> None:
        self.limit = limit
        self.device = device
        self.channel = channel
        self.key: AlarmKey = (limit, device, channel)
        self.unit = LIMIT_UNITS.get(limit, "")
        self.style = style
        self.note = note
        self.sign = 1.0
        self.s_warn = INF
        self.s_trip = INF
        self.hysteresis = 0.0
        self.persist_ns = 0
        self.gen = 0
        self.w_since = -1
        self.w_active = False
        self.w_peak = -INF
        self.w_thr = INF
        self.t_since = -1
        self.t_active = False
        self.t_peak = -INF
        self.t_thr = INF
        self.latched = False

    def configure(self, limit: ThresholdLimit, gen: int) -> None:
        self.sign = 1.0 if limit.upper else -1.0
        self.s_warn = INF if limit.warn is None else self.sign * limit.warn
        self.s_trip = INF if limit.trip is None else self.sign * limit.trip
        self.hysteresis = limit.hysteresis
        self.persist_ns = round(limit.persistence_s * NS)
        self.gen = gen

    def update(self, alarms: _Alarms, t: int, value: float, offset: float = 0.0) -> None:
        """Judge one good sample. ``offset`` widens both thresholds (max limits only)."""
        x = value * self.sign
        thr = self.s_warn + offset
        if x >= thr:
            if self.w_since < 0:
                self.w_since, self.w_peak, self.w_thr = t, x, thr
            elif x > self.w_peak:
                self.w_peak = x
            if not self.w_active and t - self.w_since >= self.persist_ns:
                self.w_active = True
                self._emit(alarms, t, RAISED, WARNING, value, thr, t - self.w_since)
        elif self.w_active:
            if x < thr - self.hysteresis:
                self._clear(alarms, t, value, thr)
        elif self.w_since >= 0:
            self.w_since = -1

        thr = self.s_trip + offset
        if x >= thr:
            if self.t_since < 0:
                self.t_since, self.t_peak, self.t_thr = t, x, thr
            elif x > self.t_peak:
                self.t_peak = x
            if not self.t_active and t - self.t_since >= self.persist_ns:
                self.t_active = True
            if self.t_active and not self.latched:
                self._trip(alarms, t, value, thr)
        elif self.t_since >= 0:
            if self.t_active:
                self._excursion(alarms, TRIP, self.t_since, t, self.t_peak, self.t_thr, ended=True)
            self.t_since, self.t_active = -1, False

    def retire(self, alarms: _Alarms, t: int) -> None:
        """The limit no longer applies (step change): clear its warning, close its excursions."""
        if self.w_active:
            self._clear(alarms, t, NAN, self.w_thr)
        if self.t_active:
            self._excursion(alarms, TRIP, self.t_since, t, self.t_peak, self.t_thr, ended=True)
        self.w_since = self.t_since = -1
        self.w_active = self.t_active = False

    def close_open(self, alarms: _Alarms, t: int) -> None:
        if self.w_active:
            self._excursion(alarms, WARNING, self.w_since, t, self.w_peak, self.w_thr, ended=False)
        if self.t_active:
            self._excursion(alarms, TRIP, self.t_since, t, self.t_peak, self.t_thr, ended=False)

    # --- events ----------------------------------------------------------------------------

    def _trip(self, alarms: _Alarms, t: int, value: float, thr: float) -> None:
        self.latched = True
        event = self._emit(alarms, t, TRIPPED, TRIP, value, thr, t - self.t_since)
        alarms.latched[self.key] = (self, event)

    def _clear(self, alarms: _Alarms, t: int, value: float, thr: float) -> None:
        self._excursion(alarms, WARNING, self.w_since, t, self.w_peak, self.w_thr, ended=True)
        self._emit(alarms, t, CLEARED, WARNING, value, thr, 0)
        self.w_since, self.w_active = -1, False

    def _emit(
        self, alarms: _Alarms, t: int, kind: EventKind, level: Level, value: float, thr: float, held_ns: int
    ) -> AlarmEvent:
        threshold = thr * self.sign
        if self.style == _SENSOR:
            value = threshold = NAN
        event = AlarmEvent(
            t_ns=t,
            kind=kind,
            limit=self.limit,
            level=level,
            device=self.device,
            channel=self.channel,
            value=value,
            threshold=threshold,
            message=self._message(kind, level, value, threshold, held_ns),
        )
        alarms.out.append(event)
        if kind == RAISED:
            alarms.warnings[self.key] = event
        elif kind == CLEARED:
            alarms.warnings.pop(self.key, None)
        return event

    def _excursion(
        self, alarms: _Alarms, level: Level, start: int, end: int, peak: float, thr: float, *, ended: bool
    ) -> None:
        if alarms.on_excursion is None:
            return
        sensor = self.style == _SENSOR
        alarms.on_excursion(
            Excursion(
                limit=self.limit,
                level=level,
                device=self.device,
                channel=self.channel,
                start_ns=start,
                end_ns=end,
                peak=NAN if sensor else peak * self.sign,
                threshold=NAN if sensor else thr * self.sign,
                unit=self.unit,
                ended=ended,
            )
        )

    def _message(self, kind: str, level: str, value: float, thr: float, held_ns: int) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if kind == CLEARED:
            if self.style == _AGE:
                return f"{self.device}: good data again, warning cleared"
            if self.style == _SENSOR:
                return f"{self.channel} on {self.device}: temperature sensor reading again, warning cleared"
            if math.isnan(value):
                return f"{self.limit} warning on {self.device} {self.channel} cleared: limit no longer applies"
            side = "below" if self.sign > 0 else "above"
            return f"{self.channel} {_fmt(value)}{unit} back {side} warning {_fmt(thr)}{unit} on {self.device}"
        held = _secs(held_ns)
        if self.style == _AGE:
            return f"{self.device}: no good data for {_fmt(value)} s ({level} at {_fmt(thr)} s)"
        if self.style == _SENSOR:
            return f"{self.channel} on {self.device}: temperature sensor open or out of range for {held} s"
        if self.style == _MISMATCH:
            return (
                f"current_a of {self.note} and {self.device} differ by {_fmt(value)} A"
                f" ({level} at {_fmt(thr)} A) for {held} s"
            )
        if value == thr:
            side = "at"
        else:
            side = "above" if self.sign > 0 else "below"
        return f"{self.channel} {_fmt(value)}{unit} {side} {level} {_fmt(thr)}{unit} for {held} s on {self.device}"


class _Rate:
    """dT/dt of one temperature channel: difference over the shortest span >= window."""

    __slots__ = ("samples", "window_ns")

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.samples: deque[tuple[int, float]] = deque()

    def push(self, t: int, value: float) -> float:
        samples = self.samples
        if samples and t <= samples[-1][0]:
            return NAN
        samples.append((t, value))
        window = self.window_ns
        while len(samples) > 1 and t - samples[1][0] >= window:
            samples.popleft()
        t0, v0 = samples[0]
        if t - t0 < window:
            return NAN
        return (value - v0) * NS / (t - t0)


class _Counters:
    """Ah, Wh and elapsed time since the step and the test started (inside a test only)."""

    __slots__ = (
        "i_a",
        "i_t",
        "p_t",
        "p_w",
        "run_id",
        "step_ah",
        "step_ah_check",
        "step_key",
        "step_s_check",
        "step_start",
        "step_wh",
        "step_wh_check",
        "test_ah",
        "test_ah_check",
        "test_s_check",
        "test_start",
        "test_wh",
        "test_wh_check",
    )

    def __init__(self) -> None:
        self.run_id = ""
        self.step_key: tuple[int, int] | None = None
        self.test_start = self.step_start = 0
        self.test_ah = self.step_ah = self.test_wh = self.step_wh = 0.0
        self.i_t = self.p_t = -1
        self.i_a = self.p_w = 0.0
        self.step_ah_check = self.test_ah_check = self.step_wh_check = None
        self.test_wh_check = self.step_s_check = self.test_s_check = None

    def update(self, alarms: _Alarms, record: Record, t: int, volts: float, amps: float) -> None:
        run = record.run_id
        if not run:
            self.run_id = ""
            return
        if run != self.run_id:
            self.run_id, self.test_start, self.step_key = run, t, None
            self.test_ah = self.test_wh = 0.0
            self.i_t = self.p_t = -1
        key = (record.cycle, record.step)
        new_step = key != self.step_key
        if new_step:
            self.step_key, self.step_start = key, t
            self.step_ah = self.step_wh = 0.0
        if amps == amps:
            if 0 <= self.i_t < t:  # trapezoid; the gap before a step's first sample goes to the test
                ah = (abs(amps) + abs(self.i_a)) * (t - self.i_t) / (2 * NS_PER_HOUR)
                self.test_ah += ah
                if not new_step:
                    self.step_ah += ah
            self.i_t, self.i_a = t, amps
            if volts == volts:
                power = abs(volts * amps)
                if 0 <= self.p_t < t:
                    wh = (power + self.p_w) * (t - self.p_t) / (2 * NS_PER_HOUR)
                    self.test_wh += wh
                    if not new_step:
                        self.step_wh += wh
                self.p_t, self.p_w = t, power
        for check, value in (
            (self.step_ah_check, self.step_ah),
            (self.test_ah_check, self.test_ah),
            (self.step_wh_check, self.step_wh),
            (self.test_wh_check, self.test_wh),
            (self.step_s_check, (t - self.step_start) / NS),
            (self.test_s_check, (t - self.test_start) / NS),
        ):
            if check is not None:
                check.update(alarms, t, value)


class _Device:
    __slots__ = ("age_check", "age_t", "counters", "cur_a", "cur_t", "first_t", "kind", "last_good_t", "name", "pairs")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.first_t = -1
        self.last_good_t = -1
        self.age_t = -1
        self.age_check: _Check | None = None
        self.cur_t = -1
        self.cur_a = NAN
        self.pairs: list[tuple[_Device, _Device, _Check]] = []  # (cycler, bms, check)
        self.counters: _Counters | None = None


class _Plan:
    """Per-schema evaluation plan: which indices feed which checks."""

    __slots__ = (
        "alarm",
        "cells",
        "charge",
        "current_idx",
        "device",
        "discharge",
        "key_idx",
        "schema",
        "spread",
        "temps",
        "voltage",
        "voltage_idx",
    )

    def __init__(self, schema: DeviceSchema, device: _Device) -> None:
        self.schema = schema
        self.device = device
        self.key_idx: tuple[int, ...] = ()
        self.cells: tuple[tuple[int, tuple[_Check, ...]], ...] = ()
        self.spread: _Check | None = None
        self.voltage_idx = -1
        self.voltage: tuple[_Check, ...] = ()
        self.current_idx = -1
        self.charge: _Check | None = None
        self.discharge: _Check | None = None
        self.temps: tuple[tuple[int, tuple[_Check, ...], _Rate | None, _Check | None, _Check | None], ...] = ()
        self.alarm: tuple[int, _Check] | None = None


class Evaluator:
    """Stateful limit evaluation for one bench.

    ``clock_ns`` (e.g. ``clock.wall_ns``) supplies "now" when ``check_stale``, ``acknowledge`` or
    ``set_step_limits`` are called without a time. ``on_excursion`` receives every interval
    beyond a threshold once it ends (the compliance check uses it).
    """

    def __init__(
        self,
        limits: LimitSet,
        *,
        clock_ns: Callable[[], int] | None = None,
        on_excursion: Callable[[Excursion], None] | None = None,
    ) -> None:
        if not isinstance(limits, LimitSet):
            raise TypeError("limits must be a LimitSet (see daq.safety.load_limits)")
        self._limits = limits
        self._clock_ns = clock_ns
        self._alarms = _Alarms(on_excursion)
        self._checks: dict[AlarmKey, _Check] = {}
        self._plans: dict[int, _Plan] = {}
        self._devices: dict[str, _Device] = {}
        self._rates: dict[tuple[str, str], _Rate] = {}
        self._gen = 0
        self._t0 = -1  # first time seen: age reference for expected devices never heard from
        self._last_t = -1
        self._mismatch_tol = 0.0
        self._mismatch_window_ns = 0
        self._sensor_limit: UpperLimit | None = None
        self._apply_limits(0)

    # --- public API ------------------------------------------------------------------------

    @property
    def limits(self) -> LimitSet:
        return self._limits

    @property
    def tripped(self) -> bool:
        """True from the first trip until ``acknowledge``."""
        return bool(self._alarms.latched)

    def trip_reasons(self) -> list[AlarmEvent]:
        """The latched trip events, oldest first."""
        return [event for _, event in self._alarms.latched.values()]

    def active_alarms(self) -> list[AlarmEvent]:
        """Raised warnings and latched trips, oldest first (e.g. for a retained MQTT topic)."""
        events = list(self._alarms.warnings.values()) + self.trip_reasons()
        events.sort(key=lambda e: e.t_ns)
        return events

    def evaluate(self, record: Record) -> list[AlarmEvent]:
        """Judge one record; returns the events it caused (usually none)."""
        schema = record.schema
        plan = self._plans.get(id(schema))
        if plan is None or plan.schema is not schema:
            plan = self._new_schema(schema)
        alarms = self._alarms
        out: list[AlarmEvent] = []
        alarms.out = out
        t = record.t_ns
        if self._t0 < 0:
            self._t0 = t
        if t > self._last_t:
            self._last_t = t
        values = record.values
        quality = record.quality
        device = plan.device
        if device.first_t < 0:
            device.first_t = t

        if plan.cells:
            hi, lo, n = -INF, INF, 0
            for i, checks in plan.cells:
                v = values[i]
                if quality[i] or v != v:
                    continue
                for check in checks:
                    check.update(alarms, t, v)
                n += 1
                if v > hi:
                    hi = v
                if v < lo:
                    lo = v
            if plan.spread is not None and n > 1:
                plan.spread.update(alarms, t, hi - lo)

        volts = NAN
        i = plan.voltage_idx
        if i >= 0 and not quality[i] and values[i] == values[i]:
            volts = values[i]
            for check in plan.voltage:
                check.update(alarms, t, volts)

        amps = NAN
        i = plan.current_idx
        if i >= 0 and not quality[i] and values[i] == values[i]:
            amps = values[i]
            if plan.charge is not None:
                plan.charge.update(alarms, t, amps if amps > 0.0 else 0.0)
            if plan.discharge is not None:
                plan.discharge.update(alarms, t, -amps if amps < 0.0 else 0.0)
            device.cur_t, device.cur_a = t, amps

        for i, checks, rate, rate_check, fault in plan.temps:
            q = quality[i]
            v = values[i]
            if q == _OUT_OF_RANGE or (v != v and (q == _GOOD or q == _STALE)):
                if fault is not None:
                    fault.update(alarms, t, 1.0)
                continue
            if q:
                continue
            if fault is not None:
                fault.update(alarms, t, 0.0)
            for check in checks:
                check.update(alarms, t, v)
            if rate is not None and rate_check is not None:
                r = rate.push(t, v)
                if r == r:
                    rate_check.update(alarms, t, r)

        if plan.alarm is not None:
            i, check = plan.alarm
            if not quality[i] and values[i] == values[i]:
                check.update(alarms, t, values[i])

        for i in plan.key_idx:
            if quality[i] or values[i] != values[i]:
                break
        else:
            device.last_good_t = t
        if device.age_check is not None:
            self._update_age(device, t)

        if device.counters is not None:
            device.counters.update(alarms, record, t, volts, amps)

        if amps == amps and device.pairs:
            window, tol = self._mismatch_window_ns, self._mismatch_tol
            for cycler, bms, check in device.pairs:
                if cycler.cur_t >= 0 and bms.cur_t >= 0 and abs(cycler.cur_t - bms.cur_t) <= window:
                    check.update(alarms, t, abs(cycler.cur_a - bms.cur_a), tol * abs(cycler.cur_a))
        return out

    def check_stale(self, now_ns: int | None = None) -> list[AlarmEvent]:
        """Lost-communication check for every device at ``now_ns`` (default: the clock)."""
        now = self._now(now_ns, need_clock=True)
        alarms = self._alarms
        out: list[AlarmEvent] = []
        alarms.out = out
        if self._t0 < 0:
            self._t0 = now
        for device in self._devices.values():
            if device.age_check is not None:
                self._update_age(device, now)
        return out

    def acknowledge(self, who: str, t_ns: int | None = None) -> list[AlarmEvent]:
        """Release every latched trip; one "acknowledged" event per trip. ``who`` is required."""
        if not who:
            raise ValueError("acknowledge needs the name of who acknowledges")
        t = self._now(t_ns, need_clock=False)
        out: list[AlarmEvent] = []
        for check, trip in self._alarms.latched.values():
            check.latched = False
            out.append(trip.acknowledged_by(who, t))
        self._alarms.latched.clear()
        return out

    def set_step_limits(self, limits: LimitSet, t_ns: int | None = None) -> list[AlarmEvent]:
        """Switch to another limit set (e.g. ``global.for_step(name)``) keeping all state.

        Warnings of limits that no longer exist are cleared (returned events); latched trips
        stay latched.
        """
        if not isinstance(limits, LimitSet):
            raise TypeError("limits must be a LimitSet")
        self._limits = limits
        return self._apply_limits(self._now(t_ns, need_clock=False))

    def close_excursions(self, t_ns: int) -> None:
        """End of recorded data: report excursions still open at ``t_ns`` (``ended=False``)."""
        for check in self._checks.values():
            check.close_open(self._alarms, t_ns)

    # --- internals -------------------------------------------------------------------------

    def _now(self, t_ns: int | None, *, need_clock: bool) -> int:
        if t_ns is not None:
            return t_ns
        if self._clock_ns is not None:
            return self._clock_ns()
        if not need_clock and self._last_t >= 0:
            return self._last_t
        raise ValueError("no time given: pass t_ns/now_ns or create the Evaluator with clock_ns")

    def _update_age(self, device: _Device, now: int) -> None:
        if now < device.age_t:  # a record stamped at poll start may arrive after a later check
            now = device.age_t
        device.age_t = now
        ref = device.last_good_t
        if ref < 0:
            ref = device.first_t if device.first_t >= 0 else self._t0
        if ref >= 0 and device.age_check is not None:
            device.age_check.update(self._alarms, now, (now - ref) / NS)

    def _apply_limits(self, t: int) -> list[AlarmEvent]:
        limits = self._limits
        alarms = self._alarms
        out: list[AlarmEvent] = []
        alarms.out = out
        self._gen += 1
        policy = limits.temperature_sensor_fault
        if policy.level == "off":
            self._sensor_limit = None
        elif policy.level == "trip":
            self._sensor_limit = UpperLimit(trip=1.0, persistence_s=policy.persistence_s)
        else:
            self._sensor_limit = UpperLimit(warn=1.0, persistence_s=policy.persistence_s)
        mismatch = limits.current_mismatch_a
        self._mismatch_tol = mismatch.tolerance_pct / 100.0 if mismatch else 0.0
        self._mismatch_window_ns = round(mismatch.window_s * NS) if mismatch else 0
        for name in limits.data_age_max_s_per_device:
            self._devices.setdefault(name, _Device(name, ""))
        for device in self._devices.values():
            self._configure_device(device)
        for key, plan in list(self._plans.items()):
            self._plans[key] = self._build_plan(plan.schema)
        self._rebuild_pairs()
        for key, check in list(self._checks.items()):
            if check.gen != self._gen:
                check.retire(alarms, t)
                del self._checks[key]
        return out

    def _check(
        self, limit_name: str, device: str, channel: str, limit: ThresholdLimit, *, style: int = _PLAIN, note: str = ""
    ) -> _Check:
        key = (limit_name, device, channel)
        check = self._checks.get(key)
        if check is None:
            latched = self._alarms.latched.get(key)
            check = latched[0] if latched else _Check(limit_name, device, channel, style=style, note=note)
            self._checks[key] = check
        check.configure(limit, self._gen)
        return check

    def _maybe(self, limit_name: str, device: str, channel: str) -> _Check | None:
        limit = getattr(self._limits, limit_name)
        return None if limit is None else self._check(limit_name, device, channel, limit)

    def _configure_device(self, device: _Device) -> None:
        limits = self._limits
        age = limits.data_age_limit(device.name)
        device.age_check = (
            None if age is None else self._check("data_age_max_s", device.name, "data_age_s", age, style=_AGE)
        )
        if device.kind != limits.counters_device_kind:
            device.counters = None
            return
        counters = device.counters or _Counters()
        name = device.name
        counters.step_ah_check = self._maybe("step_capacity_max_ah", name, "step_ah")
        counters.test_ah_check = self._maybe("test_capacity_max_ah", name, "test_ah")
        counters.step_wh_check = self._maybe("step_energy_max_wh", name, "step_wh")
        counters.test_wh_check = self._maybe("test_energy_max_wh", name, "test_wh")
        counters.step_s_check = self._maybe("step_duration_max_s", name, "step_s")
        counters.test_s_check = self._maybe("test_duration_max_s", name, "test_s")
        device.counters = counters

    def _new_schema(self, schema: DeviceSchema) -> _Plan:
        device = self._devices.get(schema.device)
        is_new = device is None or device.kind != schema.kind
        if device is None:
            device = self._devices[schema.device] = _Device(schema.device, schema.kind)
        device.kind = schema.kind
        if is_new:
            self._configure_device(device)
        plan = self._plans[id(schema)] = self._build_plan(schema)
        if is_new:
            self._rebuild_pairs()
        return plan

    def _build_plan(self, schema: DeviceSchema) -> _Plan:
        device = self._devices[schema.device]
        name = schema.device
        plan = _Plan(schema, device)
        limits = self._limits
        cells: list[tuple[int, tuple[_Check, ...]]] = []
        temps = []
        key_idx: list[int] = []
        for channel, i in schema.index.items():
            if CELL_VOLTAGE_RE.match(channel):
                checks = (
                    self._maybe("cell_voltage_max_v", name, channel),
                    self._maybe("cell_voltage_min_v", name, channel),
                )
                cells.append((i, tuple(c for c in checks if c is not None)))
                key_idx.append(i)
            elif channel == VOLTAGE:
                plan.voltage_idx = i
                checks = (
                    self._maybe("pack_voltage_max_v", name, channel),
                    self._maybe("pack_voltage_min_v", name, channel),
                )
                plan.voltage = tuple(c for c in checks if c is not None)
                key_idx.append(i)
            elif channel == CURRENT:
                plan.current_idx = i
                plan.charge = self._maybe("charge_current_max_a", name, channel)
                plan.discharge = self._maybe("discharge_current_max_a", name, channel)
                key_idx.append(i)
            elif TEMPERATURE_RE.match(channel):
                prefix = "pack" if channel == TEMPERATURE else "cell"
                checks = (
                    self._maybe(f"{prefix}_temperature_max_c", name, channel),
                    self._maybe(f"{prefix}_temperature_min_c", name, channel),
                )
                rate_limit = limits.temperature_rise_max_c_per_s
                rate = rate_check = None
                if rate_limit is not None:
                    window_ns = round(rate_limit.window_s * NS)
                    rate = self._rates.setdefault((name, channel), _Rate(window_ns))
                    rate.window_ns = window_ns
                    rate_check = self._check("temperature_rise_max_c_per_s", name, channel, rate_limit)
                fault = None
                if self._sensor_limit is not None:
                    fault = self._check("temperature_sensor_fault", name, channel, self._sensor_limit, style=_SENSOR)
                temps.append((i, tuple(c for c in checks if c is not None), rate, rate_check, fault))
            elif channel == ALARM_LEVEL:
                check = self._maybe("bms_alarm_level", name, channel)
                plan.alarm = None if check is None else (i, check)
        plan.cells = tuple(cells)
        plan.temps = tuple(temps)
        if len(cells) > 1:
            plan.spread = self._maybe("cell_voltage_spread_max_v", name, "cell_spread_v")
        plan.key_idx = tuple(key_idx) if key_idx else tuple(range(len(schema.channels)))
        return plan

    def _rebuild_pairs(self) -> None:
        devices = self._devices
        for device in devices.values():
            device.pairs = []
        mismatch = self._limits.current_mismatch_a
        if mismatch is None:
            return
        if mismatch.pairs:
            pairs = [(devices[c], devices[b]) for b, c in mismatch.pairs.items() if b in devices and c in devices]
        else:
            cyclers = [d for d in devices.values() if d.kind == "cycler"]
            if len(cyclers) != 1:
                return  # ambiguous: name the pairs in the limit set
            pairs = [(cyclers[0], d) for d in devices.values() if d.kind == "bms"]
        for cycler, bms in pairs:
            check = self._check("current_mismatch_a", bms.name, CURRENT, mismatch, style=_MISMATCH, note=cycler.name)
            check.note = cycler.name
            entry = (cycler, bms, check)
            cycler.pairs.append(entry)
            bms.pairs.append(entry)
