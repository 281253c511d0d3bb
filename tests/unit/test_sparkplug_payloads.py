"""Sparkplug B payloads of one edge node: seq, aliases, nulls, rebirth commands (pure, no broker)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from daq.config.sinks import SparkplugSinkConfig
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks.sparkplug import sparkplug_b_pb2 as pb
from daq.sinks.sparkplug.payloads import EdgeNodeSession, SparkplugTopics, rebirth_requested

SCHEMA = DeviceSchema("bms-1", "bms", (Channel("cell1_v", "V"), Channel("alarm_fuse"), Channel("temp1_c", "degC")))


def session() -> EdgeNodeSession:
    s = EdgeNodeSession(SparkplugTopics("lab", "bench-3"), {"bms-1": "pack"})
    s.nbirth(t_ms=1)
    s.add_device(SCHEMA)
    return s


def test_seq_starts_at_zero_with_nbirth_and_wraps_after_255() -> None:
    s = EdgeNodeSession(SparkplugTopics("lab", "bench-3"))
    assert pb.Payload.FromString(s.nbirth(t_ms=1)).seq == 0
    device = s.add_device(SCHEMA)
    seqs = [pb.Payload.FromString(s.dbirth(device, t_ms=1)).seq]
    record = Record(SCHEMA, 5_000_000, [3.7, math.nan, 25.0], bytes(3))
    seqs += [pb.Payload.FromString(s.ddata(record, t_ms=1, historical=False)).seq for _ in range(300)]
    assert seqs[:3] == [1, 2, 3]
    assert seqs[254:257] == [255, 0, 1]
    assert pb.Payload.FromString(s.nbirth(t_ms=2)).seq == 0  # a rebirth starts over


def test_data_goes_by_alias_with_nulls_for_bad_and_unknown_values() -> None:
    s = session()
    birth = pb.Payload.FromString(s.dbirth(s.devices["bms-1"], t_ms=1))
    aliases = {m.name: m.alias for m in birth.metrics}
    assert sorted(aliases.values()) == [2, 3, 4]  # 0 and 1: bdSeq and Node Control/Rebirth
    units = {
        m.name: dict(zip(m.properties.keys, [v.string_value for v in m.properties.values], strict=True))
        for m in birth.metrics
    }
    assert units["cell1_v"] == {"engUnit": "V"}
    record = Record(SCHEMA, 7_000_000, [3.7, math.nan, math.nan], bytes([0, 0, int(Quality.OUT_OF_RANGE)]))
    data = pb.Payload.FromString(s.ddata(record, t_ms=9, historical=True))
    by_alias = {m.alias: m for m in data.metrics}
    assert all(not m.name and m.timestamp == 7 and m.is_historical for m in data.metrics)
    assert by_alias[aliases["cell1_v"]].double_value == 3.7
    assert by_alias[aliases["alarm_fuse"]].is_null and not by_alias[aliases["alarm_fuse"]].properties.keys
    temp = by_alias[aliases["temp1_c"]]
    assert temp.is_null and list(temp.properties.keys) == ["Quality", "daqQuality"]
    assert temp.properties.values[1].string_value == "out_of_range"


def test_rebirth_commands_by_name_or_alias_and_garbage_ignored() -> None:
    by_name = pb.Payload()
    by_name.metrics.add(name="Node Control/Rebirth", datatype=11).boolean_value = True
    by_alias = pb.Payload()
    by_alias.metrics.add(alias=1, datatype=11).boolean_value = True
    false = pb.Payload()
    false.metrics.add(name="Node Control/Rebirth", datatype=11).boolean_value = False
    assert rebirth_requested(by_name.SerializeToString())
    assert rebirth_requested(by_alias.SerializeToString())
    assert not rebirth_requested(false.SerializeToString())
    assert not rebirth_requested(b"\xff\xff\xff not protobuf")


def test_ids_with_topic_characters_are_refused() -> None:
    with pytest.raises(ValidationError, match="group_id"):
        SparkplugSinkConfig.model_validate({"kind": "sparkplug", "host": "b", "group_id": "lab/a"})
    with pytest.raises(ValidationError, match="edge_node_id"):
        SparkplugSinkConfig.model_validate({"kind": "sparkplug", "host": "b", "group_id": "lab", "edge_node_id": "a+"})
