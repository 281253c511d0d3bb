"""The simulated cycler's behaviour on a simulated pack, on a manual clock (no I/O, no wall time)."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from daq.channels import CyclerMode
from daq.clock import ManualClock
from simulators.cycler import WRITABLE_NAMES, CyclerAlarm, SimCycler
from simulators.models.pack import NO_SPREAD, PackModel, PackParams, SimPack

REGMAP = Path(__file__).resolve().parents[2] / "configs" / "regmaps" / "sim_cycler.yaml"
ONE_C = 27.0
CELLS = 14


class Bench:
    def __init__(self, **pack_overrides: object) -> None:
        self.clock = ManualClock()
        self.pack = SimPack(PackModel(PackParams(**pack_overrides)), self.clock)  # type: ignore[arg-type]
        self.cycler = SimCycler(
            self.pack, self.clock, rated_voltage_v=80.0, rated_current_a=100.0, rated_power_w=5000.0
        )

    def set(self, **values: float) -> None:
        for name, value in values.items():
            self.cycler.write(name, value)

    def read(self, name: str) -> float:
        value = self.cycler.read(name)
        assert not isinstance(value, str)
        return value

    def run_until(self, done: Callable[[], bool], *, every_s: float = 10.0, max_s: float = 4 * 3600) -> float:
        """Poll like a runner would; returns the simulated seconds it took."""
        start = self.clock.now
        while not done():
            self.clock.advance(every_s)
            assert self.clock.now - start < max_s, "condition never met"
        return self.clock.now - start

    def run_for(self, seconds: float, *, every_s: float = 10.0) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.advance(min(every_s, end - self.clock.now))
            self.cycler.read("voltage_v")


@pytest.fixture
def bench() -> Bench:
    return Bench(initial_soc=0.5)


# --- register surface ----------------------------------------------------------------------


def regmap_registers() -> list[dict]:
    return yaml.safe_load(REGMAP.read_text())["registers"]


def test_every_regmap_register_and_bit_is_readable(bench: Bench) -> None:
    for register in regmap_registers():
        value = bench.cycler.read(register["name"])
        if register["type"] == "string":
            assert isinstance(value, str) and value
        else:
            assert isinstance(value, int | float)
        for bit_name in register.get("bits", {}):
            assert bench.cycler.read(bit_name) in (0, 1)


def test_writable_names_are_exactly_the_regmap_writables(bench: Bench) -> None:
    writable = {r["name"] for r in regmap_registers() if r.get("writable")}
    assert writable == WRITABLE_NAMES
    read_only = {r["name"] for r in regmap_registers()} - writable
    for name in read_only:
        with pytest.raises(ValueError, match=f"'{name}' is read-only"):
            bench.cycler.write(name, 1.0)


def test_unknown_names_are_clear_errors(bench: Bench) -> None:
    with pytest.raises(ValueError, match="unknown register 'volts'"):
        bench.cycler.read("volts")
    with pytest.raises(ValueError, match="'volts' is not a register of the cycler; writable: "):
        bench.cycler.write("volts", 1.0)


def test_identification_and_ratings(bench: Bench) -> None:
    assert bench.cycler.read("model") == "SIM-CYC-1"
    assert bench.cycler.read("serial_number") == "SIM00001"
    assert bench.read("rated_voltage_v") == 80.0
    assert bench.read("rated_current_a") == 100.0
    assert bench.read("rated_power_w") == 5000.0


def test_setpoints_read_back(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CCCV, current_setpoint_a=-12.5, voltage_setpoint_v=42.0)
    bench.set(power_setpoint_w=-300.0, watchdog_timeout_s=2.5, watchdog_counter=7, limit_max_voltage_v=58.8)
    assert bench.read("mode_setpoint") == CyclerMode.CCCV
    assert bench.read("current_setpoint_a") == -12.5
    assert bench.read("voltage_setpoint_v") == 42.0
    assert bench.read("power_setpoint_w") == -300.0
    assert bench.read("watchdog_timeout_s") == 2.5
    assert bench.read("watchdog_counter") == 7
    assert bench.read("limit_max_voltage_v") == 58.8


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("mode_setpoint", 7, "is not a mode"),
        ("mode_setpoint", 1.5, "is not a mode"),
        ("current_setpoint_a", 150.0, "outside -100..100"),
        ("voltage_setpoint_v", 90.0, "outside 0..80"),
        ("power_setpoint_w", -6000.0, "outside -5000..5000"),
        ("watchdog_counter", 70000, "integer 0..65535"),
        ("watchdog_timeout_s", -1.0, "must be >= 0"),
        ("current_setpoint_a", float("nan"), "finite"),
    ],
)
def test_out_of_range_writes_are_refused(bench: Bench, name: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.cycler.write(name, value)


# --- modes -----------------------------------------------------------------------------------


def test_output_off_means_no_current_and_mode_reads_rest(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-ONE_C)
    bench.run_for(60)
    assert bench.read("current_a") == 0.0
    assert bench.read("mode") == CyclerMode.REST
    bench.set(output_enable=1)
    assert bench.read("mode") == CyclerMode.CC
    bench.run_for(60)
    assert bench.read("current_a") == pytest.approx(-ONE_C)
    bench.set(output_enable=0)
    assert bench.read("current_a") == 0.0  # at once, not only after the next step
    assert bench.read("state") & 1 == 0


def test_rest_mode_gives_zero_current(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.REST, current_setpoint_a=-ONE_C, output_enable=1)
    bench.run_for(60)
    assert bench.read("current_a") == 0.0
    assert bench.read("output_on") == 1


def test_open_contactor_means_no_current(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=ONE_C, output_enable=1, contactor_closed=0)
    bench.run_for(60)
    assert bench.read("current_a") == 0.0
    assert bench.read("contactor_closed") == 0
    bench.set(contactor_closed=1)
    bench.run_for(10)
    assert bench.read("current_a") == pytest.approx(ONE_C)


def test_one_c_cc_discharge_from_full_takes_about_an_hour() -> None:
    bench = Bench(initial_soc=1.0)
    cutoff_v = CELLS * 3.0
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-ONE_C, voltage_setpoint_v=cutoff_v)
    bench.set(output_enable=1)
    seconds = bench.run_until(lambda: bench.read("voltage_v") <= cutoff_v + 0.005)
    capacity_ah = float(bench.pack.model.capacities_ah.mean())
    assert 0.9 * 3600 < seconds < 1.1 * 3600
    assert -bench.read("charge_ah") == pytest.approx(capacity_ah, rel=0.03)  # signed: discharge < 0
    assert bench.read("energy_wh") < -0.9 * capacity_ah * 3.6 * CELLS
    # the voltage setpoint holds the pack at the cut-off instead of running it flat
    bench.run_for(1800)
    assert bench.read("voltage_v") == pytest.approx(cutoff_v, abs=0.01)
    assert -ONE_C < bench.read("current_a") <= 0.0


def test_cccv_charge_tapers_below_c_over_20_at_the_voltage_setpoint() -> None:
    bench = Bench(initial_soc=0.2)
    v_set = CELLS * 4.2
    bench.set(mode_setpoint=CyclerMode.CCCV, current_setpoint_a=ONE_C, voltage_setpoint_v=v_set, output_enable=1)
    currents, voltages = [], []

    def tapered() -> bool:
        currents.append(bench.read("current_a"))
        voltages.append(bench.read("voltage_v"))
        return currents[-1] < ONE_C / 20

    bench.run_until(tapered, every_s=30.0)
    assert max(currents) == pytest.approx(ONE_C)  # CC phase at the setpoint
    assert max(voltages) <= v_set + 1e-3  # never above the setpoint (by more than 1 mV)
    assert voltages[-1] == pytest.approx(v_set, abs=1e-3)  # CV phase holds it
    cv_phase = currents[currents.index(max(currents)) :]
    assert all(b <= a + 1e-6 for a, b in pairwise(cv_phase))  # tapering
    assert currents[-1] > 0.0  # never reverses into a discharge
    assert bench.pack.model.soc > 0.97


def test_cc_charge_without_voltage_setpoint_stops_at_the_rated_voltage() -> None:
    bench = Bench(initial_soc=0.95)
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=2 * ONE_C, output_enable=1)
    bench.run_for(3600, every_s=60.0)  # overcharges into the knee until 80 V
    assert bench.read("voltage_v") == pytest.approx(80.0, abs=1e-3)


def test_cv_holds_the_voltage_with_the_current_limited(bench: Bench) -> None:
    start_v = bench.read("voltage_v")
    # 2 V below the rest voltage needs about 14 A through 0.14 Ohm at first
    bench.set(mode_setpoint=CyclerMode.CV, voltage_setpoint_v=start_v - 2.0, current_setpoint_a=10.0)
    bench.set(output_enable=1)
    bench.run_for(60)
    assert bench.read("current_a") == pytest.approx(-10.0)  # limited, voltage not reached yet
    assert bench.read("voltage_v") > start_v - 2.0
    bench.run_for(7200, every_s=60)
    assert bench.read("voltage_v") == pytest.approx(start_v - 2.0, abs=1e-3)
    assert -10.0 < bench.read("current_a") < 0.0


def test_cp_delivers_the_power_setpoint(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CP, power_setpoint_w=-1000.0, output_enable=1)
    bench.run_for(600)
    assert bench.read("power_w") == pytest.approx(-1000.0, rel=1e-3)
    energy_before = bench.read("energy_wh")
    bench.run_for(360)
    assert bench.read("energy_wh") - energy_before == pytest.approx(-100.0, rel=1e-3)
    bench.set(power_setpoint_w=500.0)
    bench.run_for(10)
    assert bench.read("power_w") == pytest.approx(500.0, rel=1e-3)


def test_current_is_limited_by_the_power_rating() -> None:
    bench = Bench(initial_soc=0.5)
    bench.cycler.rated_power_w = 1000.0
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-50.0, output_enable=1)
    bench.run_for(10)
    assert bench.read("power_w") == pytest.approx(-1000.0, rel=0.02)


def test_counters_are_signed_and_uptime_counts(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=ONE_C / 2, output_enable=1)
    bench.run_for(3600)
    assert bench.read("charge_ah") == pytest.approx(ONE_C / 2, rel=1e-9)
    assert bench.read("energy_wh") > 0
    bench.set(current_setpoint_a=-ONE_C)
    bench.run_for(900)
    assert bench.read("charge_ah") == pytest.approx(ONE_C / 2 - ONE_C / 4, rel=1e-9)
    bench.set(output_enable=0)
    bench.run_for(600)
    assert bench.read("uptime_s") == 5100


@pytest.mark.parametrize("intervals", ["60 s", "irregular"])
def test_result_does_not_depend_on_how_often_it_is_read(intervals: str) -> None:
    reference = Bench(initial_soc=0.8)
    probe = Bench(initial_soc=0.8)
    for b in (reference, probe):
        b.set(mode_setpoint=CyclerMode.CCCV, current_setpoint_a=2 * ONE_C, voltage_setpoint_v=CELLS * 4.15)
        b.set(output_enable=1)
    reference.run_for(3600, every_s=1.0)
    rng = random.Random(3)
    while probe.clock.now < 3600:
        step = 60.0 if intervals == "60 s" else rng.choice([0.001, 0.02, 0.5, 3.7, 17.0, 60.0])
        probe.clock.advance(min(step, 3600 - probe.clock.now))
        probe.read("voltage_v")
    for name, tolerance in (("voltage_v", 1e-3), ("current_a", 0.05), ("charge_ah", 0.01), ("temperature_c", 0.05)):
        assert probe.read(name) == pytest.approx(reference.read(name), abs=tolerance), name


def test_temperature_rises_under_load(bench: Bench) -> None:
    start_c = bench.read("temperature_c")
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-2 * ONE_C, output_enable=1)
    bench.run_for(900)
    assert bench.read("temperature_c") > start_c + 3.0


def test_a_bms_reading_the_pack_sees_the_cycler_current(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=ONE_C, output_enable=1)
    bench.clock.advance(1800)
    snapshot = bench.pack.snapshot()  # a BMS reads first; the cycler still regulated the interval
    assert snapshot.current_a == pytest.approx(ONE_C)
    assert bench.read("charge_ah") == pytest.approx(ONE_C / 2)


# --- watchdog ----------------------------------------------------------------------------


def test_watchdog_keeps_the_output_on_while_kicked_and_trips_after_the_timeout(bench: Bench) -> None:
    bench.set(watchdog_timeout_s=5.0, mode_setpoint=CyclerMode.CC, current_setpoint_a=-10.0, output_enable=1)
    for counter in range(15):  # a host kicking every 4 s for a minute
        bench.clock.advance(4.0)
        bench.set(watchdog_counter=counter % 2)
        assert bench.read("output_on") == 1
    bench.clock.advance(4.99)  # host stops talking
    assert bench.read("output_on") == 1
    assert bench.read("current_a") == pytest.approx(-10.0)
    bench.clock.advance(0.02)
    assert bench.read("output_on") == 0
    assert bench.read("current_a") == 0.0
    assert bench.read("watchdog_tripped") == 1
    assert bench.read("alarm") == 1
    assert bench.read("alarm_code") == CyclerAlarm.WATCHDOG
    assert bench.read("state") == (1 << 3) | (1 << 4)


def test_watchdog_trips_at_the_deadline_even_when_read_rarely(bench: Bench) -> None:
    bench.set(watchdog_timeout_s=5.0, mode_setpoint=CyclerMode.CC, current_setpoint_a=-ONE_C, output_enable=1)
    bench.clock.advance(600.0)  # first read ten minutes later
    assert bench.read("output_on") == 0
    assert bench.read("charge_ah") == pytest.approx(-ONE_C * 5.0 / 3600)  # current stopped at 5 s


def test_watchdog_rewriting_the_same_counter_value_still_refreshes(bench: Bench) -> None:
    bench.set(watchdog_timeout_s=1.0, mode_setpoint=CyclerMode.REST, output_enable=1)
    for _ in range(10):
        bench.clock.advance(0.9)
        bench.set(watchdog_counter=42)
    assert bench.read("output_on") == 1


def test_watchdog_off_when_timeout_is_zero(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.REST, output_enable=1)
    bench.run_for(3600, every_s=600)
    assert bench.read("output_on") == 1
    assert bench.read("watchdog_tripped") == 0


def test_latched_alarm_blocks_output_until_cleared(bench: Bench) -> None:
    bench.set(watchdog_timeout_s=1.0, mode_setpoint=CyclerMode.CC, current_setpoint_a=-5.0, output_enable=1)
    bench.clock.advance(2.0)
    assert bench.read("alarm") == 1
    bench.set(output_enable=1)
    assert bench.read("output_on") == 0  # refused while the alarm is latched
    bench.set(clear_alarm=1)
    assert (bench.read("alarm"), bench.read("watchdog_tripped"), bench.read("alarm_code")) == (0, 0, 0)
    assert bench.read("output_on") == 0  # clearing does not switch the output back on
    bench.set(output_enable=1)
    bench.clock.advance(0.5)
    assert bench.read("output_on") == 1
    assert bench.read("current_a") == pytest.approx(-5.0)


# --- device-side limits ------------------------------------------------------------------


def _run_into_limit(bench: Bench, limit: str, value_from_v: Callable[[float], float], current_a: float) -> None:
    v_now = bench.read("voltage_v")
    bench.set(**{limit: value_from_v(v_now)})
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=current_a, output_enable=1)
    bench.run_until(lambda: bench.read("output_on") == 0, every_s=5.0, max_s=3 * 3600)


@pytest.mark.parametrize(
    ("limit", "value_from_v", "current_a", "code"),
    [
        ("limit_max_voltage_v", lambda v: v + 5.0, ONE_C, CyclerAlarm.OVER_VOLTAGE),
        ("limit_min_voltage_v", lambda v: v - 5.0, -ONE_C, CyclerAlarm.UNDER_VOLTAGE),
        ("limit_max_charge_current_a", lambda v: 20.0, ONE_C, CyclerAlarm.OVER_CHARGE_CURRENT),
        ("limit_max_discharge_current_a", lambda v: 20.0, -ONE_C, CyclerAlarm.OVER_DISCHARGE_CURRENT),
        ("limit_max_temperature_c", lambda v: 28.0, -2 * ONE_C, CyclerAlarm.OVER_TEMPERATURE),
    ],
)
def test_each_device_limit_trips_the_output(
    bench: Bench, limit: str, value_from_v: Callable[[float], float], current_a: float, code: CyclerAlarm
) -> None:
    _run_into_limit(bench, limit, value_from_v, current_a)
    assert bench.read("current_a") == 0.0
    assert bench.read("limit_tripped") == 1
    assert bench.read("alarm") == 1
    assert bench.read("alarm_code") == code
    assert bench.read("watchdog_tripped") == 0


def test_voltage_limit_trips_promptly_after_the_crossing_and_not_before(bench: Bench) -> None:
    limit_v = bench.read("voltage_v") + 5.0
    bench.set(limit_max_voltage_v=limit_v, mode_setpoint=CyclerMode.CC, current_setpoint_a=ONE_C, output_enable=1)
    readings = []
    while bench.read("output_on"):
        readings.append(bench.read("voltage_v"))
        bench.clock.advance(1.0)
    assert len(readings) > 100  # it charged for a while first
    assert limit_v - 0.01 < readings[-1] <= limit_v  # at 1C the voltage moves mV per second


def test_voltage_limit_sees_the_instant_ir_jump(bench: Bench) -> None:
    # 27 A through about 0.12 Ohm of R0 lifts the terminal by about 3 V the moment it starts
    bench.set(limit_max_voltage_v=bench.read("voltage_v") + 1.0, mode_setpoint=CyclerMode.CC)
    bench.set(current_setpoint_a=ONE_C, output_enable=1)
    assert bench.read("alarm_code") == CyclerAlarm.OVER_VOLTAGE


def test_unset_limits_do_not_trip(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-2 * ONE_C, output_enable=1)
    bench.run_for(600)
    assert bench.read("output_on") == 1


def test_first_alarm_cause_is_kept(bench: Bench) -> None:
    bench.set(limit_max_discharge_current_a=5.0, mode_setpoint=CyclerMode.CC, current_setpoint_a=-10.0)
    bench.set(output_enable=1)
    bench.set(limit_min_voltage_v=100.0)
    bench.run_for(10)
    assert bench.read("alarm_code") == CyclerAlarm.OVER_DISCHARGE_CURRENT


# --- fault hooks -----------------------------------------------------------------------------


def test_ignore_output_off_ignores_the_next_n_commands(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-ONE_C, output_enable=1)
    bench.cycler.ignore_output_off(2)
    for _ in range(2):
        bench.set(output_enable=0)
        bench.run_for(10)
        assert bench.read("output_on") == 1
        assert bench.read("current_a") == pytest.approx(-ONE_C)
    bench.set(output_enable=0)
    assert bench.read("output_on") == 0
    assert bench.read("current_a") == 0.0


def test_ignore_output_off_does_not_stop_device_protection(bench: Bench) -> None:
    bench.cycler.ignore_output_off(5)
    bench.set(limit_max_discharge_current_a=5.0, mode_setpoint=CyclerMode.CC, current_setpoint_a=-10.0)
    bench.set(output_enable=1)
    bench.run_for(2)
    assert bench.read("output_on") == 0


def test_frozen_cycler_keeps_its_current_and_stale_readings(bench: Bench) -> None:
    bench.set(mode_setpoint=CyclerMode.CC, current_setpoint_a=-ONE_C, output_enable=1)
    bench.run_for(10, every_s=1.0)
    bench.set(watchdog_timeout_s=2.0)  # a hung firmware does not run its own watchdog either
    stale_v = bench.read("voltage_v")
    bench.cycler.freeze()
    bench.set(output_enable=0)  # ignored: the firmware hangs
    bench.clock.advance(600)
    assert bench.read("voltage_v") == stale_v
    assert bench.read("output_on") == 1
    assert bench.pack.snapshot().current_a == pytest.approx(-ONE_C)  # the pack keeps discharging
    assert bench.pack.model.pack_voltage_v < stale_v - 0.1
    bench.cycler.unfreeze()
    assert bench.read("voltage_v") < stale_v - 0.1  # readings live again
    bench.set(output_enable=0)
    assert bench.read("current_a") == 0.0


def test_pack_faults_reach_the_cycler_limits(bench: Bench) -> None:
    bench.set(limit_max_temperature_c=40.0, mode_setpoint=CyclerMode.REST, output_enable=1)
    bench.pack.model.set_cell_heating(3, 1.0)
    seconds = bench.run_until(lambda: bench.read("output_on") == 0, every_s=1.0, max_s=60)
    assert 14.0 <= seconds <= 17.0  # 25 -> 40 degC at 1 degC/s
    assert bench.read("alarm_code") == CyclerAlarm.OVER_TEMPERATURE


def test_only_one_load_per_pack(bench: Bench) -> None:
    with pytest.raises(RuntimeError, match="another load is already attached"):
        SimCycler(bench.pack, bench.clock, rated_voltage_v=80.0, rated_current_a=10.0, rated_power_w=100.0)
    with pytest.raises(RuntimeError, match=r"a load \(cycler\) is attached"):
        bench.pack.set_current(1.0)


def test_no_spread_pack_is_accepted() -> None:
    clock = ManualClock()
    pack = SimPack(PackModel(PackParams(spread=NO_SPREAD)), clock)
    cycler = SimCycler(pack, clock, rated_voltage_v=60.0, rated_current_a=30.0, rated_power_w=2000.0)
    assert cycler.read("voltage_v") == pytest.approx(CELLS * 3.71)
