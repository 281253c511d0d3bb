"""What the runner commands for a resolved step, and when the step is over (pure: no I/O, no clock).

Mapping of ``ResolvedStep.kind`` to the cycler's mode (``daq.channels.CyclerMode``):

    rest             REST (0 A; the output stays on, so the voltage keeps being measured)
    cc               CC at the signed current; the voltage end condition in the step's direction is
                     also the CC voltage clamp, so the cycler itself never runs past it
    cv               CV at the voltage; current limited to the step's limit, else the bench's
    cccv             CCCV: current, then the voltage
    cp               CP at the signed power, clamped like cc
    pulse            CC, the setpoint changed at each pulse edge (``setpoint_at``)
    current_profile  CC, the setpoint changed at each row (step interpolation) or every update
                     period (linear interpolation)
    power_profile    CP, likewise

A profile whose setpoints change sign (a drive cycle) gets no voltage clamp: one clamp cannot be
a ceiling for the charge parts and a floor for the discharge parts; the safety limits bound it.

End conditions (``EndLimits``) are alternatives, checked on every cycler record. Voltage ends
count as met within ``VOLTAGE_TOLERANCE`` of the threshold, because the CC clamp holds the
voltage exactly at the threshold and measurement noise may never cross it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daq.channels import CyclerMode
from daq.cycler import CyclerCommand
from daq.profiles import ResolvedStep, Waveform

VOLTAGE_TOLERANCE = 1e-4  # relative; 5.9 mV at 58.8 V
_TIME_EPS_S = 1e-6

WAVEFORM_KINDS = ("pulse", "current_profile", "power_profile")


@dataclass(frozen=True, slots=True)
class CurrentLimits:
    """Current magnitudes the bench allows (the tighter of the cycler's range and the limit set)."""

    max_charge_a: float
    max_discharge_a: float
    cv_limit_a: float  # a cv step without its own current limit is limited to this


def _direction_of(value: float | None) -> int:
    if value is None or value == 0:
        return 0
    return 1 if value > 0 else -1


def step_direction(step: ResolvedStep) -> int:
    """+1 charge, -1 discharge, 0 rest or both ways (a drive cycle) or unknown (cv)."""
    if step.kind in ("cc", "cccv", "pulse"):
        return _direction_of(step.current_a)
    if step.kind == "cp":
        return _direction_of(step.power_w)
    if step.waveform is not None:
        lo, hi = step.waveform.min_value, step.waveform.max_value
        if lo >= 0 and hi > 0:
            return 1
        if hi <= 0 and lo < 0:
            return -1
    return 0


def step_category(step: ResolvedStep) -> str | None:
    """The name per-step safety limits are looked up by: 'charge', 'discharge', 'rest' or None."""
    if step.kind == "rest":
        return "rest"
    direction = step_direction(step)
    if step.kind == "cv":
        return "charge"  # a voltage hold follows a charge in every standard procedure
    return {1: "charge", -1: "discharge"}.get(direction)


def voltage_clamp(step: ResolvedStep) -> float:
    """The voltage the cycler must not pass in the step's direction (0: none)."""
    direction = step_direction(step)
    if direction > 0 and step.end.voltage_above_v is not None:
        return step.end.voltage_above_v
    if direction < 0 and step.end.voltage_below_v is not None:
        return step.end.voltage_below_v
    return 0.0


def command_at(step: ResolvedStep, elapsed_s: float, limits: CurrentLimits) -> CyclerCommand:
    """The operating point ``elapsed_s`` seconds into the step."""
    kind = step.kind
    if kind == "rest":
        return CyclerCommand(CyclerMode.REST)
    if kind == "cv":
        limit = step.current_limit_a if step.current_limit_a is not None else limits.cv_limit_a
        return CyclerCommand(CyclerMode.CV, current_a=abs(limit), voltage_v=step.voltage_v or 0.0)
    if kind == "cccv":
        return CyclerCommand(CyclerMode.CCCV, current_a=step.current_a or 0.0, voltage_v=step.voltage_v or 0.0)
    if kind == "cp" or (step.waveform is not None and step.waveform.quantity == "power_w"):
        return CyclerCommand(CyclerMode.CP, power_w=step.setpoint_at(elapsed_s), voltage_v=voltage_clamp(step))
    # cc, pulse, current_profile
    return CyclerCommand(CyclerMode.CC, current_a=step.setpoint_at(elapsed_s), voltage_v=voltage_clamp(step))


def commanded_current(command: CyclerCommand) -> float | None:
    """The current a command fixes, if it fixes one (CV and CP let the pack decide)."""
    if command.mode == CyclerMode.REST:
        return 0.0
    if command.mode == CyclerMode.CC:
        return command.current_a
    return None


def setpoint_channel(step: ResolvedStep) -> str | None:
    """The register a time-varying step rewrites while it runs (None: the setpoint is fixed)."""
    if step.waveform is None:
        return None
    return "power_setpoint_w" if step.waveform.quantity == "power_w" else "current_setpoint_a"


def next_change_s(waveform: Waveform, elapsed_s: float, update_period_s: float) -> float | None:
    """Step time of the next setpoint change after ``elapsed_s`` (None: the waveform is over).

    Step interpolation changes only at rows; linear interpolation is re-sampled every
    ``update_period_s``."""
    period = waveform.period_s
    end = None if waveform.repeat is None else period * waveform.repeat
    if end is not None and elapsed_s >= end - _TIME_EPS_S:
        return None
    if waveform.interpolation == "linear":
        nxt = elapsed_s + max(update_period_s, _TIME_EPS_S)
    else:
        base = math.floor((elapsed_s + _TIME_EPS_S) / period) * period
        tau = elapsed_s - base
        nxt = next((base + t for t in waveform.time_s if t > tau + _TIME_EPS_S), base + period)
    return nxt if end is None else min(nxt, end)


@dataclass(slots=True)
class StepReadings:
    """What the end conditions look at, as of the newest record."""

    elapsed_s: float
    voltage_v: float = math.nan
    current_a: float = math.nan
    step_ah: float = 0.0  # net, + = charge
    step_wh: float = 0.0
    temperature_c: float = math.nan  # the hottest good temperature channel of the record


def end_reason(step: ResolvedStep, r: StepReadings) -> str | None:
    """Which end condition the readings meet first, or None while the step goes on."""
    end = step.end
    if end.time_s is not None and r.elapsed_s >= end.time_s - _TIME_EPS_S:
        return "time"
    v = r.voltage_v
    if not math.isnan(v):
        if end.voltage_above_v is not None and v >= end.voltage_above_v * (1 - VOLTAGE_TOLERANCE):
            return "voltage_above"
        if end.voltage_below_v is not None and v <= end.voltage_below_v * (1 + VOLTAGE_TOLERANCE):
            return "voltage_below"
    if end.current_below_a is not None and not math.isnan(r.current_a) and abs(r.current_a) <= end.current_below_a:
        return "current_below"
    if end.step_capacity_ah is not None and abs(r.step_ah) >= end.step_capacity_ah:
        return "step_capacity"
    if end.step_energy_wh is not None and abs(r.step_wh) >= end.step_energy_wh:
        return "step_energy"
    if (
        end.temperature_above_c is not None
        and not math.isnan(r.temperature_c)
        and r.temperature_c >= end.temperature_above_c
    ):
        return "temperature_above"
    return None
