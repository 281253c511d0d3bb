"""ETA of a step and of a test from the profile's end conditions and the measured rate."""

from __future__ import annotations

import math

import pytest

from daq.profiles import CycleMetrics, Plan
from daq.profiles.loader import load_profile, profile_from_dict
from daq.runner.eta import CV_TAIL_FRACTION, PlanEta, StepEta, StepMeasure, cv_tail_s, planned_step_s
from daq.runner.progress import Progress, progress_text
from tests.helpers import REPO

CAPACITY_AH = 27.0
CELLS = 14


def _steps(*steps: object) -> list:
    profile = profile_from_dict({"name": "t", "steps": list(steps)})
    plan = Plan(profile, series_cells=CELLS, capacity_ah=CAPACITY_AH)
    return [item.resolved for item in plan.cursor(metrics=CycleMetrics)]


CHARGE = {
    "kind": "cccv",
    "direction": "charge",
    "c_rate": 1.0,
    "voltage_v": 4.2,
    "until": [{"current_below_c_rate": 0.05}, {"time_s": 7200}],
}
DISCHARGE = {"kind": "cc", "direction": "discharge", "c_rate": 1.0, "until": [{"voltage_below_v": 3.0}]}
TAIL_S = CV_TAIL_FRACTION * CAPACITY_AH / ((27.0 + 1.35) / 2) * 3600


def eta_tail(amps: float) -> float:
    return CV_TAIL_FRACTION * CAPACITY_AH / ((amps + 1.35) / 2) * 3600


def _measure(elapsed_s: float, current_a: float, *, step_ah: float = 0.0, soc: float | None = None) -> StepMeasure:
    return StepMeasure(elapsed_s, current_a, 55.0, step_ah, step_ah * 55.0, soc)


def test_the_shipped_ci_profile_is_estimated_before_it_starts() -> None:
    plan = Plan(load_profile(REPO / "configs" / "profiles" / "ci_cycle_3x.yaml"), series_cells=CELLS, capacity_ah=27)
    eta = PlanEta.of_plan(plan, CAPACITY_AH)
    assert eta is not None and eta.planned_s == pytest.approx(3 * (3600 + TAIL_S + 600 + 3600 + 600))
    assert eta.after_step(1) == pytest.approx(eta.planned_s - 3600 - TAIL_S)
    assert eta.after_step(12) == 0.0


def test_a_cc_cv_charge_counts_the_soc_headroom_at_the_measured_current() -> None:
    (charge,) = _steps(CHARGE)
    eta = StepEta(charge, CAPACITY_AH)
    assert eta.remaining_s(_measure(60, 27.0, soc=0.6)) == pytest.approx(0.4 * 3600 + TAIL_S)
    # no BMS: a full swing less what the step has moved
    assert eta.remaining_s(_measure(60, 27.0, step_ah=10.0)) == pytest.approx(17 / 27 * 3600 + TAIL_S)


def test_the_cv_taper_is_fitted_from_the_measured_current() -> None:
    (charge,) = _steps(CHARGE)
    eta = StepEta(charge, CAPACITY_AH)
    assert eta.remaining_s(_measure(0, 0.0)) is not None  # ramping up at the start is not a taper
    assert eta.remaining_s(_measure(1, 5.0)) == pytest.approx(min(7200 - 1, 27 / 5 * 3600 + eta_tail(5.0)))
    eta.remaining_s(_measure(2, 27.0, step_ah=0.01))  # at the CC current
    eta.remaining_s(_measure(3000, 20.0, step_ah=20.0))  # the taper begins below 95 % of 27 A
    i1 = 20.0 * math.exp(-1.0)  # 100 s later: tau = 100 s
    assert eta.remaining_s(_measure(3100, i1, step_ah=21.0)) == pytest.approx(100 * math.log(i1 / 1.35))
    assert eta.remaining_s(_measure(3200, 1.3, step_ah=22.0)) == 0.0


def test_the_estimate_moves_as_the_step_runs() -> None:
    (discharge,) = _steps(DISCHARGE)
    eta = StepEta(discharge, CAPACITY_AH)
    first = eta.remaining_s(_measure(0, -27.0))
    later = eta.remaining_s(_measure(600, -27.0, step_ah=-4.5))
    assert first == pytest.approx(3600) and later == pytest.approx(3000)
    halved = eta.remaining_s(_measure(600, -13.5, step_ah=-4.5))  # the measured rate counts, not the setpoint
    assert halved == pytest.approx(6000)


def test_time_capacity_and_energy_ends_take_the_soonest() -> None:
    (step,) = _steps(
        {"kind": "cc", "direction": "charge", "current_a": 10.0, "until": [{"time_s": 3600}, {"step_capacity_ah": 5}]}
    )
    eta = StepEta(step, CAPACITY_AH)
    assert eta.remaining_s(_measure(600, 10.0, step_ah=1.0)) == pytest.approx(4 / 10 * 3600)
    (rest,) = _steps("Rest for 10 minutes")
    assert StepEta(rest, CAPACITY_AH).remaining_s(_measure(120, 0.0)) == pytest.approx(480)


def test_no_estimate_where_none_is_possible() -> None:
    (hot,) = _steps({"kind": "cc", "direction": "charge", "current_a": 10.0, "until": [{"temperature_above_c": 45}]})
    assert StepEta(hot, CAPACITY_AH).remaining_s(_measure(60, 10.0)) is None
    (discharge,) = _steps(DISCHARGE)
    assert StepEta(discharge, None).remaining_s(_measure(60, -27.0)) is None  # no capacity: no swing to count
    assert cv_tail_s(None, 27.0, 1.35) is None
    assert planned_step_s(hot, CAPACITY_AH) is None
    eta = PlanEta(
        _steps(
            DISCHARGE, {"kind": "cc", "direction": "charge", "current_a": 10.0, "until": [{"temperature_above_c": 45}]}
        ),
        CAPACITY_AH,
    )
    assert eta.planned_s is None and eta.after_step(1) is None and eta.after_step(2) == 0.0


def test_progress_shows_the_step_eta_beside_the_test_eta() -> None:
    p = Progress("running", 1, 3, 1, 12, "1.1", "charge", 65.0, 65.0, 7200.0, step_eta_s=3600.0)
    text = progress_text(p)
    assert "step ETA 01:00:00" in text and "ETA 02:00:00" in text


def test_a_simulated_bench_shows_the_test_eta_on_the_wall_clock_too() -> None:
    p = Progress("running", 1, 3, 1, 12, "1.1", "charge", 65.0, 65.0, 7200.0, step_eta_s=3600.0, time_scale=5.0)
    assert "ETA 02:00:00 = 00:24:00 wall" in progress_text(p)


@pytest.mark.parametrize(
    ("profile", "bench"), [("demo_quick.yaml", "demo.yaml"), ("ci_cycle_3x.yaml", "ci_bench.yaml")]
)
def test_each_shipped_test_profile_ends_in_minutes_on_the_bench_the_docs_pair_it_with(profile: str, bench: str) -> None:
    import yaml

    sim = yaml.safe_load((REPO / "configs" / bench).read_text())["simulation"]
    pack = sim["pack"]
    plan = Plan(
        load_profile(REPO / "configs" / "profiles" / profile), series_cells=pack["series_cells"], capacity_ah=27
    )
    eta = PlanEta.of_plan(plan, pack["capacity_ah"])
    assert eta is not None and eta.planned_s is not None
    assert eta.planned_s / sim["time_scale"] <= 5 * 60  # wall-clock seconds
    for doc in ("README.md", "docs/profiles.md"):  # by file name or as builtin:NAME
        assert profile.removesuffix(".yaml") in (REPO / doc).read_text(), doc
