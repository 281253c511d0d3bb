"""Safety limit sets: the file format, its validation and per-step tightening.

A limit set is global for the bench; named per-step overrides (``steps:``) may only tighten it.
Every limit has a ``warn`` and/or a ``trip`` threshold in the unit its name ends with,
``persistence_s`` (the condition must hold that long, measured on record timestamps) and
``hysteresis`` (how far back inside the warning threshold a value must come to clear it).

Comparisons are inclusive: a max limit is reached at ``value >= threshold``, a min limit at
``value <= threshold``. A warning clears at ``value < warn - hysteresis`` (max) or
``value > warn + hysteresis`` (min). Trips latch until acknowledged (see ``evaluator``).

Which channels each limit watches:
    cell_voltage_*_v           cell{n}_v of any device
    pack_voltage_*_v           voltage_v of any device (cycler and BMS)
    charge/discharge_current   current_a of any device, as a magnitude (+ = charge)
    cell_temperature_*_c       temp{n}_c (BMS thermistors)
    pack_temperature_*_c       temperature_c (e.g. the cycler's auxiliary probe on the pack)
    temperature_rise           every temperature channel, degC/s over at least ``window_s``
    cell_voltage_spread_max_v  max - min of a device's good cell voltages
    step_/test_*               Ah, Wh and seconds since the step / test started, integrated from
                               devices of kind ``counters_device_kind``, only inside a test
                               (records with a run id)
    data_age_max_s             seconds since the device's last good record
    bms_alarm_level            alarm_level (0 ok, 1 warning, 2 alarm)
    current_mismatch_a         |cycler current_a - BMS current_a|
    temperature_sensor_fault   NaN or OUT_OF_RANGE on a temperature channel (open thermistor)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from daq.config.errors import unknown_key_message
from daq.config.yamlfile import read_yaml_mapping
from daq.errors import ConfigError
from daq.resources import locate


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ThresholdLimit(_Frozen):
    """Warn and/or trip thresholds with debounce and warning hysteresis."""

    upper: ClassVar[bool] = True

    warn: float | None = None
    trip: float | None = None
    persistence_s: float = Field(default=0.0, ge=0)
    hysteresis: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _warn_inside_trip(self) -> ThresholdLimit:
        if self.warn is None and self.trip is None:
            raise ValueError("give warn, trip or both")
        if self.warn is not None and self.trip is not None:
            if self.upper and not self.warn < self.trip:
                raise ValueError(f"warn {self.warn} must be below trip {self.trip}: a warning comes first")
            if not self.upper and not self.warn > self.trip:
                raise ValueError(f"warn {self.warn} must be above trip {self.trip}: a warning comes first")
        return self

    def thresholds(self) -> list[float]:
        return [x for x in (self.warn, self.trip) if x is not None]


class UpperLimit(ThresholdLimit):
    """Reached when the value is at or above a threshold."""

    upper: ClassVar[bool] = True


class LowerLimit(ThresholdLimit):
    """Reached when the value is at or below a threshold."""

    upper: ClassVar[bool] = False


class RateLimit(UpperLimit):
    """Temperature rise rate in degC/s, measured over at least ``window_s``."""

    window_s: float = Field(default=1.0, gt=0)


class CurrentMismatchLimit(UpperLimit):
    """|cycler current - BMS current| in A.

    The thresholds grow by ``tolerance_pct`` of the cycler's reading, so a percentage and an
    absolute allowance combine. Readings are compared only when taken within ``window_s`` of
    each other. ``pairs`` maps a BMS device to its cycler; when empty, every BMS is compared
    with the bench's cycler if there is exactly one.
    """

    tolerance_pct: float = Field(default=0.0, ge=0, le=100)
    window_s: float = Field(default=1.0, gt=0)
    pairs: dict[str, str] = Field(default_factory=dict)


class SensorFaultPolicy(_Frozen):
    """What an open or out-of-range temperature sensor does. It never reads as "cool"."""

    level: Literal["trip", "warning", "off"] = "trip"
    persistence_s: float = Field(default=0.0, ge=0)


_LEVEL_RANK = {"off": 0, "warning": 1, "trip": 2}

# Unit of each limit's thresholds, as shown in messages and tables.
LIMIT_UNITS: dict[str, str] = {
    "cell_voltage_max_v": "V",
    "cell_voltage_min_v": "V",
    "pack_voltage_max_v": "V",
    "pack_voltage_min_v": "V",
    "charge_current_max_a": "A",
    "discharge_current_max_a": "A",
    "cell_temperature_max_c": "degC",
    "cell_temperature_min_c": "degC",
    "pack_temperature_max_c": "degC",
    "pack_temperature_min_c": "degC",
    "temperature_rise_max_c_per_s": "degC/s",
    "cell_voltage_spread_max_v": "V",
    "step_capacity_max_ah": "Ah",
    "test_capacity_max_ah": "Ah",
    "step_energy_max_wh": "Wh",
    "test_energy_max_wh": "Wh",
    "step_duration_max_s": "s",
    "test_duration_max_s": "s",
    "data_age_max_s": "s",
    "bms_alarm_level": "",
    "current_mismatch_a": "A",
    "temperature_sensor_fault": "",
}

# Pairs that must not overlap: every min threshold below every max threshold.
_MIN_MAX_PAIRS = (
    ("cell_voltage_min_v", "cell_voltage_max_v"),
    ("pack_voltage_min_v", "pack_voltage_max_v"),
    ("cell_temperature_min_c", "cell_temperature_max_c"),
    ("pack_temperature_min_c", "pack_temperature_max_c"),
)

# Settings a step may not change: they are not "tighter" or "looser", just different.
_FIXED_FIELDS = ("name", "description", "steps", "counters_device_kind")


class LimitSet(_Frozen):
    """The limits for a bench (and, through ``steps``, for named test steps)."""

    name: str = ""
    description: str = ""

    cell_voltage_max_v: UpperLimit | None = None
    cell_voltage_min_v: LowerLimit | None = None
    pack_voltage_max_v: UpperLimit | None = None
    pack_voltage_min_v: LowerLimit | None = None
    charge_current_max_a: UpperLimit | None = None
    discharge_current_max_a: UpperLimit | None = None
    cell_temperature_max_c: UpperLimit | None = None
    cell_temperature_min_c: LowerLimit | None = None
    pack_temperature_max_c: UpperLimit | None = None
    pack_temperature_min_c: LowerLimit | None = None
    temperature_rise_max_c_per_s: RateLimit | None = None
    cell_voltage_spread_max_v: UpperLimit | None = None
    step_capacity_max_ah: UpperLimit | None = None
    test_capacity_max_ah: UpperLimit | None = None
    step_energy_max_wh: UpperLimit | None = None
    test_energy_max_wh: UpperLimit | None = None
    step_duration_max_s: UpperLimit | None = None
    test_duration_max_s: UpperLimit | None = None
    data_age_max_s: UpperLimit | None = None
    data_age_max_s_per_device: dict[str, UpperLimit] = Field(default_factory=dict)
    bms_alarm_level: UpperLimit | None = None
    current_mismatch_a: CurrentMismatchLimit | None = None
    temperature_sensor_fault: SensorFaultPolicy = Field(default_factory=SensorFaultPolicy)
    counters_device_kind: Literal["cycler", "bms"] = "cycler"

    # Per-step overrides, by step name: partial limit sets that may only tighten this one.
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> LimitSet:
        problems: list[str] = []
        for lo_name, hi_name in _MIN_MAX_PAIRS:
            lo, hi = getattr(self, lo_name), getattr(self, hi_name)
            if lo is not None and hi is not None and max(lo.thresholds()) >= min(hi.thresholds()):
                problems.append(f"{lo_name} ({max(lo.thresholds())}) must be below {hi_name} ({min(hi.thresholds())})")
        for step_name, overrides in self.steps.items():
            _, step_problems = _tighten(self, overrides, prefix=f"steps.{step_name}.")
            problems.extend(step_problems)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def for_step(self, step: str) -> LimitSet:
        """The limits in force during the named step: tightened if ``steps`` has it, else these."""
        overrides = self.steps.get(step)
        if overrides is None:
            return self
        return tighten(self, overrides, source=f"steps.{step}")

    def data_age_limit(self, device: str) -> UpperLimit | None:
        return self.data_age_max_s_per_device.get(device, self.data_age_max_s)


def tighten(base: LimitSet, overrides: Mapping[str, Any], *, source: str = "step overrides") -> LimitSet:
    """``base`` with ``overrides`` merged in (field by field); ConfigError if any is looser.

    ``overrides`` has the shape of a limit-set file (``{"cell_voltage_max_v": {"trip": 4.2}}``);
    fields it leaves out are inherited. Adding a limit the base lacks is tightening; removing
    one, raising a max threshold, lowering a min threshold or lengthening a persistence time is
    loosening. The result has no ``steps`` of its own.
    """
    result, problems = _tighten(base, overrides, prefix="")
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    assert result is not None
    return result


def load_limits(path: str | Path) -> LimitSet:
    """Read and validate a limit-set YAML file (or ``builtin:NAME``); ConfigError lines name the file and field."""
    path = locate(path, "limits")
    data = read_yaml_mapping(path, "limit set", mapping_hint="map limit names to limits")
    try:
        return LimitSet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {p}" for p in _validation_problems(exc)]) from exc


# --- internals -------------------------------------------------------------------------------


def _tighten(base: LimitSet, overrides: Mapping[str, Any], *, prefix: str) -> tuple[LimitSet | None, list[str]]:
    if not isinstance(overrides, Mapping):
        return None, [f"{prefix.rstrip('.') or 'overrides'}: must be a mapping of limit names to limits"]
    fixed = [f"{prefix}{k}: cannot be set per step" for k in overrides if k in _FIXED_FIELDS]
    if fixed:
        return None, fixed
    merged = _deep_merge(base.model_dump(exclude={"steps"}), overrides)
    try:
        result = LimitSet.model_validate(merged)
    except ValidationError as exc:
        problems = _validation_problems(exc, prefix=prefix)
        # The usual cause: a step lowered a trip below the inherited warning.
        hint = "; set warn in the step too (or warn: null)"
        return None, [p + hint if "a warning comes first" in p else p for p in problems]
    return result, [prefix + p for p in _looser_problems(base, result)]


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _looser_problems(base: LimitSet, new: LimitSet) -> list[str]:
    problems: list[str] = []
    for name in LIMIT_UNITS:
        old_limit, new_limit = getattr(base, name), getattr(new, name)
        if old_limit is None:
            continue
        if new_limit is None:
            problems.append(f"{name}: removed; a step may only tighten the global limits")
        elif isinstance(old_limit, SensorFaultPolicy):
            problems.extend(_looser_policy(name, old_limit, new_limit))
        else:
            problems.extend(_looser_limit(name, old_limit, new_limit))
    for device, new_limit in new.data_age_max_s_per_device.items():
        old_limit = base.data_age_limit(device)
        if old_limit is not None:
            problems.extend(_looser_limit(f"data_age_max_s_per_device.{device}", old_limit, new_limit))
    return problems


def _looser_limit(path: str, old: ThresholdLimit, new: ThresholdLimit) -> list[str]:
    sign = 1.0 if old.upper else -1.0
    word = "higher" if old.upper else "lower"
    problems: list[str] = []
    if old.trip is not None:
        if new.trip is None:
            problems.append(f"{path}.trip: removed (global trip {old.trip}); a step may only tighten")
        elif sign * new.trip > sign * old.trip:
            problems.append(f"{path}.trip: {new.trip} is {word} than the global {old.trip}; a step may only tighten")
    if old.warn is not None:
        # Dropping the warning is fine when the new trip comes no later than the old warning.
        if new.warn is not None:
            if sign * new.warn > sign * old.warn:
                problems.append(
                    f"{path}.warn: {new.warn} is {word} than the global warn {old.warn}; a step may only tighten"
                )
        elif new.trip is None or sign * new.trip > sign * old.warn:
            problems.append(
                f"{path}.warn: removed, but the trip does not come before the global warn {old.warn};"
                " a step may only tighten"
            )
    if new.persistence_s > old.persistence_s:
        problems.append(
            f"{path}.persistence_s: {new.persistence_s} is longer than the global {old.persistence_s};"
            " a step may only tighten"
        )
    old_window = getattr(old, "window_s", None)
    if old_window is not None and getattr(new, "window_s", None) != old_window:
        problems.append(f"{path}.window_s: cannot change per step (global {old_window})")
    if isinstance(old, CurrentMismatchLimit) and isinstance(new, CurrentMismatchLimit):
        if new.tolerance_pct > old.tolerance_pct:
            problems.append(
                f"{path}.tolerance_pct: {new.tolerance_pct} is wider than the global {old.tolerance_pct};"
                " a step may only tighten"
            )
        if new.pairs != old.pairs:
            problems.append(f"{path}.pairs: cannot change per step")
    return problems


def _looser_policy(path: str, old: SensorFaultPolicy, new: SensorFaultPolicy) -> list[str]:
    problems: list[str] = []
    if _LEVEL_RANK[new.level] < _LEVEL_RANK[old.level]:
        problems.append(f"{path}.level: {new.level!r} is weaker than the global {old.level!r}")
    if new.persistence_s > old.persistence_s:
        problems.append(f"{path}.persistence_s: {new.persistence_s} is longer than the global {old.persistence_s}")
    return problems


def _validation_problems(exc: ValidationError, *, prefix: str = "") -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        path = prefix + ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_key_message(LimitSet, tuple(err["loc"]))
        if not path:
            problems.extend(msg.splitlines())
            continue
        path = path.rstrip(".")
        problems.extend(f"{path}: {line}" for line in msg.splitlines())
    return problems
