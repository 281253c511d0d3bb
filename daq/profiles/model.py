"""Typed test profiles: what a profile file says, checked for form (not yet against a bench).

Conventions a profile author needs to know:

* Current sign: inside the project + = charge. Steps never carry a signed current: they name a
  ``direction`` (charge | discharge) and give magnitudes (``current_a`` or ``c_rate``, ``power_w``);
  the direction sets the sign when the step is resolved. Time series (CSV) are the exception: their
  values are signed in the project convention (+ = charge), because a drive cycle changes direction.
* C-rates are relative to the profile's ``capacity_ah`` if set, else to the bench pack's capacity.
* ``voltage_basis`` (profile level, default ``cell``): every voltage in the profile (setpoints, end
  conditions, ``record_on_delta_v``) is per cell and gets multiplied by the bench's series cell count,
  as in PyBaMM experiments; with ``pack`` voltages are taken as written, at the pack terminals.
* ``power_basis`` (default ``pack``): powers (``power_w``, ``peak_power_w``, ``power_w`` CSV columns)
  are pack powers; with ``cell`` they are multiplied by the series cell count.
  Currents are always pack currents (a C-rate scales with pack capacity, so it needs no basis).
* End conditions (``until``) are alternatives: the first one met ends the step. ``duration_s`` is
  a time end condition too. Step end conditions are not safety limits; those live in ``limits``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    model_validator,
)

from daq.resources import locate

Direction = Literal["charge", "discharge"]
Basis = Literal["cell", "pack"]
Interpolation = Literal["linear", "step"]
SeriesQuantity = Literal["current_a", "c_rate", "power_w", "power_pct"]


def _c_rate_from_text(value: Any) -> Any:
    """Let structured steps write C-rates as in phrases: 'C/3', '0.5C' (plain numbers pass through)."""
    if not isinstance(value, str):
        return value
    text = value.strip().replace(" ", "")
    try:
        if text[:2].upper() == "C/":
            return 1.0 / float(text[2:])
        if text[-1:].upper() == "C":
            return float(text[:-1])
    except (ValueError, ZeroDivisionError):
        pass
    return value  # pydantic reports it as not a number


CRate = Annotated[PositiveFloat, BeforeValidator(_c_rate_from_text)]

STEP_KINDS = ("rest", "cc", "cv", "cccv", "cp", "pulse", "current_profile", "power_profile", "loop")


def direction_sign(direction: Direction) -> int:
    """+1 for charge, -1 for discharge (project convention: + = charge)."""
    return 1 if direction == "charge" else -1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _merge_condition_list(data: Any, example: str) -> Any:
    """Accept ``until`` as a list of one-key mappings (``- voltage_above_v: 4.2``) or as one mapping."""
    if not isinstance(data, list):
        return data
    merged: dict[str, Any] = {}
    for entry in data:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(
                f"until entry {entry!r} is not a single condition; write one condition per entry, e.g. '- {example}'"
            )
        ((key, value),) = entry.items()
        if key in merged:
            raise ValueError(f"until names {key} twice; keep one")
        merged[key] = value
    return merged


class EndConditions(_Frozen):
    """Step end conditions; any one met ends the step. Voltages are in the profile's voltage basis."""

    voltage_above_v: PositiveFloat | None = None
    voltage_below_v: PositiveFloat | None = None
    current_below_a: PositiveFloat | None = None  # absolute value of the current
    current_below_c_rate: CRate | None = None  # e.g. 0.05 or "C/20" for the taper
    time_s: PositiveFloat | None = None
    step_capacity_ah: PositiveFloat | None = None  # Ah moved in this step, either direction
    step_energy_wh: PositiveFloat | None = None
    temperature_above_c: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return _merge_condition_list(data, "voltage_above_v: 4.2")

    @model_validator(mode="after")
    def _one_current_form(self) -> EndConditions:
        if self.current_below_a is not None and self.current_below_c_rate is not None:
            raise ValueError("until has both current_below_a and current_below_c_rate; keep one")
        return self

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in self.__dict__.values())

    @property
    def has_current_end(self) -> bool:
        return self.current_below_a is not None or self.current_below_c_rate is not None


class CycleConditions(_Frozen):
    """Loop end conditions, checked after each iteration; any one met stops the loop.

    Both look at the capacity of the most recent discharge step (the runner reports it)."""

    discharge_capacity_below_pct: Annotated[float, Field(gt=0, le=100)] | None = None  # of capacity_ah
    discharge_capacity_below_ah: PositiveFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return _merge_condition_list(data, "discharge_capacity_below_pct: 80")

    @model_validator(mode="after")
    def _not_empty(self) -> CycleConditions:
        if self.discharge_capacity_below_pct is None and self.discharge_capacity_below_ah is None:
            raise ValueError("loop until is empty; give discharge_capacity_below_pct or discharge_capacity_below_ah")
        return self


class _StepCommon(_Frozen):
    label: str | None = None
    tags: tuple[str, ...] = ()
    record_period_s: PositiveFloat | None = None  # None: inherit from the enclosing loop or profile
    record_on_delta_v: PositiveFloat | None = None  # also record when V moved this much (voltage basis)
    record_on_delta_a: PositiveFloat | None = None  # also record when I moved this much
    limits: dict[str, Any] | None = None  # per-step limits; schema owned by the safety module


class _LeafStep(_StepCommon):
    duration_s: PositiveFloat | None = None
    until: EndConditions = EndConditions()

    @model_validator(mode="after")
    def _one_time_end(self) -> _LeafStep:
        if self.duration_s is not None and self.until.time_s is not None:
            raise ValueError("both duration_s and until time_s are set; keep one")
        return self

    @property
    def time_limit_s(self) -> float | None:
        return self.duration_s if self.duration_s is not None else self.until.time_s


class _CurrentMagnitude(_LeafStep):
    """A current magnitude as amps or as a C-rate (exactly one, unless ``optional_current``)."""

    current_a: PositiveFloat | None = None
    c_rate: CRate | None = None  # a number, or text like "C/3" or "0.5C"

    @model_validator(mode="after")
    def _one_current(self) -> _CurrentMagnitude:
        given = (self.current_a is not None) + (self.c_rate is not None)
        if given == 2:
            raise ValueError("both current_a and c_rate are set; keep one")
        if given == 0 and not self._current_optional():
            raise ValueError("no current given; add current_a (A) or c_rate (e.g. 0.5)")
        return self

    @classmethod
    def _current_optional(cls) -> bool:
        return False

    def current_magnitude_a(self, capacity_ah: float) -> float | None:
        if self.current_a is not None:
            return self.current_a
        if self.c_rate is not None:
            return self.c_rate * capacity_ah
        return None


class RestStep(_LeafStep):
    kind: Literal["rest"] = "rest"


class CcStep(_CurrentMagnitude):
    """Constant current at a magnitude; ``direction`` sets the sign."""

    kind: Literal["cc"] = "cc"
    direction: Direction


class CvStep(_CurrentMagnitude):
    """Hold a voltage; ``current_a``/``c_rate``, if given, limit the current magnitude."""

    kind: Literal["cv"] = "cv"
    voltage_v: PositiveFloat

    @classmethod
    def _current_optional(cls) -> bool:
        return True


class CccvStep(_CurrentMagnitude):
    """Constant current until ``voltage_v``, then hold ``voltage_v`` (the CC current is the limit)."""

    kind: Literal["cccv"] = "cccv"
    direction: Direction
    voltage_v: PositiveFloat


class CpStep(_LeafStep):
    kind: Literal["cp"] = "cp"
    direction: Direction
    power_w: PositiveFloat


class PulseStep(_CurrentMagnitude):
    """``count`` times: ``pulse_duration_s`` at the current, then ``rest_duration_s`` at zero."""

    kind: Literal["pulse"] = "pulse"
    direction: Direction
    pulse_duration_s: PositiveFloat
    rest_duration_s: Annotated[float, Field(ge=0)] = 0.0
    count: Annotated[int, Field(ge=1)] = 1

    @property
    def total_duration_s(self) -> float:
        return self.count * (self.pulse_duration_s + self.rest_duration_s)


class TimeSeries(_Frozen):
    """Samples of one quantity against time, signed + = charge. Times strictly increase."""

    quantity: SeriesQuantity
    time_s: tuple[float, ...]
    values: tuple[float, ...]

    @model_validator(mode="after")
    def _well_formed(self) -> TimeSeries:
        if len(self.time_s) != len(self.values):
            raise ValueError(f"{len(self.time_s)} times but {len(self.values)} values; give one value per time")
        if len(self.time_s) < 2:
            raise ValueError("a time series needs at least two rows; add the end time as a last row")
        if not all(math.isfinite(x) for x in (*self.time_s, *self.values)):
            raise ValueError("a time series holds a NaN or infinite number; use finite numbers")
        if any(b <= a for a, b in zip(self.time_s, self.time_s[1:], strict=False)):
            raise ValueError("time_s does not strictly increase; sort the rows and remove duplicate times")
        return self

    @property
    def duration_s(self) -> float:
        return self.time_s[-1] - self.time_s[0]


class _SeriesStep(_LeafStep):
    file: str | None = None  # CSV path relative to the profile file; the loader fills ``series``
    series: TimeSeries
    interpolation: Interpolation = "linear"
    repeat: Annotated[int, Field(ge=1)] | Literal["forever"] = 1  # "forever": until an end condition

    @model_validator(mode="after")
    def _quantity_fits(self) -> _SeriesStep:
        allowed = self._allowed_quantities()
        if self.series.quantity not in allowed:
            raise ValueError(
                f"a {getattr(self, 'kind', 'profile')} step cannot play a {self.series.quantity} column; "
                f"use a CSV column named {' or '.join(allowed)}"
            )
        return self

    @classmethod
    def _allowed_quantities(cls) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def total_duration_s(self) -> float | None:
        return None if self.repeat == "forever" else self.series.duration_s * self.repeat


class CurrentProfileStep(_SeriesStep):
    kind: Literal["current_profile"] = "current_profile"

    @classmethod
    def _allowed_quantities(cls) -> tuple[str, ...]:
        return ("current_a", "c_rate")


class PowerProfileStep(_SeriesStep):
    kind: Literal["power_profile"] = "power_profile"
    peak_power_w: PositiveFloat | None = None  # 100 % for a power_pct column (power basis applies)

    @classmethod
    def _allowed_quantities(cls) -> tuple[str, ...]:
        return ("power_w", "power_pct")

    @model_validator(mode="after")
    def _peak_for_percent(self) -> PowerProfileStep:
        if self.series.quantity == "power_pct" and self.peak_power_w is None:
            raise ValueError("the CSV gives power_pct but peak_power_w is missing; add peak_power_w (W)")
        return self


class LoopStep(_StepCommon):
    """Repeat nested steps ``repeat`` times, or until a cycle condition, whichever comes first.

    Record settings and tags on a loop apply to the steps inside it that do not set their own."""

    kind: Literal["loop"] = "loop"
    repeat: Annotated[int, Field(ge=1)] | None = None
    until: CycleConditions | None = None
    steps: tuple[Step, ...] = ()


LeafStep = RestStep | CcStep | CvStep | CccvStep | CpStep | PulseStep | CurrentProfileStep | PowerProfileStep
Step = Annotated[
    RestStep | CcStep | CvStep | CccvStep | CpStep | PulseStep | CurrentProfileStep | PowerProfileStep | LoopStep,
    Field(discriminator="kind"),
]
STEP_MODELS: dict[str, type[BaseModel]] = {
    "rest": RestStep,
    "cc": CcStep,
    "cv": CvStep,
    "cccv": CccvStep,
    "cp": CpStep,
    "pulse": PulseStep,
    "current_profile": CurrentProfileStep,
    "power_profile": PowerProfileStep,
    "loop": LoopStep,
}
LoopStep.model_rebuild()


class Profile(_Frozen):
    """A test profile as loaded from a file (see the module docstring for the conventions)."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    standard: str = ""  # the standard or source the procedure follows, and how closely
    capacity_ah: PositiveFloat | None = None  # nominal capacity for C-rates; None: the bench pack's
    record_period_s: PositiveFloat = 1.0
    voltage_basis: Basis = "cell"
    power_basis: Basis = "pack"
    limits: str | dict[str, Any] | None = None  # limit-set path (relative to this file) or inline
    metadata: dict[str, Any] = {}  # free-form (instrument accuracy, temperature, notes); not interpreted
    steps: tuple[Step, ...] = ()

    _source_path: Path | None = PrivateAttr(default=None)

    def with_source(self, path: Path | None) -> Profile:
        """A copy that remembers the file it came from (for messages and relative paths)."""
        copy = self.model_copy()
        copy._source_path = path
        return copy

    @property
    def source_path(self) -> Path | None:
        """The file this profile was loaded from, if any."""
        return self._source_path

    @property
    def source_name(self) -> str:
        """How error messages name this profile."""
        return str(self._source_path) if self._source_path is not None else f"<profile {self.name}>"

    def limits_path(self) -> Path | None:
        """``limits`` as a path resolved against the profile file's folder, or ``builtin:NAME`` (None if
        inline or unset)."""
        if not isinstance(self.limits, str):
            return None
        base_dir = self._source_path.parent if self._source_path is not None else None
        return locate(self.limits, "limits", base_dir=base_dir)


def describe_step(step: Step) -> str:
    """A short human name for a step in messages: its label, else a summary such as 'cc discharge 1C'."""
    if step.label:
        return step.label
    if isinstance(step, LoopStep):
        return f"loop x{step.repeat}" if step.repeat else "loop"
    if isinstance(step, RestStep):
        return "rest"
    parts: list[str] = [step.kind]
    direction = getattr(step, "direction", None)
    if direction:
        parts.append(direction)
    if isinstance(step, _CurrentMagnitude):
        if step.c_rate is not None:
            parts.append(f"{step.c_rate:g}C")
        elif step.current_a is not None:
            parts.append(f"{step.current_a:g} A")
    if isinstance(step, CvStep | CccvStep):
        parts.append(f"{step.voltage_v:g} V")
    if isinstance(step, CpStep):
        parts.append(f"{step.power_w:g} W")
    if isinstance(step, _SeriesStep) and step.file:
        parts.append(step.file)
    return " ".join(parts)
