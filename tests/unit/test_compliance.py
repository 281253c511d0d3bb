"""After-the-fact compliance check: excursions, verdict, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daq.records import Channel, DeviceSchema, Record
from daq.safety import LimitSet, check_run, format_table, load_limits

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "limits"
N_CELLS = 14

BMS = DeviceSchema(
    "bms-1",
    "bms",
    (
        Channel("voltage_v", "V"),
        Channel("current_a", "A"),
        *(Channel(f"cell{n}_v", "V") for n in range(1, N_CELLS + 1)),
        Channel("temp1_c", "degC"),
        Channel("alarm_level"),
    ),
)
CYCLER = DeviceSchema(
    "cycler-1", "cycler", (Channel("voltage_v", "V"), Channel("current_a", "A"), Channel("temperature_c", "degC"))
)


def ts(t_s: float) -> int:
    return T0 + round(t_s * NS)


def bench_run(
    cell3_v: dict[float, float],
    *,
    duration_s: float = 30.0,
    period_s: float = 0.5,
    current_a: float = 13.5,
    step_of: dict[float, int] | None = None,
    bms_silent: tuple[float, float] | None = None,
    cells_v: float = 4.10,
) -> list[Record]:
    """A charge at C/2 with cells at ``cells_v``; ``cell3_v`` overrides cell 3 from the given times on."""
    records: list[Record] = []
    level = cells_v
    step = 1
    for k in range(round(duration_s / period_s) + 1):
        t = k * period_s
        level = cell3_v.get(t, level)
        step = (step_of or {}).get(t, step)
        cells = [cells_v] * N_CELLS
        cells[2] = level
        pack = sum(cells)
        if not (bms_silent and bms_silent[0] < t < bms_silent[1]):
            row = [pack, current_a, *cells, 25.0, 0.0]
            records.append(Record(BMS, ts(t), row, bytes(len(row)), run_id="r1", step=step))
        row = [pack, current_a, 25.0]
        records.append(Record(CYCLER, ts(t), row, bytes(len(row)), run_id="r1", step=step))
    return records


LIMITS = LimitSet(cell_voltage_max_v={"warn": 4.22, "trip": 4.25, "persistence_s": 0.5, "hysteresis": 0.02})


def test_known_excursion_has_exact_start_end_and_peak():
    run = bench_run({10.0: 4.23, 10.5: 4.26, 11.0: 4.27, 11.5: 4.26, 12.0: 4.24, 13.0: 4.21, 14.0: 4.19})
    result = check_run(run, LIMITS)
    assert result.verdict == "fail" and not result.passed
    assert [(e.level, e.limit, e.device, e.channel) for e in result.excursions] == [
        ("warning", "cell_voltage_max_v", "bms-1", "cell3_v"),
        ("trip", "cell_voltage_max_v", "bms-1", "cell3_v"),
    ]
    warning, trip = result.excursions
    # trip: first sample at/above 4.25 V at 10.5 s, first sample back below it at 12.0 s
    assert (trip.start_ns, trip.end_ns, trip.peak, trip.threshold) == (ts(10.5), ts(12.0), 4.27, 4.25)
    # warning: from 10.0 s until the value is back below 4.22 - 0.02 V (at 14.0 s, not 13.0 s)
    assert (warning.start_ns, warning.end_ns, warning.peak, warning.threshold) == (ts(10.0), ts(14.0), 4.27, 4.22)
    assert trip.ended and warning.duration_s == pytest.approx(4.0)


def test_excursion_shorter_than_persistence_is_not_counted():
    run = bench_run({10.0: 4.30, 10.5: 4.10})  # one sample only: held 0 s < 0.5 s
    result = check_run(run, LIMITS)
    assert result.excursions == () and result.verdict == "pass"


def test_clean_run_passes_demo_limits_and_fails_the_strict_spec():
    run = bench_run({5.0: 4.21}, cells_v=4.18)  # within the demo window, above the strict spec's 4.205 V trip
    demo = check_run(run, load_limits(CONFIGS / "demo_nmc_14s.yaml"))
    assert demo.verdict == "pass" and demo.excursions == ()
    assert "no excursions" in format_table(demo) and "verdict: PASS" in format_table(demo)
    strict = check_run(run, load_limits(CONFIGS / "strict_spec.yaml"))
    assert strict.verdict == "fail"
    trip = next(e for e in strict.trips if e.limit == "cell_voltage_max_v")
    assert (trip.channel, trip.start_ns, trip.end_ns, trip.ended) == ("cell3_v", ts(5.0), ts(30.0), False)


def test_warnings_pass_unless_strict():
    run = bench_run({10.0: 4.23, 12.0: 4.10})
    lenient = check_run(run, LIMITS)
    assert lenient.verdict == "pass" and len(lenient.warnings) == 1 and lenient.trips == ()
    strict = check_run(run, LIMITS, strict=True)
    assert strict.verdict == "fail" and "strict" in strict.rule


def test_step_overrides_apply_by_step_name():
    limits = LimitSet.model_validate(
        {
            "charge_current_max_a": {"warn": 29.7, "trip": 32.4, "persistence_s": 1.0},
            "steps": {"rest": {"charge_current_max_a": {"warn": 0.5, "trip": 1.0, "persistence_s": 1.0}}},
        }
    )
    run = bench_run({}, current_a=1.5, step_of={0.0: 1, 10.0: 2, 20.0: 3})
    assert check_run(run, limits).verdict == "pass"  # no step is called "rest"
    result = check_run(run, limits, step_names={1: "charge", 2: "rest", 3: "charge"})
    assert result.verdict == "fail"
    # both devices read 1.5 A during rest; the step ends at 20 s (back to global limits)
    assert {(e.level, e.device, e.start_ns, e.end_ns) for e in result.excursions} == {
        ("warning", "bms-1", ts(10.0), ts(20.0)),
        ("warning", "cycler-1", ts(10.0), ts(20.0)),
        ("trip", "bms-1", ts(10.0), ts(20.0)),
        ("trip", "cycler-1", ts(10.0), ts(20.0)),
    }


def test_silent_device_shows_as_lost_communication():
    limits = LimitSet(data_age_max_s={"trip": 5.0})
    run = bench_run({}, bms_silent=(10.0, 20.0))  # last BMS record at 10 s, next at 20 s
    (lost,) = check_run(run, limits).excursions
    assert (lost.limit, lost.device, lost.channel) == ("data_age_max_s", "bms-1", "data_age_s")
    assert (lost.start_ns, lost.end_ns, lost.peak) == (ts(15.0), ts(20.0), 9.5)


def test_json_and_table_rendering():
    run = bench_run({10.0: 4.26, 11.0: 4.10})
    result = check_run(run, LIMITS)
    data = result.to_json()
    assert list(data) == [
        "verdict",
        "rule",
        "strict",
        "limits",
        "records",
        "start_ns",
        "end_ns",
        "trips",
        "warnings",
        "excursions",
    ]
    assert (data["verdict"], data["records"], data["trips"], data["warnings"]) == ("fail", len(run), 1, 1)
    trip = data["excursions"][1]
    assert (trip["level"], trip["start_s"], trip["end_s"], trip["peak"]) == ("trip", 10.0, 11.0, 4.26)
    json.dumps(data, allow_nan=False)
    table = format_table(result)
    lines = table.splitlines()
    assert lines[1].split() == [
        "level",
        "limit",
        "device",
        "channel",
        "start_s",
        "end_s",
        "dur_s",
        "peak",
        "threshold",
        "unit",
        "step",
        "step_limits",
    ]
    row = ["trip", "cell_voltage_max_v", "bms-1", "cell3_v", "10", "11", "1", "4.26", "4.25", "V", "1", "global"]
    assert lines[3].split() == row
    assert (trip["step"], trip["step_limits"]) == (1, "global")
    assert lines[-1].startswith("verdict: FAIL  (1 trip, 1 warning; rule: fail on any trip-level excursion")


def test_open_sensor_excursion_renders_without_nan():
    schema = DeviceSchema("bms-1", "bms", (Channel("temp1_c", "degC"),))
    run = [Record(schema, ts(t), [float("nan")], bytes(1)) for t in range(3)]
    result = check_run(run, LimitSet())
    (fault,) = result.excursions
    assert (fault.limit, fault.level, fault.ended) == ("temperature_sensor_fault", "trip", False)
    json.dumps(result.to_json(), allow_nan=False)
    assert "2+" in format_table(result)


def test_empty_run():
    result = check_run([], LIMITS)
    assert (result.records, result.verdict, result.excursions) == (0, "pass", ())


def test_recorded_limit_switches_judge_each_record_by_the_limits_active_at_its_time():
    from daq.safety.step_limits import LimitSwitch, rebuilt_switches, step_limit_set

    run = bench_run({10.0: 4.23, 11.0: 4.10})  # 4.23 V passes the global trip (4.25)
    tight = step_limit_set(LIMITS, None, [{"cell_voltage_max_v": {"warn": 4.15, "trip": 4.2}}])
    switches = [LimitSwitch(ts(5.0), tight, "profile"), LimitSwitch(ts(11.0), LIMITS, "global")]
    result = check_run(run, LIMITS, switches=switches)
    (trip,) = result.trips
    assert (trip.threshold, trip.start_ns) == (4.2, ts(10.0))
    assert result.context(result.excursions.index(trip)).limits == "profile"
    assert check_run(run, LIMITS).trips == ()  # without the switch: the global limits pass it

    # rebuilt on another spec: an override looser than that spec is noted and not applied
    recorded = [(ts(5.0), {"step": "charge", "step_number": 2, "label": "step 2 (cc)", "overrides": [
        {"cell_voltage_max_v": {"warn": 4.24, "trip": 4.3}}
    ]})]  # fmt: skip
    strict = step_limit_set(LIMITS, None, [{"cell_voltage_max_v": {"warn": 4.1, "trip": 4.15}}])
    (switch,), notes = rebuilt_switches(recorded, strict)
    assert switch.limits.cell_voltage_max_v.trip == 4.15 and switch.label == "global"
    assert notes and notes[0].startswith("step 2 (cc): its own limits do not tighten")
    assert "cell_voltage_max_v.trip: 4.3 is higher than the global 4.15" in notes[0]
