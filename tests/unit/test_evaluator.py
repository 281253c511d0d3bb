"""The live evaluator: debounce, hysteresis, latching, derived quantities, bad data."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from daq.clock import ManualClock
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.safety import AlarmEvent, Evaluator, LimitSet

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
N_CELLS = 4


def ts(t_s: float) -> int:
    return T0 + round(t_s * NS)


def bms_schema(device: str = "bms-1") -> DeviceSchema:
    channels = [Channel("voltage_v", "V"), Channel("current_a", "A"), Channel("soc_pct", "%")]
    channels += [Channel(f"cell{n}_v", "V") for n in range(1, N_CELLS + 1)]
    channels += [Channel("temp1_c", "degC"), Channel("temp2_c", "degC"), Channel("alarm_level")]
    return DeviceSchema(device, "bms", tuple(channels))


def cycler_schema(device: str = "cycler-1") -> DeviceSchema:
    channels = (Channel("voltage_v", "V"), Channel("current_a", "A"), Channel("temperature_c", "degC"))
    return DeviceSchema(device, "cycler", channels)


BMS = bms_schema()
CYCLER = cycler_schema()


def record(
    schema: DeviceSchema,
    t_s: float,
    *,
    quality: dict[str, Quality] | None = None,
    run_id: str = "",
    step: int = 0,
    **values: float,
) -> Record:
    """A record with plausible defaults: 3.7 V cells at 25 degC, no current, no alarm."""
    defaults: dict[str, float] = {"current_a": 0.0, "soc_pct": 50.0, "temperature_c": 25.0, "alarm_level": 0.0}
    defaults |= {f"cell{n}_v": 3.7 for n in range(1, N_CELLS + 1)}
    defaults |= {"temp1_c": 25.0, "temp2_c": 25.0}
    defaults |= values
    if "voltage_v" not in values:
        cells = [defaults[f"cell{n}_v"] for n in range(1, N_CELLS + 1)]
        defaults["voltage_v"] = sum(cells) if schema.kind == "bms" else 14.8
    row = [defaults[name] for name in schema.names]
    q = bytearray(len(row))
    for name, code in (quality or {}).items():
        q[schema.index[name]] = int(code)
    return Record(schema, ts(t_s), row, bytes(q), run_id=run_id, step=step)


def summary(events: list[AlarmEvent]) -> list[tuple[str, str, str, str]]:
    return [(e.kind, e.limit, e.device, e.channel) for e in events]


def feed(evaluator: Evaluator, records: list[Record]) -> list[AlarmEvent]:
    events: list[AlarmEvent] = []
    for r in records:
        events += evaluator.evaluate(r)
    return events


def on_bms(channel: str, scale: float = 1.0, offset: float = 0.0) -> Callable[[float, float], Record]:
    return lambda t, v: record(BMS, t, **{channel: offset + scale * v})


def on_cycler(channel: str, scale: float = 1.0) -> Callable[[float, float], Record]:
    return lambda t, v: record(CYCLER, t, **{channel: scale * v})


# (limit, warn/trip, record with the value, channel, normal value, warning value, trip value)
Case = tuple[str, dict[str, Any], Callable[[float, float], Record], str, float, float, float]
THRESHOLD_CASES: list[Case] = [
    ("cell_voltage_max_v", {"warn": 4.22, "trip": 4.25}, on_bms("cell3_v"), "cell3_v", 4.1, 4.23, 4.26),
    ("cell_voltage_min_v", {"warn": 2.9, "trip": 2.8}, on_bms("cell2_v"), "cell2_v", 3.6, 2.85, 2.75),
    ("pack_voltage_max_v", {"warn": 59.0, "trip": 59.5}, on_cycler("voltage_v"), "voltage_v", 55, 59.2, 60),
    ("pack_voltage_min_v", {"warn": 40.6, "trip": 39.2}, on_cycler("voltage_v"), "voltage_v", 50, 40, 39),
    ("charge_current_max_a", {"warn": 30, "trip": 32}, on_cycler("current_a"), "current_a", -60, 31, 33),
    ("discharge_current_max_a", {"warn": 54, "trip": 60}, on_cycler("current_a", -1), "current_a", 0, 55, 61),
    ("cell_temperature_max_c", {"warn": 50, "trip": 55}, on_bms("temp2_c"), "temp2_c", 30, 51, 56),
    ("cell_temperature_min_c", {"warn": 0, "trip": -10}, on_bms("temp1_c"), "temp1_c", 20, -1, -11),
    ("pack_temperature_max_c", {"warn": 50, "trip": 55}, on_cycler("temperature_c"), "temperature_c", 30, 51, 56),
    ("pack_temperature_min_c", {"warn": 0, "trip": -10}, on_cycler("temperature_c"), "temperature_c", 20, -1, -11),
    (
        "cell_voltage_spread_max_v",
        {"warn": 0.1, "trip": 0.2},
        on_bms("cell4_v", -1, 3.7),
        "cell_spread_v",
        0,
        0.15,
        0.25,
    ),
    ("bms_alarm_level", {"warn": 1, "trip": 2}, on_bms("alarm_level"), "alarm_level", 0, 1, 2),
]


@pytest.mark.parametrize("case", THRESHOLD_CASES, ids=[c[0] for c in THRESHOLD_CASES])
def test_each_limit_warns_then_trips_after_its_persistence(case: Case):
    limit, spec, make, channel, normal, warn_value, trip_value = case
    evaluator = Evaluator(LimitSet.model_validate({limit: {**spec, "persistence_s": 1.0}}))
    device = make(0, normal).device

    assert evaluator.evaluate(make(0.0, normal)) == []
    assert evaluator.evaluate(make(1.0, warn_value)) == []  # condition starts; persistence not yet met
    raised = evaluator.evaluate(make(2.0, warn_value))
    assert summary(raised) == [("raised", limit, device, channel)]
    assert raised[0].level == "warning" and raised[0].t_ns == ts(2.0)
    assert raised[0].threshold == pytest.approx(spec["warn"])
    assert evaluator.evaluate(make(3.0, trip_value)) == []
    assert evaluator.evaluate(make(3.5, trip_value)) == []
    tripped = evaluator.evaluate(make(4.0, trip_value))
    assert summary(tripped) == [("tripped", limit, device, channel)]
    assert tripped[0].level == "trip" and tripped[0].threshold == pytest.approx(spec["trip"])
    assert evaluator.tripped
    cleared = evaluator.evaluate(make(5.0, normal))
    assert summary(cleared) == [("cleared", limit, device, channel)]
    assert evaluator.tripped  # the trip stays latched


def test_condition_shorter_than_persistence_raises_nothing():
    limits = LimitSet(cell_voltage_max_v={"warn": 4.22, "trip": 4.25, "persistence_s": 1.0})
    evaluator = Evaluator(limits)
    events = feed(evaluator, [record(BMS, t, cell1_v=4.3) for t in (0.0, 0.5, 0.9)] + [record(BMS, 1.0)])
    events += feed(evaluator, [record(BMS, t, cell1_v=4.3) for t in (1.1, 1.6)])
    assert events == []


def test_trip_message_names_channel_value_threshold_duration_and_device():
    evaluator = Evaluator(LimitSet(cell_voltage_max_v={"trip": 4.25, "persistence_s": 0.5}))
    schema = bms_schema()
    channels = [*schema.channels[:3], *(Channel(f"cell{n}_v", "V") for n in range(1, 8))]
    big = DeviceSchema("bms-1", "bms", tuple(channels))
    row = [25.9, 0.0, 50.0, 3.7, 3.7, 3.7, 3.7, 3.7, 3.7, 4.251]
    evaluator.evaluate(Record(big, ts(0), row, bytes(len(row))))
    (event,) = evaluator.evaluate(Record(big, ts(0.5), row, bytes(len(row))))
    assert event.message == "cell7_v 4.251 V above trip 4.25 V for 0.5 s on bms-1"


def test_hysteresis_holds_a_warning_until_the_value_is_clearly_back():
    limits = LimitSet(cell_voltage_max_v={"warn": 4.2, "hysteresis": 0.05})
    evaluator = Evaluator(limits)
    assert summary(evaluator.evaluate(record(BMS, 0, cell1_v=4.21))) == [
        ("raised", "cell_voltage_max_v", "bms-1", "cell1_v")
    ]
    assert evaluator.evaluate(record(BMS, 1, cell1_v=4.18)) == []  # inside the band: still raised
    assert evaluator.evaluate(record(BMS, 2, cell1_v=4.16)) == []
    assert [e.kind for e in evaluator.active_alarms()] == ["raised"]
    cleared = evaluator.evaluate(record(BMS, 3, cell1_v=4.14))
    assert summary(cleared) == [("cleared", "cell_voltage_max_v", "bms-1", "cell1_v")]
    assert cleared[0].message == "cell1_v 4.14 V back below warning 4.2 V on bms-1"
    assert evaluator.active_alarms() == []


def test_trip_latches_until_acknowledged_and_retrips_if_still_beyond():
    clock = ManualClock()
    limits = LimitSet(cell_voltage_min_v={"trip": 2.8})
    evaluator = Evaluator(limits, clock_ns=clock.wall_ns)
    (trip,) = evaluator.evaluate(record(BMS, 0, cell2_v=2.7))
    assert trip.kind == "tripped" and evaluator.trip_reasons() == [trip]
    assert feed(evaluator, [record(BMS, t) for t in (1, 2, 3)]) == []  # back to normal: still latched
    assert evaluator.evaluate(record(BMS, 4, cell2_v=2.7)) == []  # latched: no duplicate trip
    assert evaluator.tripped and evaluator.active_alarms() == [trip]

    (ack,) = evaluator.acknowledge("alice", ts(5))
    assert (ack.kind, ack.who, ack.limit, ack.t_ns) == ("acknowledged", "alice", "cell_voltage_min_v", ts(5))
    assert "acknowledged by alice" in ack.message
    assert not evaluator.tripped and evaluator.acknowledge("alice", ts(5)) == []

    (again,) = evaluator.evaluate(record(BMS, 6, cell2_v=2.7))  # condition still holds: trips again
    assert again.kind == "tripped" and evaluator.tripped
    with pytest.raises(ValueError, match="who"):
        evaluator.acknowledge("")


def test_step_limits_tighten_and_release_at_runtime():
    limits = LimitSet.model_validate(
        {
            "charge_current_max_a": {"warn": 29.7, "trip": 32.4},
            "steps": {"rest": {"charge_current_max_a": {"warn": 0.5, "trip": 1.0, "persistence_s": 0}}},
        }
    )
    evaluator = Evaluator(limits)
    assert evaluator.evaluate(record(CYCLER, 0, current_a=0.7)) == []
    assert evaluator.set_step_limits(limits.for_step("rest"), ts(1)) == []
    assert evaluator.limits.charge_current_max_a is not None and evaluator.limits.charge_current_max_a.trip == 1.0
    assert summary(evaluator.evaluate(record(CYCLER, 2, current_a=0.7))) == [
        ("raised", "charge_current_max_a", "cycler-1", "current_a")
    ]
    assert summary(evaluator.evaluate(record(CYCLER, 3, current_a=1.5))) == [
        ("tripped", "charge_current_max_a", "cycler-1", "current_a")
    ]
    # back to the global limits: 0.7 A is fine again, the warning clears at the next sample
    assert evaluator.set_step_limits(limits, ts(4)) == []
    assert summary(evaluator.evaluate(record(CYCLER, 5, current_a=0.7))) == [
        ("cleared", "charge_current_max_a", "cycler-1", "current_a")
    ]
    assert evaluator.tripped  # the step's trip stays latched


def test_a_limit_that_disappears_at_a_step_change_clears_its_warning():
    base = LimitSet(step_duration_max_s={"warn": 1.0})
    evaluator = Evaluator(base)
    feed(evaluator, [record(CYCLER, t, run_id="r1", step=1) for t in (0, 2)])
    assert [e.kind for e in evaluator.active_alarms()] == ["raised"]
    (cleared,) = evaluator.set_step_limits(LimitSet(), ts(3))
    assert cleared.kind == "cleared" and "no longer applies" in cleared.message
    assert evaluator.active_alarms() == []


def test_stale_device_trips_through_check_stale_and_recovers():
    clock = ManualClock()
    limits = LimitSet(data_age_max_s={"warn": 2.0, "trip": 5.0})
    evaluator = Evaluator(limits, clock_ns=clock.wall_ns)
    start = clock.wall_ns()
    evaluator.evaluate(Record(CYCLER, start, [14.8, 0.0, 25.0], bytes(3)))
    clock.advance(1.9)
    assert evaluator.check_stale() == []
    clock.advance(0.1)
    assert summary(evaluator.check_stale()) == [("raised", "data_age_max_s", "cycler-1", "data_age_s")]
    clock.advance(3.0)
    (trip,) = evaluator.check_stale()
    assert trip.kind == "tripped" and trip.value == pytest.approx(5.0)
    assert trip.message == "cycler-1: no good data for 5 s (trip at 5 s)"
    (cleared,) = evaluator.evaluate(Record(CYCLER, clock.wall_ns(), [14.8, 0.0, 25.0], bytes(3)))
    assert cleared.kind == "cleared" and evaluator.tripped


def test_records_with_bad_cell_quality_count_as_no_data():
    limits = LimitSet(data_age_max_s={"trip": 5.0})
    evaluator = Evaluator(limits)
    evaluator.evaluate(record(BMS, 0))
    bad_cells = {"cell3_v": Quality.BAD_FRAME}
    events = feed(evaluator, [record(BMS, t, quality=bad_cells) for t in (1, 2, 3, 4)])
    assert events == []
    (trip,) = evaluator.evaluate(record(BMS, 5, quality=bad_cells))
    assert (trip.kind, trip.limit, trip.device) == ("tripped", "data_age_max_s", "bms-1")
    # a failed poll (no values at all) is no data either
    other = Evaluator(limits)
    other.evaluate(record(BMS, 0))
    assert other.evaluate(Record.failed(BMS, ts(4.9), Quality.TIMEOUT)) == []
    assert [e.kind for e in other.evaluate(Record.failed(BMS, ts(5.0), Quality.TIMEOUT))] == ["tripped"]


def test_expected_device_that_never_answers_trips():
    limits = LimitSet.model_validate({"data_age_max_s_per_device": {"bms-2": {"trip": 3.0}}})
    evaluator = Evaluator(limits)
    evaluator.evaluate(record(CYCLER, 0))  # no global limit: the cycler is not watched
    assert evaluator.check_stale(ts(2.9)) == []
    assert summary(evaluator.check_stale(ts(3.0))) == [("tripped", "data_age_max_s", "bms-2", "data_age_s")]


def test_check_stale_needs_a_time():
    with pytest.raises(ValueError, match="clock_ns"):
        Evaluator(LimitSet()).check_stale()


@pytest.mark.parametrize(
    ("value", "quality"),
    [(math.nan, Quality.GOOD), (-40.0, Quality.OUT_OF_RANGE), (math.nan, Quality.OUT_OF_RANGE)],
)
def test_open_thermistor_trips_and_never_reads_as_cool(value: float, quality: Quality):
    limits = LimitSet(cell_temperature_min_c={"warn": 0, "trip": -10})  # sensor faults trip by default
    evaluator = Evaluator(limits)
    assert evaluator.evaluate(record(BMS, 0)) == []
    (trip,) = evaluator.evaluate(record(BMS, 1, temp1_c=value, quality={"temp1_c": quality}))
    assert summary([trip]) == [("tripped", "temperature_sensor_fault", "bms-1", "temp1_c")]
    assert math.isnan(trip.value) and "open or out of range" in trip.message
    assert all(e.limit != "cell_temperature_min_c" for e in evaluator.active_alarms())


def test_sensor_fault_policy_warning_with_persistence_and_off():
    warn_only = LimitSet.model_validate({"temperature_sensor_fault": {"level": "warning", "persistence_s": 1.0}})
    evaluator = Evaluator(warn_only)
    open_sensor = {"quality": {"temp2_c": Quality.OUT_OF_RANGE}}
    assert evaluator.evaluate(record(BMS, 0, **open_sensor)) == []
    (raised,) = evaluator.evaluate(record(BMS, 1, **open_sensor))
    assert (raised.kind, raised.level) == ("raised", "warning") and not evaluator.tripped
    assert [e.kind for e in evaluator.evaluate(record(BMS, 2))] == ["cleared"]
    off = Evaluator(LimitSet.model_validate({"temperature_sensor_fault": {"level": "off"}}))
    assert feed(off, [record(BMS, t, **open_sensor) for t in range(5)]) == []


def test_temperature_rise_rate_trips_after_persistence():
    limits = LimitSet(temperature_rise_max_c_per_s={"trip": 1.0, "window_s": 1.0, "persistence_s": 3.0})
    evaluator = Evaluator(limits)
    events: list[AlarmEvent] = []
    for k in range(41):  # every 0.5 s; from t = 10 s temp1 rises 1.5 degC/s
        t = k * 0.5
        temp = 25.0 + max(0.0, t - 10.0) * 1.5
        events += evaluator.evaluate(record(BMS, t, temp1_c=temp))
    (trip,) = events
    # rate first reaches 1.5 at t = 11 (difference over 1 s); it has held 3 s at t = 14
    assert (trip.kind, trip.limit, trip.channel, trip.t_ns) == (
        "tripped",
        "temperature_rise_max_c_per_s",
        "temp1_c",
        ts(14),
    )
    assert trip.value == pytest.approx(1.5)


def test_slow_temperature_rise_does_not_trip():
    limits = LimitSet(temperature_rise_max_c_per_s={"trip": 1.0, "window_s": 1.0, "persistence_s": 3.0})
    evaluator = Evaluator(limits)
    events = feed(evaluator, [record(BMS, k * 0.5, temp1_c=25.0 + k * 0.5 * 0.5) for k in range(60)])
    assert events == []


def test_cell_spread_ignores_bad_cells():
    limits = LimitSet(cell_voltage_spread_max_v={"trip": 0.2})
    evaluator = Evaluator(limits)
    # cell4 is far off but its reading is bad: no spread alarm from it
    bad = record(BMS, 0, cell4_v=2.0, quality={"cell4_v": Quality.OUT_OF_RANGE})
    assert evaluator.evaluate(bad) == []
    (trip,) = evaluator.evaluate(record(BMS, 1, cell4_v=3.45))
    assert trip.channel == "cell_spread_v" and trip.value == pytest.approx(0.25)


def test_current_mismatch_with_percentage_tolerance():
    limits = LimitSet(current_mismatch_a={"trip": 3.0, "tolerance_pct": 2.0, "window_s": 1.0})
    evaluator = Evaluator(limits)
    assert evaluator.evaluate(record(CYCLER, 0.0, current_a=-50.0)) == []
    # 3.5 A apart is above 3 A but inside 3 A + 2 % of 50 A
    assert evaluator.evaluate(record(BMS, 0.2, current_a=-46.5)) == []
    (trip,) = evaluator.evaluate(record(BMS, 0.4, current_a=-45.5))
    assert summary([trip]) == [("tripped", "current_mismatch_a", "bms-1", "current_a")]
    assert trip.value == pytest.approx(4.5) and trip.threshold == pytest.approx(4.0)
    assert "cycler-1" in trip.message


def test_current_mismatch_only_compares_readings_close_in_time():
    limits = LimitSet(current_mismatch_a={"trip": 3.0, "window_s": 1.0})
    evaluator = Evaluator(limits)
    evaluator.evaluate(record(CYCLER, 0.0, current_a=-50.0))
    assert evaluator.evaluate(record(BMS, 1.5, current_a=0.0)) == []  # 1.5 s apart: not compared
    assert [e.kind for e in evaluator.evaluate(record(CYCLER, 2.0, current_a=-50.0))] == ["tripped"]


def test_bad_quality_and_nan_values_are_not_judged_and_do_not_reset_debounce():
    limits = LimitSet(cell_voltage_max_v={"trip": 4.25, "persistence_s": 1.0})
    evaluator = Evaluator(limits)
    assert evaluator.evaluate(record(BMS, 0.0, cell1_v=4.3)) == []
    # a timed-out poll and a NaN reading in between neither end nor reset the condition
    assert evaluator.evaluate(Record.failed(BMS, ts(0.5), Quality.TIMEOUT)) == []
    assert evaluator.evaluate(record(BMS, 0.7, cell1_v=math.nan)) == []
    assert evaluator.evaluate(record(BMS, 0.8, cell1_v=9.9, quality={"cell1_v": Quality.BAD_FRAME})) == []
    (trip,) = evaluator.evaluate(record(BMS, 1.0, cell1_v=4.3))
    assert trip.kind == "tripped" and trip.message.endswith("for 1 s on bms-1")


def test_capacity_energy_and_time_overrun_per_step_only_inside_a_test():
    limits = LimitSet(
        step_capacity_max_ah={"warn": 1.5, "trip": 2.0},
        step_energy_max_wh={"trip": 200.0},
        step_duration_max_s={"trip": 250.0},
    )
    evaluator = Evaluator(limits)
    # 36 A for 100 s = 1 Ah; 50 V * 36 A for 100 s = 50 Wh
    outside = feed(evaluator, [record(CYCLER, t, current_a=36.0, voltage_v=50.0) for t in range(0, 400, 100)])
    assert outside == []  # no run id: not in a test
    events = feed(
        evaluator,
        [record(CYCLER, t, current_a=36.0, voltage_v=50.0, run_id="r1", step=1) for t in range(1000, 1400, 100)],
    )
    assert [(e.kind, e.limit, e.device, e.channel, e.t_ns) for e in events] == [
        ("raised", "step_capacity_max_ah", "cycler-1", "step_ah", ts(1200)),
        ("tripped", "step_capacity_max_ah", "cycler-1", "step_ah", ts(1200)),
        ("tripped", "step_duration_max_s", "cycler-1", "step_s", ts(1300)),
    ]
    assert events[1].value == 2.0
    # the next step starts from zero: the capacity warning clears
    (cleared,) = evaluator.evaluate(record(CYCLER, 1400, current_a=36.0, voltage_v=50.0, run_id="r1", step=2))
    assert (cleared.kind, cleared.limit) == ("cleared", "step_capacity_max_ah")


def test_energy_overrun():
    evaluator = Evaluator(LimitSet(test_energy_max_wh={"trip": 100.0}))
    records = [
        record(CYCLER, t, current_a=-36.0, voltage_v=50.0, run_id="r1", step=s) for t, s in ((0, 1), (100, 2), (200, 3))
    ]
    (trip,) = feed(evaluator, records)
    assert (trip.limit, trip.channel, trip.t_ns, trip.value) == ("test_energy_max_wh", "test_wh", ts(200), 100.0)


def test_schema_seen_again_reuses_state_and_events_round_trip():
    limits = LimitSet(cell_voltage_max_v={"warn": 4.2, "trip": 4.25, "persistence_s": 1.0})
    evaluator = Evaluator(limits)
    evaluator.evaluate(record(BMS, 0, cell1_v=4.3))
    # an equal schema object (e.g. rebuilt after a reconnect) continues the same condition
    (raised, trip) = evaluator.evaluate(record(bms_schema(), 1, cell1_v=4.3))
    assert (raised.kind, trip.kind) == ("raised", "tripped")
    for event in (raised, trip):
        assert AlarmEvent.from_dict(event.to_dict()) == event
    sensor = AlarmEvent(1, "tripped", "temperature_sensor_fault", "trip", "bms-1", "temp1_c", math.nan, math.nan, "m")
    data = sensor.to_dict()
    assert data["value"] is None and data["threshold"] is None
    back = AlarmEvent.from_dict(data)
    assert math.isnan(back.value) and back.message == "m"
