"""Behaviour of the simulated bidirectional cycler on a ``SimPack`` (pure logic: no protocol, no I/O).

The protocol endpoint (Modbus server) maps registers of ``configs/regmaps/sim_cycler.yaml`` to
``read(name)`` / ``write(name, value)``; names here are exactly the regmap's. Values are in
engineering units with current and power + = charge; the Modbus layer applies the regmap's
``sign: discharge_positive``.

Regulation is solved, not simulated: each control step (at most ``control_step_s``) the cycler
picks the current that meets its mode at the end of the step from the pack's terminal response
(``PackModel.terminal_response``). That is stable for any read interval, 1 ms or 60 s.

Modes (``CyclerMode``):
    REST  0 A.
    CC    current_setpoint_a; if the terminal voltage would pass voltage_setpoint_v in the
          direction of the current, regulate there instead (so CC never runs away). Without a
          voltage setpoint (0) charging stops at the rated voltage.
    CCCV  the same law: CC until voltage_setpoint_v, then CV with the current tapering (never
          reversing).
    CV    hold voltage_setpoint_v, |current| <= min(|current_setpoint_a|, rating), either sign.
    CP    power_setpoint_w (+ = charge), with the same voltage guard as CC.
Output off, an open contactor or a latched alarm => 0 A. ``mode`` reads REST then, else the
mode setpoint.

Counters: ``charge_ah`` and ``energy_wh`` are net, signed + = into the battery, since power-up;
``uptime_s`` is simulated seconds since power-up.

Protection: a communication watchdog (``watchdog_timeout_s`` > 0 and no write of
``watchdog_counter`` for that long while the output is on => output off, ``watchdog_tripped``)
and device-side limits (``limit_*``; 0 = not set; checked while the output is on). Both latch
``alarm`` and ``alarm_code`` until ``clear_alarm``; the output stays off until enabled again.
The watchdog timer restarts on every write of the counter or the timeout and when the output
is switched on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum

from daq.channels import CyclerMode
from daq.clock import Clock
from simulators.faults import Countdown
from simulators.models.pack import PackModel, SimPack


class CyclerAlarm(IntEnum):
    """Value of ``alarm_code``: the first cause of the latched alarm."""

    NONE = 0
    WATCHDOG = 1
    OVER_VOLTAGE = 2
    UNDER_VOLTAGE = 3
    OVER_CHARGE_CURRENT = 4
    OVER_DISCHARGE_CURRENT = 5
    OVER_TEMPERATURE = 6


STATE_BITS = {"output_on": 0, "alarm": 3, "watchdog_tripped": 4, "limit_tripped": 5}

_EPS_S = 1e-9


@dataclass(slots=True)
class CyclerSettings:
    """Holding registers the host writes and reads back; field names are register names."""

    mode_setpoint: int = int(CyclerMode.REST)
    current_setpoint_a: float = 0.0
    voltage_setpoint_v: float = 0.0
    power_setpoint_w: float = 0.0
    watchdog_timeout_s: float = 0.0
    watchdog_counter: int = 0
    limit_max_voltage_v: float = 0.0
    limit_min_voltage_v: float = 0.0
    limit_max_charge_current_a: float = 0.0
    limit_max_discharge_current_a: float = 0.0
    limit_max_temperature_c: float = 0.0


@dataclass(slots=True)
class CyclerReadings:
    """Measured values as of the last control step; frozen with the device."""

    voltage_v: float = 0.0
    current_a: float = 0.0
    power_w: float = 0.0
    charge_ah: float = 0.0
    energy_wh: float = 0.0
    temperature_c: float = 0.0
    uptime_s: float = 0.0


SETTING_NAMES = tuple(f.name for f in fields(CyclerSettings))
COIL_NAMES = ("output_enable", "clear_alarm", "contactor_closed")
WRITABLE_NAMES = frozenset(SETTING_NAMES + COIL_NAMES)


# Writes the cycler keeps a log of (``SimCycler.received``): what commands it, not the watchdog refresh.
SETPOINT_NAMES = ("mode_setpoint", "current_setpoint_a", "voltage_setpoint_v", "power_setpoint_w", "output_enable")
RECEIVED_MAX = 10_000  # most recent setpoint writes kept


@dataclass(frozen=True, slots=True)
class ReceivedWrite:
    """One setpoint write as it arrived (engineering units, + = charge), accepted or refused."""

    t_ns: int  # the bench clock's wall time when it arrived
    name: str
    value: float


class SimCycler:
    """A bidirectional source-sink with a communication watchdog and device-side limits.

    Attaches itself to ``pack`` as its load: whoever reads the pack (this cycler or a BMS)
    advances it under this cycler's regulation.
    """

    def __init__(
        self,
        pack: SimPack,
        clock: Clock,
        *,
        rated_voltage_v: float,
        rated_current_a: float,
        rated_power_w: float,
        model: str = "SIM-CYC-1",
        serial_number: str = "SIM00001",
        contactor_closed: bool = True,
        control_step_s: float = 1.0,
    ) -> None:
        for name, value in (
            ("rated_voltage_v", rated_voltage_v),
            ("rated_current_a", rated_current_a),
            ("rated_power_w", rated_power_w),
            ("control_step_s", control_step_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SimCycler: {name} must be a finite number > 0, got {value}")
        for name, text in (("model", model), ("serial_number", serial_number)):
            if len(text) > 16 or not text.isascii():
                raise ValueError(f"SimCycler: {name} must be ASCII of at most 16 characters, got {text!r}")
        self._pack = pack
        self._clock = clock
        self.rated_voltage_v = float(rated_voltage_v)
        self.rated_current_a = float(rated_current_a)
        self.rated_power_w = float(rated_power_w)
        self.model_name = model
        self.serial_number = serial_number
        self.control_step_s = float(control_step_s)
        self.settings = CyclerSettings()
        self.readings = CyclerReadings()
        self._output_on = False
        self._contactor_closed = contactor_closed
        self._alarm = CyclerAlarm.NONE
        self._watchdog_tripped = False
        self._limit_tripped = False
        self._ignore_output_off = Countdown()
        self._frozen = False
        pack.attach_load(self)
        self._watchdog_kick_s = pack.t_s
        self._measure(pack.model)
        self._readers = self._build_readers()
        self._writers = self._build_writers()
        # every setpoint write that reached the device, refused ones included: tests check what was sent
        self.received: deque[ReceivedWrite] = deque(maxlen=RECEIVED_MAX)

    # --- public API -------------------------------------------------------------------------

    @property
    def pack(self) -> SimPack:
        return self._pack

    @property
    def readable_names(self) -> tuple[str, ...]:
        return tuple(self._readers)

    @property
    def output_on(self) -> bool:
        return self._output_on

    @property
    def alarm_code(self) -> CyclerAlarm:
        return self._alarm

    @property
    def frozen(self) -> bool:
        return self._frozen

    def read(self, name: str) -> float | int | str:
        """One register by regmap name, as of now (advances the simulation)."""
        reader = self._readers.get(name)
        if reader is None:
            raise ValueError(f"SimCycler.read: unknown register {name!r} (see configs/regmaps/sim_cycler.yaml)")
        self._sync()
        return reader()

    def write(self, name: str, value: float) -> None:
        """Write one writable register by regmap name. Ignored while the device is frozen."""
        writer = self._writers.get(name)
        if writer is None:
            why = "is read-only" if name in self._readers else "is not a register of the cycler"
            raise ValueError(f"SimCycler.write: {name!r} {why}; writable: {', '.join(sorted(WRITABLE_NAMES))}")
        if name in SETPOINT_NAMES:
            self.received.append(ReceivedWrite(self._clock.wall_ns(), name, float(value)))
        if not math.isfinite(value):
            raise ValueError(f"SimCycler.write: {name} must be a finite number, got {value}")
        self._sync()
        if self._frozen:
            return
        writer(value)
        self._pack.reapply_load()

    # --- fault hooks ----------------------------------------------------------------------

    def ignore_output_off(self, count: int = 1) -> None:
        """The next ``count`` output-off commands (output_enable = 0) are acknowledged but ignored."""
        self._ignore_output_off.arm(count)

    def freeze(self) -> None:
        """The controller hangs: the current stays at its present value, readings stop updating,
        writes are ignored, no watchdog or limit acts. The endpoint may still answer (stale data)."""
        self._sync()
        self._frozen = True

    def unfreeze(self) -> None:
        self._sync()
        self._frozen = False
        self._watchdog_kick_s = self._pack.t_s  # the firmware restarts its timer
        self._measure(self._pack.model)

    # --- TerminalLoad (called by SimPack) -------------------------------------------------

    def max_step_s(self) -> float:
        return self.control_step_s if self._delivering and not self._frozen else math.inf

    def next_event_s(self) -> float:
        if self._watchdog_armed:
            return self._watchdog_kick_s + self.settings.watchdog_timeout_s
        return math.inf

    def choose_current(self, model: PackModel, dt_s: float) -> float:
        if self._frozen:
            return model.current_a
        if not self._delivering:
            return 0.0
        return self._regulate(model, dt_s)

    def on_stepped(self, model: PackModel, current_a: float, dt_s: float, t_s: float) -> None:
        if self._frozen:
            return
        self._measure(model)
        r = self.readings
        r.uptime_s += dt_s
        r.charge_ah += current_a * dt_s / 3600.0
        r.energy_wh += r.voltage_v * current_a * dt_s / 3600.0
        if self._watchdog_armed and t_s >= self._watchdog_kick_s + self.settings.watchdog_timeout_s - _EPS_S:
            self._watchdog_tripped = True
            self._trip(model, CyclerAlarm.WATCHDOG)
        elif self._output_on:
            cause = self._limit_crossed()
            if cause is not CyclerAlarm.NONE:
                self._limit_tripped = True
                self._trip(model, cause)

    # --- internals --------------------------------------------------------------------------

    @property
    def _delivering(self) -> bool:
        return self._output_on and self._contactor_closed and self._alarm is CyclerAlarm.NONE

    @property
    def _watchdog_armed(self) -> bool:
        return self.settings.watchdog_timeout_s > 0 and self._output_on and not self._frozen

    def _sync(self) -> None:
        self._pack.advance_to(self._clock.monotonic())

    def _measure(self, model: PackModel) -> None:
        r = self.readings
        r.voltage_v = model.pack_voltage_v
        r.current_a = model.current_a
        r.power_w = r.voltage_v * r.current_a
        r.temperature_c = float(model.temperatures_c.max())  # probe on the hottest cell

    def _trip(self, model: PackModel, cause: CyclerAlarm) -> None:
        self._output_on = False
        if self._alarm is CyclerAlarm.NONE:
            self._alarm = cause
        model.set_current(0.0)
        self._measure(model)

    def _limit_crossed(self) -> CyclerAlarm:
        s, r = self.settings, self.readings
        if s.limit_max_voltage_v > 0 and r.voltage_v > s.limit_max_voltage_v:
            return CyclerAlarm.OVER_VOLTAGE
        if s.limit_min_voltage_v > 0 and r.voltage_v < s.limit_min_voltage_v:
            return CyclerAlarm.UNDER_VOLTAGE
        if s.limit_max_charge_current_a > 0 and r.current_a > s.limit_max_charge_current_a:
            return CyclerAlarm.OVER_CHARGE_CURRENT
        if s.limit_max_discharge_current_a > 0 and -r.current_a > s.limit_max_discharge_current_a:
            return CyclerAlarm.OVER_DISCHARGE_CURRENT
        if s.limit_max_temperature_c != 0 and r.temperature_c > s.limit_max_temperature_c:
            return CyclerAlarm.OVER_TEMPERATURE
        return CyclerAlarm.NONE

    def _regulate(self, model: PackModel, dt_s: float) -> float:
        s = self.settings
        mode = s.mode_setpoint
        if mode == CyclerMode.REST:
            return 0.0
        v0, r = model.terminal_response(dt_s)
        # ratings: current, and power at the terminal voltage the current itself produces
        i_charge_max = min(self.rated_current_a, _current_for_power(self.rated_power_w, v0, r))
        i_discharge_max = min(self.rated_current_a, -_current_for_power(-self.rated_power_w, v0, r))
        if mode == CyclerMode.CV:
            i_limit = abs(s.current_setpoint_a)
            wanted = _clamp((s.voltage_setpoint_v - v0) / r, -i_limit, i_limit)
            return _clamp(wanted, -i_discharge_max, i_charge_max)
        if mode == CyclerMode.CP:
            wanted = _current_for_power(s.power_setpoint_w, v0, r)
        else:  # CC, CCCV
            wanted = s.current_setpoint_a
        return self._voltage_guard(_clamp(wanted, -i_discharge_max, i_charge_max), v0, r)

    def _voltage_guard(self, current: float, v0: float, r: float) -> float:
        """Keep a charge from pushing the terminal above, a discharge from pulling it below,
        the voltage setpoint (charging without one stops at the rated voltage)."""
        v_set = self.settings.voltage_setpoint_v
        if current > 0:
            ceiling = v_set if v_set > 0 else self.rated_voltage_v
            return max(0.0, min(current, (ceiling - v0) / r))
        if current < 0 and v_set > 0:
            return min(0.0, max(current, (v_set - v0) / r))
        return current

    # --- register tables ------------------------------------------------------------------

    def _state_word(self) -> int:
        flags = {
            "output_on": self._output_on,
            "alarm": self._alarm is not CyclerAlarm.NONE,
            "watchdog_tripped": self._watchdog_tripped,
            "limit_tripped": self._limit_tripped,
        }
        return sum(1 << bit for name, bit in STATE_BITS.items() if flags[name])

    def _build_readers(self) -> dict[str, Callable[[], float | int | str]]:
        r = self.readings
        readers: dict[str, Callable[[], float | int | str]] = {
            "voltage_v": lambda: r.voltage_v,
            "current_a": lambda: r.current_a,
            "power_w": lambda: r.power_w,
            "charge_ah": lambda: r.charge_ah,
            "energy_wh": lambda: r.energy_wh,
            "temperature_c": lambda: r.temperature_c,
            "mode": lambda: self.settings.mode_setpoint if self._delivering else int(CyclerMode.REST),
            "state": self._state_word,
            "output_on": lambda: int(self._output_on),
            "alarm": lambda: int(self._alarm is not CyclerAlarm.NONE),
            "watchdog_tripped": lambda: int(self._watchdog_tripped),
            "limit_tripped": lambda: int(self._limit_tripped),
            "alarm_code": lambda: int(self._alarm),
            "uptime_s": lambda: int(r.uptime_s),
            "output_enable": lambda: int(self._output_on),
            "clear_alarm": lambda: 0,
            "contactor_closed": lambda: int(self._contactor_closed),
            "model": lambda: self.model_name,
            "serial_number": lambda: self.serial_number,
            "rated_voltage_v": lambda: self.rated_voltage_v,
            "rated_current_a": lambda: self.rated_current_a,
            "rated_power_w": lambda: self.rated_power_w,
        }
        for name in SETTING_NAMES:
            readers[name] = lambda name=name: getattr(self.settings, name)
        return readers

    def _build_writers(self) -> dict[str, Callable[[float], None]]:
        writers: dict[str, Callable[[float], None]] = {
            "mode_setpoint": self._write_mode,
            "current_setpoint_a": self._ranged("current_setpoint_a", -self.rated_current_a, self.rated_current_a),
            "voltage_setpoint_v": self._ranged("voltage_setpoint_v", 0.0, self.rated_voltage_v),
            "power_setpoint_w": self._ranged("power_setpoint_w", -self.rated_power_w, self.rated_power_w),
            "watchdog_timeout_s": self._write_watchdog_timeout,
            "watchdog_counter": self._write_watchdog_counter,
            "limit_max_voltage_v": self._ranged("limit_max_voltage_v", 0.0, math.inf),
            "limit_min_voltage_v": self._ranged("limit_min_voltage_v", 0.0, math.inf),
            "limit_max_charge_current_a": self._ranged("limit_max_charge_current_a", 0.0, math.inf),
            "limit_max_discharge_current_a": self._ranged("limit_max_discharge_current_a", 0.0, math.inf),
            "limit_max_temperature_c": self._ranged("limit_max_temperature_c", -273.15, math.inf),
            "output_enable": self._write_output_enable,
            "clear_alarm": self._write_clear_alarm,
            "contactor_closed": self._write_contactor,
        }
        return writers

    def _ranged(self, name: str, lo: float, hi: float) -> Callable[[float], None]:
        def write(value: float) -> None:
            if not lo <= value <= hi:
                raise ValueError(f"SimCycler.write: {name} = {value} outside {lo:g}..{hi:g} (device rating)")
            setattr(self.settings, name, float(value))

        return write

    def _write_mode(self, value: float) -> None:
        if value != int(value) or int(value) not in CyclerMode._value2member_map_:
            modes = ", ".join(f"{m.value} {m.name}" for m in CyclerMode)
            raise ValueError(f"SimCycler.write: mode_setpoint = {value} is not a mode ({modes})")
        self.settings.mode_setpoint = int(value)

    def _write_watchdog_timeout(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"SimCycler.write: watchdog_timeout_s = {value} must be >= 0 (0 = off)")
        self.settings.watchdog_timeout_s = float(value)
        self._watchdog_kick_s = self._pack.t_s

    def _write_watchdog_counter(self, value: float) -> None:
        if value != int(value) or not 0 <= value <= 0xFFFF:
            raise ValueError(f"SimCycler.write: watchdog_counter = {value} must be an integer 0..65535")
        self.settings.watchdog_counter = int(value)
        self._watchdog_kick_s = self._pack.t_s

    def _write_output_enable(self, value: float) -> None:
        if value:
            if self._alarm is CyclerAlarm.NONE and not self._output_on:
                self._output_on = True
                self._watchdog_kick_s = self._pack.t_s
        elif not self._ignore_output_off.take():
            self._output_on = False

    def _write_clear_alarm(self, value: float) -> None:
        if value:
            self._alarm = CyclerAlarm.NONE
            self._watchdog_tripped = False
            self._limit_tripped = False

    def _write_contactor(self, value: float) -> None:
        self._contactor_closed = bool(value)


def _clamp(value: float, lo: float, hi: float) -> float:
    return lo if value < lo else hi if value > hi else value


def _current_for_power(power_w: float, v0: float, r: float) -> float:
    """Current I with (v0 + r*I) * I = power_w; beyond the pack's maximum discharge power,
    the current at that maximum (I = -v0 / 2r)."""
    disc = v0 * v0 + 4.0 * r * power_w
    if disc < 0:
        return -v0 / (2.0 * r)
    return 2.0 * power_w / (v0 + math.sqrt(disc))  # stable form of the quadratic root
