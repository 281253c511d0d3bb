"""Per-cycle summary figures, the persisted runner state, progress and ETA."""

from __future__ import annotations

import math

import pytest

from daq.profiles import Plan, PlanPosition, profile_from_dict
from daq.runner.integrator import Totals
from daq.runner.progress import Progress, estimate_remaining_s, plan_size, progress_lines, progress_text
from daq.runner.state import RunnerState, StepProgress
from daq.runner.summary import CycleAccumulator, StepResult, format_summary_table


def result(
    step: int, *, ah: float, wh: float, v: float, temp: float, tags: tuple[str, ...] = (), kind: str = "cc"
) -> StepResult:
    totals = Totals()
    totals.add_constant(ah * 3600, wh / ah if ah else 0.0, 1.0)
    return StepResult(
        step=step,
        number=f"1.{step}",
        label="",
        kind=kind,
        cycle=3,
        reason="time",
        started_ns=step * 10,
        ended_ns=step * 10 + 5,
        duration_s=100.0,
        totals=totals,
        end_voltage_v=v,
        end_current_a=0.0,
        max_temperature_c=temp,
        tags=tags,
    )


def test_cycle_summary_adds_up_its_steps() -> None:
    cycle = CycleAccumulator(3)
    cycle.add(result(1, ah=27.0, wh=1500.0, v=58.8, temp=31.0))
    cycle.add(result(2, ah=0.0, wh=0.0, v=57.0, temp=33.0))  # rest: neither end voltage
    cycle.add(result(3, ah=-26.0, wh=-1300.0, v=42.0, temp=38.0, tags=("capacity_measurement",)))
    cycle.add(result(4, ah=-0.5, wh=-20.0, v=41.0, temp=30.0))  # a later discharge: its end voltage counts
    s = cycle.summary()
    assert s["cycle"] == 3 and s["steps"] == 4 and s["duration_s"] == 400.0
    assert s["charge_ah"] == pytest.approx(27.0) and s["discharge_ah"] == pytest.approx(26.5)
    assert s["capacity_ah"] == pytest.approx(26.0)  # the tagged step, not the whole cycle
    assert s["coulombic_efficiency"] == pytest.approx(26.5 / 27.0)
    assert s["energy_efficiency"] == pytest.approx(1320.0 / 1500.0)
    assert s["max_temperature_c"] == 38.0
    assert s["end_of_charge_v"] == 58.8 and s["end_of_discharge_v"] == 41.0
    assert s["started_ns"] == 10 and s["ended_ns"] == 45


def test_a_rest_step_is_no_charge_whatever_its_edges_booked() -> None:
    """At 2000x a stalled poll at the switch to the next charge books mAh into the rest before it;
    its voltage (a rested, discharged pack's) must not become the cycle's end-of-charge voltage."""
    cycle = CycleAccumulator(3)
    cycle.add(result(1, ah=27.0, wh=1500.0, v=58.8, temp=31.0, kind="cccv"))
    cycle.add(result(2, ah=-26.0, wh=-1300.0, v=42.0, temp=38.0))
    cycle.add(result(3, ah=0.02, wh=1.0, v=45.8, temp=30.0, kind="rest"))  # 20 mAh of the next charge
    s = cycle.summary()
    assert s["end_of_charge_v"] == 58.8 and s["end_of_discharge_v"] == 42.0


def test_a_cycle_without_charge_has_no_efficiency() -> None:
    cycle = CycleAccumulator(0)
    cycle.add(result(1, ah=-10.0, wh=-500.0, v=42.0, temp=math.nan))
    s = cycle.summary()
    assert s["coulombic_efficiency"] is None and s["energy_efficiency"] is None
    assert s["max_temperature_c"] is None and s["end_of_charge_v"] is None
    assert s["capacity_ah"] == pytest.approx(10.0)
    assert any("10.000" in line for line in format_summary_table([s]))


def test_runner_state_round_trips_through_json_shapes() -> None:
    cycle = CycleAccumulator(2)
    cycle.add(result(1, ah=5.0, wh=250.0, v=55.0, temp=30.0))
    progress = StepProgress(
        step=7, cycle=2, number="1.3", label="discharge", started_ns=5, active_since_ns=9, elapsed_before_s=12.5
    )
    progress.extra.add_constant(-36.0, 50.0, 100.0)
    state = RunnerState(
        phase="running",
        position=PlanPosition((0, 2), (1,), 2, 6, "abc"),
        step=progress,
        cycle=cycle,
        last_discharge_ah=26.5,
        steps_completed=6,
        test_time_s=1234.0,
        total_cycles=3,
        total_steps=12,
        process={"host": "h", "pid": 1, "start": 2},
    )
    back = RunnerState.from_dict(state.to_dict())
    assert back.to_dict() == state.to_dict()
    assert back.step.extra.discharge_ah == pytest.approx(1.0)
    assert back.cycle.summary()["charge_ah"] == pytest.approx(5.0)


def test_plan_size_counts_steps_and_cycles_without_unrolling() -> None:
    profile = profile_from_dict(
        {
            "name": "t",
            "steps": [
                "Rest for 1 minute",
                {"kind": "loop", "repeat": 3, "steps": ["Charge at 1 A for 1 minute", "Discharge at 1 A for 1 minute"]},
            ],
        }
    )
    size = plan_size(Plan(profile, series_cells=1, capacity_ah=1.0))
    assert size.steps == 7 and size.cycles == 3


def test_eta_uses_the_recent_cycles() -> None:
    assert estimate_remaining_s(cycle=1, total_cycles=3, cycle_durations_s=[], cycle_elapsed_s=0) is None
    eta = estimate_remaining_s(cycle=2, total_cycles=3, cycle_durations_s=[100.0], cycle_elapsed_s=30.0)
    assert eta == pytest.approx(70.0 + 100.0)


def test_progress_line_names_cycle_step_times_values_and_alarms() -> None:
    line = progress_text(
        Progress(
            phase="running",
            cycle=2,
            total_cycles=3,
            step=6,
            total_steps=12,
            number="1.2",
            label="Rest for 10 minutes",
            step_elapsed_s=65,
            test_time_s=3725,
            eta_s=7200,
            voltage_v=55.5,
            current_a=0.0,
            alarms=["cell 3 high"],
        )
    )
    for part in ("cycle 2 of 3", "step 6 of 12 (1.2 Rest for 10 minutes)", "step time 00:01:05", "ETA 02:00:00"):
        assert part in line
    assert "55.500 V" in line and "ALARMS: cell 3 high" in line


def test_live_view_lines_are_short_enough_for_a_terminal() -> None:
    lines = progress_lines(
        Progress(
            phase="paused",
            cycle=12,
            total_cycles=510,
            step=47,
            total_steps=2044,
            number="5.1.3",
            label="discharge 1C to 3.0 V",
            step_elapsed_s=3600,
            test_time_s=86400 * 3,
            eta_s=86400 * 40,
            voltage_v=44.123,
            current_a=-27.0,
            step_ah=-26.9,
            alarms=["cell 3 high"],
            reason="paused by operator",
        )
    )
    assert lines[0] == "PAUSED · cycle 12 of 510 · step 47 of 2044: 5.1.3 discharge 1C to 3.0 V"
    assert "ETA 40d 00:00:00" in lines[1] and lines[-1] == "ALARM: cell 3 high"
    assert all(len(line) <= 100 for line in lines)
