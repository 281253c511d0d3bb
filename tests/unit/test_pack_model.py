"""The equivalent-circuit pack model and the clocked SimPack (pure, simulated time only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daq.clock import ManualClock
from simulators.faults import Countdown, FaultPlan
from simulators.models.cells import LFP_A123, NMC_KOKAM_27AH, Chemistry, cell_table
from simulators.models.pack import (
    NO_SPREAD,
    CellSpread,
    PackModel,
    PackParams,
    SimPack,
    demo_pack,
    ev_module_96s,
)

ONE_C = 27.0


def discharge_until(model: PackModel, current_a: float, cutoff_v: float, dt_s: float = 1.0) -> float:
    """Step a constant current until the pack voltage falls to ``cutoff_v``; returns seconds."""
    t = 0.0
    while model.pack_voltage_v > cutoff_v:
        model.step(current_a, dt_s)
        t += dt_s
        assert t < 3 * 3600, "discharge never reached the cut-off"
    return t


# --- cell tables ---------------------------------------------------------------------------


def test_ocv_table_points_and_linear_interpolation() -> None:
    nmc = cell_table("nmc")
    assert float(nmc.ocv(0.5)) == pytest.approx(3.71)
    assert float(nmc.ocv(1.0)) == pytest.approx(4.19)
    assert float(nmc.ocv(0.375)) == pytest.approx((3.63 + 3.71) / 2)
    assert float(cell_table(Chemistry.LFP).ocv(0.01)) == pytest.approx(2.90)
    assert np.allclose(nmc.ocv([0.0, 0.1]), [3.50, 3.57])


@pytest.mark.parametrize("table", [NMC_KOKAM_27AH, LFP_A123], ids=lambda t: t.chemistry.value)
def test_ocv_rises_monotonically_including_abuse_knees(table) -> None:
    lo, hi = table.soc_limits
    ocv = table.ocv(np.linspace(lo, hi, 500))
    assert np.all(np.diff(ocv) > 0)
    # over-discharged cells collapse below the window, overcharged ones climb above it
    assert float(table.ocv(lo)) < table.voltage_window_v[0]
    assert float(table.ocv(hi)) > table.voltage_window_v[1]


def test_lfp_plateau_is_flat() -> None:
    assert float(LFP_A123.ocv(0.9) - LFP_A123.ocv(0.1)) < 0.16
    assert float(LFP_A123.ocv(0.8) - LFP_A123.ocv(0.3)) < 0.07


def test_unknown_chemistry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown chemistry 'lco'.*nmc, lfp"):
        cell_table("lco")


# --- parameters and presets ----------------------------------------------------------------


def test_presets() -> None:
    demo = demo_pack()
    assert (demo.chemistry, demo.series_cells, demo.parallel_cells) == (Chemistry.NMC, 14, 1)
    assert (demo.capacity_ah, demo.initial_soc) == (27.0, 0.5)
    assert demo == PackParams()
    assert ev_module_96s().series_cells == 96
    assert demo_pack(seed=7).seed == 7


def test_invalid_params_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"series_cells must be >= 1"):
        PackParams(series_cells=0)
    with pytest.raises(ValueError, match=r"initial_soc must be within 0\.\.1"):
        PackParams(initial_soc=1.5)


def test_open_circuit_voltage_of_the_pack() -> None:
    model = PackModel(PackParams(spread=NO_SPREAD))
    assert model.open_circuit_voltage(0.5) == pytest.approx(14 * 3.71)
    assert model.pack_voltage_v == pytest.approx(14 * 3.71)  # at rest, SOC 0.5, no spread


def test_parallel_cells_multiply_capacity_and_divide_resistance() -> None:
    single = PackModel(PackParams(spread=NO_SPREAD))
    double = PackModel(PackParams(spread=NO_SPREAD, parallel_cells=2))
    assert double.nominal_ah == 54.0
    assert np.allclose(double.capacities_ah, 2 * single.capacities_ah)
    assert np.allclose(double.resistances_ohm[0], single.resistances_ohm[0] / 2)


# --- spread ----------------------------------------------------------------------------------


def test_spread_is_seeded() -> None:
    a, b, c = (PackModel(PackParams(seed=s)) for s in (1, 1, 2))
    assert np.array_equal(a.socs, b.socs) and np.array_equal(a.capacities_ah, b.capacities_ah)
    assert not np.array_equal(a.capacities_ah, c.capacities_ah)
    spread = np.std(a.capacities_ah) / np.mean(a.capacities_ah)
    assert 0.003 < spread < 0.04


def test_cells_drift_apart_with_spread_and_not_without() -> None:
    spread_only_in_build = PackParams(
        initial_soc=0.9, spread=CellSpread(capacity_rel=0.015, r0_rel=0.05, initial_soc=0.0)
    )
    uniform = PackParams(initial_soc=0.9, spread=NO_SPREAD)
    drifting, identical = PackModel(spread_only_in_build), PackModel(uniform)
    assert np.ptp(drifting.socs) == 0.0  # everyone starts equal
    for model in (drifting, identical):
        model.step(-ONE_C, 1800.0)
    assert np.ptp(identical.socs) == pytest.approx(0.0, abs=1e-12)
    assert np.ptp(drifting.socs) > 0.01
    assert np.ptp(drifting.cell_voltages_v) > 0.01


# --- physics ---------------------------------------------------------------------------------


def test_one_c_discharge_from_full_takes_about_an_hour_and_delivers_the_capacity() -> None:
    model = PackModel(PackParams(initial_soc=1.0))
    cutoff_v = 14 * NMC_KOKAM_27AH.voltage_window_v[0]
    seconds = discharge_until(model, -ONE_C, cutoff_v)
    delivered_ah = ONE_C * seconds / 3600
    assert 0.9 * 3600 < seconds < 1.1 * 3600
    assert delivered_ah == pytest.approx(float(np.mean(model.capacities_ah)), rel=0.03)


def test_sub_stepping_makes_the_result_independent_of_the_step_size() -> None:
    coarse, fine = PackModel(PackParams()), PackModel(PackParams())
    coarse.step(-2 * ONE_C, 600.0)
    for _ in range(6000):
        fine.step(-2 * ONE_C, 0.1)
    assert np.allclose(coarse.socs, fine.socs, atol=1e-9)
    assert coarse.pack_voltage_v == pytest.approx(fine.pack_voltage_v, abs=1e-3)
    assert np.allclose(coarse.temperatures_c, fine.temperatures_c, atol=0.01)


def test_voltage_sags_under_load_and_relaxes_at_rest() -> None:
    model = PackModel(PackParams(spread=NO_SPREAD))
    rest_v = model.pack_voltage_v
    model.step(-ONE_C, 300.0)
    loaded_v = model.pack_voltage_v
    r0_drop = ONE_C * float(model.resistances_ohm[0].sum())
    model.set_current(0.0)
    assert model.pack_voltage_v == pytest.approx(loaded_v + r0_drop)  # R0 part instantly
    just_stopped_v = model.pack_voltage_v
    model.step(0.0, 3600.0)
    ocv_now = float(model.cell_ocvs_v.sum())
    assert loaded_v < just_stopped_v < model.pack_voltage_v < rest_v  # RC part slowly
    assert model.pack_voltage_v == pytest.approx(ocv_now, abs=1e-3)


def test_temperature_rises_under_load_and_cools_at_rest() -> None:
    model = PackModel(PackParams(ambient_c=25.0))
    model.step(-2 * ONE_C, 1200.0)
    hot = model.temperatures_c
    assert np.all(hot > 30.0)
    model.step(0.0, 6 * 3600.0)
    assert np.all(model.temperatures_c < 25.5)


def test_cold_cells_have_higher_resistance() -> None:
    cold = PackModel(PackParams(ambient_c=5.0, spread=NO_SPREAD))
    warm = PackModel(PackParams(ambient_c=20.0, spread=NO_SPREAD))
    ratio = cold.resistances_ohm[0] / warm.resistances_ohm[0]
    assert np.allclose(ratio, 11.0 / 8.5)


def test_current_for_voltage_lands_on_the_target_after_the_step() -> None:
    model = PackModel(PackParams(initial_soc=0.8))
    model.step(ONE_C, 120.0)
    target_v = model.pack_voltage_v + 0.2
    for dt_s in (0.0, 0.001, 1.0):
        trial = PackModel(PackParams(initial_soc=0.8))
        trial.step(ONE_C, 120.0)
        current = trial.current_for_voltage(target_v, dt_s)
        trial.step(current, dt_s)
        # within 1 mV of 60 V: R0 moves a little with SOC and temperature during the step
        assert trial.pack_voltage_v == pytest.approx(target_v, abs=1e-3)


def test_overcharge_takes_cells_past_the_window() -> None:
    model = PackModel(PackParams(initial_soc=1.0, spread=NO_SPREAD))
    model.step(0.3 * ONE_C, 0.15 * 3600 / 0.3)  # +15 % SOC at 0.3C
    assert model.soc == pytest.approx(1.15, abs=1e-6)
    assert np.all(model.cell_voltages_v > 4.5)
    assert model.snapshot(0.0).soc == 1.0  # what a BMS reports is clipped


def test_capacity_fades_per_equivalent_full_cycle() -> None:
    model = PackModel(PackParams(initial_soc=0.5, fade_per_cycle=0.001, spread=NO_SPREAD, max_substep_s=20.0))
    fresh_ah = float(model.capacities_ah[0])
    for _ in range(20):  # 20 x (0.4 discharged + 0.4 charged) of 27 Ah = 8 equivalent full cycles
        model.step(-ONE_C, 0.4 * 3600)
        model.step(ONE_C, 0.4 * 3600)
    assert model.equivalent_full_cycles == pytest.approx(8.0)
    assert float(model.capacities_ah[0]) == pytest.approx(fresh_ah * (1 - 0.008), rel=1e-6)


def test_no_fade_by_default() -> None:
    model = PackModel(PackParams())
    before = model.capacities_ah
    model.step(-ONE_C, 1800)
    model.step(ONE_C, 1800)
    assert np.array_equal(model.capacities_ah, before)


# --- balancing -----------------------------------------------------------------------------


def test_balancing_flags_high_cells_only_while_charging() -> None:
    model = PackModel(PackParams(initial_soc=0.8, spread=NO_SPREAD))
    model.drift_cell_voltage(5, 0.001)
    model.step(0.0, 20.0)  # cell 5 now 20 mV above the others
    model.set_current(ONE_C)
    assert model.balancing == tuple(n == 5 for n in range(1, 15))
    model.set_current(-ONE_C)
    assert not any(model.balancing)


def test_balance_bleed_pulls_a_high_cell_back() -> None:
    params = PackParams(initial_soc=0.7, spread=NO_SPREAD, balance_current_a=1.0)
    model = PackModel(params)
    model.set_cell_leak(1, -1.0)  # a negative leak charges cell 1 ahead of the others
    model.step(0.0, 3600)
    model.set_cell_leak(1, 0.0)
    ahead = model.socs[0] - model.socs[1]
    model.step(0.2 * ONE_C, 1800)
    assert model.socs[0] - model.socs[1] < ahead


# --- fault hooks -----------------------------------------------------------------------------


def test_cell_voltage_drift_ramps_one_cell_and_the_pack() -> None:
    model = PackModel(PackParams(spread=NO_SPREAD))
    before_cells, before_pack = model.cell_voltages_v, model.pack_voltage_v
    model.drift_cell_voltage(3, 0.002)
    model.step(0.0, 50.0)
    delta = model.cell_voltages_v - before_cells
    assert delta[2] == pytest.approx(0.1)
    assert np.allclose(np.delete(delta, 2), 0.0, atol=1e-12)
    assert model.pack_voltage_v - before_pack == pytest.approx(0.1)


def test_cell_leak_drains_only_that_cell() -> None:
    model = PackModel(PackParams(spread=NO_SPREAD))
    model.set_cell_leak(2, 2.7)  # C/10 self-discharge
    model.step(0.0, 3600.0)
    socs = model.socs
    assert socs[1] == pytest.approx(0.4, abs=1e-9)
    assert np.allclose(np.delete(socs, 1), 0.5)
    assert model.cell_voltages_v[1] < model.cell_voltages_v[0] - 0.01


def test_open_thermistor_reads_nan_in_the_snapshot() -> None:
    model = PackModel(PackParams())
    model.set_thermistor_open(4)
    temps = model.snapshot(0.0).cell_temperatures_c
    assert math.isnan(temps[3])
    assert all(math.isfinite(t) for i, t in enumerate(temps) if i != 3)
    assert math.isfinite(model.temperatures_c[3])  # the cell itself still has a temperature
    model.clear_faults()
    assert all(math.isfinite(t) for t in model.snapshot(0.0).cell_temperatures_c)


def test_cell_heating_fault_gives_the_requested_temperature_rise_rate() -> None:
    model = PackModel(PackParams())
    model.set_cell_heating(7, 1.5)
    before = model.temperatures_c
    model.step(0.0, 3.0)
    rise = model.temperatures_c - before
    assert rise[6] == pytest.approx(4.5, rel=0.01)
    assert np.all(np.abs(np.delete(rise, 6)) < 0.01)


def test_fault_hooks_check_the_cell_number() -> None:
    model = PackModel(PackParams())
    with pytest.raises(ValueError, match=r"cell number 15 out of range 1\.\.14"):
        model.set_cell_leak(15, 1.0)
    with pytest.raises(ValueError, match="sensor number 0 out of range"):
        model.set_thermistor_open(0)


# --- SimPack on a clock --------------------------------------------------------------------


def test_sim_pack_advances_lazily_to_the_clock() -> None:
    clock = ManualClock(start=100.0)
    pack = SimPack(PackModel(PackParams(spread=NO_SPREAD)), clock)
    pack.set_current(-ONE_C)
    clock.advance(1800.0)
    first = pack.snapshot()
    assert first.t_s == 1900.0
    assert first.soc == pytest.approx(0.0, abs=1e-9)  # 0.5 - 27 A * 0.5 h / 27 Ah
    assert first.current_a == -ONE_C
    assert pack.snapshot() == first  # reading again at the same time changes nothing


def test_sim_pack_snapshot_shape() -> None:
    clock = ManualClock()
    pack = SimPack(PackModel(PackParams(initial_soc=0.6)), clock)
    snap = pack.snapshot()
    assert len(snap.cell_voltages_v) == len(snap.cell_socs) == len(snap.cell_temperatures_c) == 14
    assert snap.voltage_v == pytest.approx(sum(snap.cell_voltages_v))
    assert snap.nominal_ah == 27.0
    assert snap.remaining_ah == pytest.approx(0.6 * 27.0, rel=0.03)
    assert snap.ambient_c == 25.0
    assert snap.balancing == (False,) * 14


def test_scheduled_faults_apply_exactly_at_their_time() -> None:
    clock = ManualClock()
    plan = FaultPlan()
    pack = SimPack(PackModel(PackParams()), clock, fault_plan=plan)
    plan.at(600.0, "cell 3 heats", lambda: pack.model.set_cell_heating(3, 1.0))
    clock.advance(610.0)
    pack.advance()  # one read well after the fault time
    temps = pack.model.temperatures_c
    assert temps[2] - temps[0] == pytest.approx(10.0, rel=0.02)
    assert [f.name for f in plan.applied] == ["cell 3 heats"]


def test_fault_plan_orders_faults_and_applies_each_once() -> None:
    fired: list[str] = []
    plan = FaultPlan()
    plan.at(20.0, "late", lambda: fired.append("late"))
    plan.at(10.0, "early", lambda: fired.append("early"))
    plan.at(10.0, "early too", lambda: fired.append("early too"))
    assert plan.next_at_s == 10.0
    assert plan.apply_due(9.99) == []
    assert [f.name for f in plan.apply_due(15.0)] == ["early", "early too"]
    plan.apply_due(15.0)
    assert fired == ["early", "early too"]
    assert [f.name for f in plan.pending] == ["late"]
    plan.apply_due(100.0)
    assert fired == ["early", "early too", "late"] and plan.next_at_s == math.inf


def test_countdown() -> None:
    countdown = Countdown()
    countdown.arm(2)
    assert [countdown.take() for _ in range(3)] == [True, True, False]
    assert not countdown.armed
    with pytest.raises(ValueError, match="must be >= 0"):
        Countdown().arm(-1)
