"""The orjson payloads mean exactly what the hand-formatted ones of round 1 meant: decoded JSON
objects are equal, and line-protocol lines parse to the same measurement, tags, fields and time.

The reference encoders below are the round-1 implementations (``repr`` per value), kept here
verbatim as the yardstick."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks.base import iso_ns
from daq.sinks.lineprotocol import LineProtocolEncoder, escape_key
from daq.sinks.mqtt_payload import RecordPayloads
from tests.unit.test_lineprotocol import parse


def _label(code: int) -> str:
    try:
        return Quality(code).label
    except ValueError:
        return f"q{code}"


def reference_json(bench: str, rec: Record, *, historical: bool) -> bytes:
    keys = [json.dumps(c.name) + ":" for c in rec.schema.channels]
    schema = rec.schema
    head = f'{{"bench":{json.dumps(bench)},"device":{json.dumps(schema.device)},"kind":{json.dumps(schema.kind)},'
    units = "{" + ",".join(k + json.dumps(c.unit) for k, c in zip(keys, rec.schema.channels, strict=True)) + "}"
    values = ",".join([k + (repr(v) if v - v == 0.0 else "null") for k, v in zip(keys, rec.values, strict=False)])
    quality = "{" + ",".join([k + json.dumps(_label(q)) for k, q in zip(keys, rec.quality, strict=False)]) + "}"
    return (
        f'{head}"seq":{rec.seq},"t":"{iso_ns(rec.t_ns)}","t_ns":{rec.t_ns},"run":{json.dumps(rec.run_id)},'
        f'"step":{rec.step},"cycle":{rec.cycle},"historical":{"true" if historical else "false"},'
        f'"values":{{{values}}},"units":{units},"quality":{quality}}}'
    ).encode()


def reference_line(bench: str, rec: Record) -> str | None:
    keys = [escape_key(c.name) + "=" for c in rec.schema.channels]
    parts = []
    for c, k, v, q in zip(rec.schema.channels, keys, rec.values, rec.quality, strict=False):
        if q:
            parts.append(f"{escape_key(c.name)}_quality={q}i")
        elif v - v == 0.0:
            parts.append(k + repr(v))
    if not parts:
        return None
    run = f",run={escape_key(rec.run_id)}" if rec.run_id else ""
    tags = f",bench={escape_key(bench)},cycle={rec.cycle},device={escape_key(rec.schema.device)}{run},step={rec.step}"
    return f"{rec.schema.kind}{tags} {','.join(parts)} {rec.t_ns}"


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
plain_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
floats = st.one_of(
    st.floats(width=64),
    st.sampled_from([0.0, -0.0, 1e-5, 1e16, 1e300, 5.0, -3.25, 1 / 3, math.nan, math.inf, -math.inf]),
)


def record_strategy(name_strategy):
    @st.composite
    def build(draw):
        channels = draw(st.lists(name_strategy, min_size=1, max_size=12, unique=True))
        n = len(channels)
        values = draw(st.lists(floats, min_size=n, max_size=n))
        all_good = draw(st.booleans())
        quality = bytes(n) if all_good else bytes(draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)))
        schema = DeviceSchema("dev-1", "meter", tuple(Channel(c, "V") for c in channels))
        t_ns = draw(st.integers(0, 2**62))
        return Record(schema, t_ns, values, quality, "run-1", draw(st.integers(0, 99)), draw(st.integers(0, 9)), 7)

    return build()


@settings(max_examples=150)
@given(rec=st.one_of(record_strategy(names), record_strategy(plain_names)), historical=st.booleans())
def test_mqtt_json_decodes_to_the_reference(rec: Record, historical: bool):
    ours = json.loads(RecordPayloads("bench-a").encode(rec, historical=historical))
    assert ours == json.loads(reference_json("bench-a", rec, historical=historical))


@settings(max_examples=150)
@given(rec=st.one_of(record_strategy(names), record_strategy(plain_names)))
def test_line_protocol_parses_to_the_reference(rec: Record):
    ours = LineProtocolEncoder("bench-a").record_line(rec)
    reference = reference_line("bench-a", rec)
    assert (ours is None) == (reference is None)
    if ours is not None and reference is not None:
        assert parse(ours) == parse(reference)


def test_repeated_channel_names_keep_one_key_per_channel():
    schema = DeviceSchema("d", "meter", (Channel("x", "V"), Channel("x", "A")))
    rec = Record(schema, 1, [1.5, 2.5], bytes(2), "r", 0, 0, 1)
    assert RecordPayloads("b").encode(rec, historical=False) == reference_json("b", rec, historical=False)


def test_numpy_floats_are_written_as_floats():
    import numpy as np

    schema = DeviceSchema("d", "meter", (Channel("x_v", "V"),))
    rec = Record(schema, 1, [np.float64(1.25)], bytes(1), "r", 0, 0, 1)
    assert json.loads(RecordPayloads("b").encode(rec, historical=False))["values"] == {"x_v": 1.25}
    assert LineProtocolEncoder("b").record_line(rec) == "meter,bench=b,cycle=0,device=d,run=r,step=0 x_v=1.25 1"
