"""Line protocol for records and events: exact lines, escaping, and a round trip through a parser
written from the InfluxDB line protocol reference."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from daq.journal import JournalEvent
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks.lineprotocol import LineProtocolEncoder, escape_key, escape_measurement, escape_string_field

CYCLER = DeviceSchema("cycler-1", "cycler", (Channel("voltage_v", "V"), Channel("current_a", "A")))


def rec(values, quality=None, *, schema=CYCLER, run="r1", step=2, cycle=5, t_ns=1_700_000_000_123_456_789):
    return Record(schema, t_ns, list(values), bytes(quality or [0] * len(values)), run, step, cycle)


# --- a reference parser ------------------------------------------------------------------------


def _split_unescaped(text: str, sep: str, *, quoted_values: bool = False) -> list[str]:
    """Split at ``sep`` outside backslash escapes (escapes kept). With ``quoted_values``, also not
    inside a double-quoted field value: quotes count only after the ``=`` of a field."""
    parts, cur, i, quoted, in_value = [], "", 0, False, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if quoted_values and c == "=" and not quoted:
            in_value = True
        if quoted_values and c == '"' and in_value:
            quoted = not quoted
        if c == sep and not quoted:
            parts.append(cur)
            cur, in_value = "", False
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def _split_first(text: str, sep: str) -> tuple[str, str]:
    """(before, after) the first ``sep`` that is not backslash-escaped."""
    first = _split_unescaped(text, sep)[0]
    return first, text[len(first) + 1 :]


def parse(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    head, rest = _split_first(line, " ")
    fields, ts = rest.rsplit(" ", 1)  # the timestamp has no spaces
    measurement, *tags = _split_unescaped(head, ",")
    tag_map = dict(tuple(_unescape(p) for p in _split_first(t, "=")) for t in tags)
    field_map: dict[str, object] = {}
    for f in _split_unescaped(fields, ",", quoted_values=True):
        k, v = _split_first(f, "=")
        if v.startswith('"'):
            value: object = _unescape(v[1:-1])
        elif v.endswith("i"):
            value = int(v[:-1])
        else:
            value = float(v)
        field_map[_unescape(k)] = value
    return _unescape(measurement), tag_map, field_map, int(ts)


# --- exact output ------------------------------------------------------------------------------


def test_record_line_exact():
    line = LineProtocolEncoder("bench-a").record_line(rec([51.25, -3.5]))
    assert line == (
        "cycler,bench=bench-a,cycle=5,device=cycler-1,run=r1,step=2 voltage_v=51.25,current_a=-3.5 1700000000123456789"
    )


def test_nan_and_inf_are_skipped_and_bad_quality_writes_its_code_instead():
    enc = LineProtocolEncoder("b")
    assert enc.record_line(rec([math.nan, math.inf])) is None  # no field left: no line
    line = enc.record_line(rec([51.0, math.nan], [0, int(Quality.TIMEOUT)]))
    assert line is not None and line.split(" ")[1] == "voltage_v=51.0,current_a_quality=2i"
    line = enc.record_line(rec([51.0, 7.0], [int(Quality.OUT_OF_RANGE), 0]))
    assert line is not None and line.split(" ")[1] == "voltage_v_quality=4i,current_a=7.0"


def test_step_and_cycle_as_fields_and_empty_run_omitted():
    line = LineProtocolEncoder("b", step_cycle_tags=False).record_line(rec([1.0, 2.0], run=""))
    assert line == "cycler,bench=b,device=cycler-1 voltage_v=1.0,current_a=2.0,cycle=5i,step=2i 1700000000123456789"


def test_tag_prefix_follows_run_step_cycle_changes():
    enc = LineProtocolEncoder("b")
    a = enc.record_line(rec([1.0, 2.0], step=1))
    b = enc.record_line(rec([1.0, 2.0], step=2))
    c = enc.record_line(rec([1.0, 2.0], step=2, run="r2"))
    assert ",step=1 " in a and ",step=2 " in b and ",run=r2," in c


def test_escaping_rules():
    assert escape_measurement("a b,c=d") == "a\\ b\\,c=d"
    assert escape_key("a b,c=d") == "a\\ b\\,c\\=d"
    assert escape_key("trailing\\") == "trailing_"  # a trailing backslash would escape our separator
    assert escape_key("two\nlines") == "two_lines"
    assert escape_string_field('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


def test_event_line_carries_json_data_and_seq():
    event = JournalEvent(seq=7, run_id="r 1", t_ns=5, kind="alarm", data={"id": "ov", "msg": 'x "y"'})
    line = LineProtocolEncoder("bench a").event_line(event)
    measurement, tags, fields, ts = parse(line)
    assert measurement == "daq_events" and ts == 5
    assert tags == {"bench": "bench a", "kind": "alarm", "run": "r 1"}
    assert fields["seq"] == 7 and json.loads(fields["data"]) == event.data  # type: ignore[arg-type]


# --- round trip --------------------------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: "\\" not in s and s.strip() == s and s
)
values = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(
    device=names,
    kind=names,
    bench=names,
    run=names,
    channels=st.lists(names, min_size=1, max_size=6, unique=True),
    data=st.data(),
)
def test_round_trip_through_a_reference_parser(device, kind, bench, run, channels, data):
    schema = DeviceSchema(device, kind, tuple(Channel(c, "") for c in channels))
    vals = data.draw(st.lists(values, min_size=len(channels), max_size=len(channels)))
    qual = data.draw(st.lists(st.sampled_from([0, 0, 0, 2, 6]), min_size=len(channels), max_size=len(channels)))
    record = Record(schema, 1_700_000_000_000_000_001, vals, bytes(qual), run, 3, 4)
    line = LineProtocolEncoder(bench).record_line(record)
    written = {c: v for c, v, q in zip(channels, vals, qual, strict=True) if q == 0 and math.isfinite(v)}
    bad = {f"{c}_quality": q for c, q in zip(channels, qual, strict=True) if q}
    if not written and not bad:
        assert line is None
        return
    assert line is not None and "\n" not in line
    measurement, tags, fields, ts = parse(line)
    assert measurement == kind
    assert tags == {"bench": bench, "cycle": "4", "device": device, "run": run, "step": "3"}
    assert fields == {**written, **bad}
    assert ts == 1_700_000_000_000_000_001
