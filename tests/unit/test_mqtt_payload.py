"""MQTT topics and JSON payloads: valid JSON for every value, units and quality per channel,
historical flag, device states, and the active-alarm set rebuilt from events."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from daq.journal import JournalEvent
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks.mqtt_payload import (
    ActiveAlarms,
    MqttTopics,
    RecordPayloads,
    alarm_transition,
    bench_status_payload,
    device_state,
)

BMS = DeviceSchema("bms-1", "bms", (Channel("cell1_v", "V"), Channel("temp1_c", "degC")))


def test_topic_scheme_and_unsafe_names():
    t = MqttTopics("lab/daq", "bench-a")
    assert t.bench_status == "lab/daq/bench-a/status"
    assert t.metrics == "lab/daq/bench-a/metrics"
    assert (t.events, t.alarms, t.alarms_active) == (
        "lab/daq/bench-a/events",
        "lab/daq/bench-a/alarms",
        "lab/daq/bench-a/alarms/active",
    )
    assert t.device_data("bms-1") == "lab/daq/bench-a/bms-1/data"
    assert t.device_status("bms-1") == "lab/daq/bench-a/bms-1/status"
    assert MqttTopics("p", "a/b+#").device_data("x/y") == "p/a_b__/x_y/data"


def test_record_payload_fields():
    rec = Record(BMS, 1_700_000_000_000_000_123, [3.71, math.nan], bytes([0, Quality.TIMEOUT]), "run-1", 4, 2, 99)
    doc = json.loads(RecordPayloads("bench-a").encode(rec, historical=True))
    assert doc == {
        "bench": "bench-a",
        "device": "bms-1",
        "kind": "bms",
        "seq": 99,
        "t": "2023-11-14T22:13:20.000000123Z",
        "t_ns": 1_700_000_000_000_000_123,
        "run": "run-1",
        "step": 4,
        "cycle": 2,
        "historical": True,
        "values": {"cell1_v": 3.71, "temp1_c": None},
        "units": {"cell1_v": "V", "temp1_c": "degC"},
        "quality": {"cell1_v": "good", "temp1_c": "timeout"},
    }


names = st.text(min_size=1, max_size=10)


@given(
    channels=st.lists(st.tuples(names, names), min_size=1, max_size=5, unique_by=lambda c: c[0]),
    data=st.data(),
    run=names,
)
def test_any_values_and_names_give_valid_json(channels, data, run):
    schema = DeviceSchema("dev", "kind", tuple(Channel(n, u) for n, u in channels))
    n = len(channels)
    values = data.draw(st.lists(st.floats(width=64), min_size=n, max_size=n))
    quality = bytes(data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)))
    doc = json.loads(RecordPayloads("b").encode(Record(schema, 1, values, quality, run), historical=False))
    assert doc["run"] == run
    for (name, unit), v, q in zip(channels, values, quality, strict=True):
        assert doc["values"][name] == (v if math.isfinite(v) else None)
        assert doc["units"][name] == unit
        assert doc["quality"][name] == (Quality(q).label if q <= max(Quality) else f"q{q}")


def test_device_state_from_quality():
    assert device_state(bytes([0, Quality.STALE])) == "online"
    assert device_state(bytes([Quality.TIMEOUT, Quality.COMM_LOST])) == "offline"
    assert device_state(bytes([0, Quality.BAD_FRAME])) == "fault"
    assert device_state(bytes([0, Quality.TIMEOUT])) == "fault"


def test_bench_status_payload():
    assert json.loads(bench_status_payload("b", "offline", reason="connection lost")) == {
        "bench": "b",
        "state": "offline",
        "reason": "connection lost",
    }


def ev(seq, kind, data, run="r1"):
    return JournalEvent(seq=seq, run_id=run, t_ns=seq, kind=kind, data=data)


def alarm(seq, kind, limit="cell_voltage_max_v", level="warning", run="r1"):
    data = {"limit": limit, "level": level, "device": "bms-1", "channel": "cell3_v", "value": 4.3}
    return ev(seq, f"alarm.{kind}", data, run=run)


def test_alarm_events_of_the_safety_monitor():
    assert alarm_transition(alarm(1, "raised")) == ("bms-1:cell_voltage_max_v:cell3_v:warning", True)
    assert alarm_transition(alarm(1, "cleared")) == ("bms-1:cell_voltage_max_v:cell3_v:warning", False)
    assert alarm_transition(alarm(1, "tripped", level="trip")) == ("bms-1:cell_voltage_max_v:cell3_v:trip", True)
    assert alarm_transition(alarm(1, "acknowledged", level="trip"))[1] is False  # type: ignore[index]
    assert alarm_transition(ev(1, "alarm.acknowledge_request", {"who": "op"})) is None
    assert alarm_transition(ev(1, "safety.safe_state", {})) is None


def test_active_alarm_set():
    alarms = ActiveAlarms()
    assert alarms.apply(alarm(1, "raised"))
    assert alarms.apply(alarm(2, "tripped", level="trip"))
    assert not alarms.apply(ev(3, "safety.action", {}))
    assert alarms.apply(alarm(4, "cleared"))  # the warning ends, the latched trip stays
    assert not alarms.apply(alarm(5, "cleared"))  # already clear
    doc = json.loads(alarms.payload("b", t_ns=10))
    assert doc["count"] == 1 and doc["alarms"][0]["key"].endswith(":trip") and doc["run"] == "r1"
    assert alarms.apply(alarm(6, "acknowledged", level="trip"))
    assert alarms.keys == []
    # a new run starts with no active alarm
    alarms.apply(alarm(7, "raised"))
    assert alarms.apply(ev(8, "run_started", {}, run="r2"))
    assert alarms.keys == []
