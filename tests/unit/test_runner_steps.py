"""Step -> cycler command mapping, end conditions, pulse/profile timing, safety step names."""

from __future__ import annotations

import math

import pytest

from daq.channels import CyclerMode
from daq.profiles import Scale, parse_phrase, profile_from_dict, resolve_step
from daq.runner.steps import (
    VOLTAGE_TOLERANCE,
    CurrentLimits,
    StepReadings,
    command_at,
    commanded_current,
    end_reason,
    next_change_s,
    setpoint_channel,
    step_category,
    voltage_clamp,
)

SCALE = Scale(series_cells=14, capacity_ah=27.0)
LIMITS = CurrentLimits(max_charge_a=300, max_discharge_a=300, cv_limit_a=29.7)


def resolved(phrase_or_dict):
    if isinstance(phrase_or_dict, str):
        step = parse_phrase(phrase_or_dict)
    else:
        step = profile_from_dict({"name": "t", "steps": [phrase_or_dict]}).steps[0]
    return resolve_step(step, SCALE, record_period_s=1.0)


@pytest.mark.parametrize(
    ("step", "mode", "current", "voltage", "power"),
    [
        ("Rest for 1 hour", CyclerMode.REST, 0.0, 0.0, 0.0),
        # cc: signed current, the end voltage in the step's direction is the clamp (pack volts)
        ("Discharge at 1C until 3.0 V", CyclerMode.CC, -27.0, 42.0, 0.0),
        ("Charge at 0.5C until 4.2 V", CyclerMode.CC, 13.5, 58.8, 0.0),
        ("Charge at 2 A for 1 hour", CyclerMode.CC, 2.0, 0.0, 0.0),
        # cv without its own limit: the bench's cv limit
        ("Hold at 4.2 V until C/20", CyclerMode.CV, 29.7, 58.8, 0.0),
        (
            {"kind": "cccv", "direction": "charge", "c_rate": 1, "voltage_v": 4.2, "until": {"current_below_a": 1}},
            CyclerMode.CCCV,
            27.0,
            58.8,
            0.0,
        ),
        ("Discharge at 500 W until 3.0 V", CyclerMode.CP, 0.0, 42.0, -500.0),
    ],
)
def test_each_step_kind_maps_to_a_cycler_mode(step, mode, current, voltage, power) -> None:
    command = command_at(resolved(step), 0.0, LIMITS)
    assert command.mode == mode
    assert command.current_a == pytest.approx(current)
    assert command.voltage_v == pytest.approx(voltage)
    assert command.power_w == pytest.approx(power)


def test_a_cv_step_with_its_own_current_limit_uses_it() -> None:
    step = resolved({"kind": "cv", "voltage_v": 4.1, "current_a": 5, "duration_s": 60})
    assert command_at(step, 0.0, LIMITS).current_a == 5.0


def test_a_pulse_plays_its_edges_over_step_time() -> None:
    step = resolved(
        {
            "kind": "pulse",
            "direction": "discharge",
            "c_rate": 1,
            "pulse_duration_s": 10,
            "rest_duration_s": 40,
            "count": 2,
            "until": {"voltage_below_v": 3.0},
        }
    )
    assert [command_at(step, t, LIMITS).current_a for t in (0, 9.9, 10.1, 49, 50.1, 60.5)] == [-27, -27, 0, 0, -27, 0]
    assert command_at(step, 0, LIMITS).voltage_v == pytest.approx(42.0)
    assert setpoint_channel(step) == "current_setpoint_a"
    # edges: 10, 50, 60, then the end at 100
    assert [next_change_s(step.waveform, t, 1.0) for t in (0, 10, 49.5, 50, 60)] == [10, 50, 50, 60, 100]
    assert next_change_s(step.waveform, 100, 1.0) is None
    assert step.end.time_s == 100


def test_a_linear_profile_is_resampled_every_update_period_and_a_mixed_sign_one_has_no_clamp() -> None:
    step = resolved(
        {
            "kind": "current_profile",
            "series": {"quantity": "current_a", "time_s": [0, 100], "values": [-10, 10]},
            "until": {"voltage_below_v": 3.0},
        }
    )
    assert next_change_s(step.waveform, 0.0, 20.0) == 20.0
    assert command_at(step, 25.0, LIMITS).current_a == pytest.approx(-5.0)
    assert voltage_clamp(step) == 0.0  # one clamp cannot be both a ceiling and a floor
    assert step_category(step) is None


def test_a_power_profile_drives_cp() -> None:
    step = resolved(
        {
            "kind": "power_profile",
            "interpolation": "step",
            "series": {"quantity": "power_w", "time_s": [0, 10, 20], "values": [-100, -200, -200]},
            "duration_s": 20,
        }
    )
    command = command_at(step, 12, LIMITS)
    assert command.mode == CyclerMode.CP and command.power_w == -200
    assert setpoint_channel(step) == "power_setpoint_w"
    assert commanded_current(command) is None
    assert step_category(step) == "discharge"


@pytest.mark.parametrize(
    ("step", "category"),
    [("Rest for 1 hour", "rest"), ("Charge at 1C until 4.2 V", "charge"), ("Discharge at 1C until 3 V", "discharge")],
)
def test_safety_step_limits_are_named_by_what_the_step_does(step: str, category: str) -> None:
    assert step_category(resolved(step)) == category


def test_voltage_ends_count_within_the_tolerance_because_the_clamp_holds_exactly_there() -> None:
    step = resolved("Discharge at 1C until 3.0 V")  # 42.0 V at the pack
    at = StepReadings(elapsed_s=10, current_a=-27)
    at.voltage_v = 42.0 * (1 + VOLTAGE_TOLERANCE) + 0.001
    assert end_reason(step, at) is None
    at.voltage_v = 42.0 * (1 + VOLTAGE_TOLERANCE / 2)
    assert end_reason(step, at) == "voltage_below"


def test_end_conditions_are_alternatives_and_time_comes_first() -> None:
    step = resolved(
        {
            "kind": "cccv",
            "direction": "charge",
            "c_rate": 1,
            "voltage_v": 4.2,
            "until": {"current_below_c_rate": "C/20", "time_s": 100, "temperature_above_c": 45},
        }
    )
    assert end_reason(step, StepReadings(elapsed_s=50, voltage_v=58.8, current_a=20)) is None
    assert end_reason(step, StepReadings(elapsed_s=50, voltage_v=58.8, current_a=1.3)) == "current_below"
    assert end_reason(step, StepReadings(elapsed_s=50, voltage_v=58.8, current_a=20, temperature_c=45)) == (
        "temperature_above"
    )
    assert end_reason(step, StepReadings(elapsed_s=100, voltage_v=58.8, current_a=1.0)) == "time"
    # a missing reading never ends a step
    assert end_reason(step, StepReadings(elapsed_s=50, voltage_v=math.nan, current_a=math.nan)) is None


def test_capacity_and_energy_ends_use_the_charge_moved_either_way() -> None:
    step = resolved(
        {
            "kind": "cc",
            "direction": "discharge",
            "current_a": 10,
            "until": {"step_capacity_ah": 2, "step_energy_wh": 500},
        }
    )
    assert end_reason(step, StepReadings(elapsed_s=1, step_ah=-1.9, step_wh=-95)) is None
    assert end_reason(step, StepReadings(elapsed_s=1, step_ah=-2.0, step_wh=-100)) == "step_capacity"
    assert end_reason(step, StepReadings(elapsed_s=1, step_ah=-1.0, step_wh=-500)) == "step_energy"
