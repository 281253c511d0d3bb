"""InfluxDB line protocol for records and events. Pure: strings in, strings out.

Schema (docs/sinks.md): measurement = device kind; tags bench, cycle, device, run, step (sorted,
as InfluxDB prefers); one float field per channel whose value is good and finite; a channel whose
quality is not good writes ``<channel>_quality=<code>i`` instead of its value, so an outage is
visible in the data rather than a silent gap; nanosecond timestamps.

This is the hot path (hundreds of thousands of values per second): everything that depends only
on the device schema (escaped measurement, tag and field-key prefixes) is computed once per
schema, the per-(run, step, cycle) tag prefix once per change, and each line is one join.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import orjson

from daq.records import DeviceSchema, Record

if TYPE_CHECKING:
    from daq.journal import JournalEvent

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
# Line protocol cannot carry these in names at all (a trailing backslash would escape our separator).
_UNREPRESENTABLE = str.maketrans({"\\": "_", "\n": "_", "\r": "_", "\t": "_"})


# Channel names that need no escaping in line protocol nor in JSON: a JSON object of them turns
# into the field set by deleting quotes and braces and turning ':' into '='.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_JSON_TO_FIELDS = bytes.maketrans(b":", b"=")
_JSON_PUNCTUATION = b'"{}'


def _number(obj: object) -> float:
    """orjson's fallback for numbers it does not know natively (numpy scalars)."""
    if isinstance(obj, int | float) or hasattr(obj, "__float__"):
        return float(obj)  # type: ignore[arg-type]
    raise TypeError(f"not a number: {type(obj).__name__}")


def escape_measurement(name: str) -> str:
    return name.translate(_UNREPRESENTABLE).translate(_MEASUREMENT_ESCAPES)


def escape_key(name: str) -> str:
    """Tag key, tag value or field key."""
    return name.translate(_UNREPRESENTABLE).translate(_KEY_ESCAPES)


def escape_string_field(value: str) -> str:
    """A string field value, quotes included."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _SchemaLines:
    """What one device schema contributes to every line, escaped once."""

    __slots__ = (
        "all_good",
        "bench_tag",
        "device_tag",
        "keys",
        "last_prefix",
        "last_tags",
        "measurement",
        "names",
        "plain",
        "quality_keys",
        "schema",
    )

    def __init__(self, schema: DeviceSchema, bench_tag: str) -> None:
        self.schema = schema
        self.measurement = escape_measurement(schema.kind or "device")
        self.bench_tag = bench_tag
        self.device_tag = f",device={escape_key(schema.device)}"
        self.keys = [escape_key(c.name) + "=" for c in schema.channels]
        self.quality_keys = [escape_key(c.name) + "_quality=" for c in schema.channels]
        self.names = [c.name for c in schema.channels]
        self.plain = len(set(self.names)) == len(self.names) and all(_PLAIN_NAME.fullmatch(n) for n in self.names)
        self.all_good = bytes(len(schema.channels))
        self.last_tags: tuple[str, int, int] | None = None
        self.last_prefix = ""


class LineProtocolEncoder:
    """Turns records and journal events into line protocol for one bench."""

    def __init__(self, bench_id: str, *, step_cycle_tags: bool = True, events_measurement: str = "daq_events"):
        self.bench_id = bench_id
        self.step_cycle_tags = step_cycle_tags
        self._bench_tag = f",bench={escape_key(bench_id)}" if bench_id else ""
        self._events_head = escape_measurement(events_measurement) + self._bench_tag
        # Keyed by id(): the journal reader shares one schema object per device; the entry keeps
        # the schema alive and is checked with ``is`` so a recycled id can never match.
        self._schemas: dict[int, _SchemaLines] = {}
        self._runs: dict[str, str] = {}

    def _schema_lines(self, schema: DeviceSchema) -> _SchemaLines:
        lines = self._schemas.get(id(schema))
        if lines is None or lines.schema is not schema:
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            lines = self._schemas[id(schema)] = _SchemaLines(schema, self._bench_tag)
        return lines

    def _run_tag(self, run_id: str) -> str:
        tag = self._runs.get(run_id)
        if tag is None:
            if len(self._runs) > 10_000:
                self._runs.clear()
            tag = self._runs[run_id] = f",run={escape_key(run_id)}" if run_id else ""
        return tag

    def _prefix(self, sl: _SchemaLines, run_id: str, step: int, cycle: int) -> str:
        tags = (run_id, step, cycle)
        if sl.last_tags != tags:
            run_tag = self._run_tag(run_id)
            if self.step_cycle_tags:
                sl.last_prefix = f"{sl.measurement}{sl.bench_tag},cycle={cycle}{sl.device_tag}{run_tag},step={step} "
            else:
                sl.last_prefix = f"{sl.measurement}{sl.bench_tag}{sl.device_tag}{run_tag} "
            sl.last_tags = tags
        return sl.last_prefix

    def record_line(self, rec: Record) -> str | None:
        """One line for one record; None when it has no field to write (no channels at all)."""
        sl = self._schema_lines(rec.schema)
        quality = rec.quality
        values = rec.values
        total = sum(values) if quality == sl.all_good else None
        # ``v - v == 0.0`` is the cheapest finite test: NaN and ±inf give NaN, which is != 0.
        if total is not None and total - total == 0.0 and sl.plain:
            # The common case, all good and finite: orjson formats every float in one call.
            fields = (
                orjson.dumps(dict(zip(sl.names, values, strict=False)), default=_number)
                .translate(_JSON_TO_FIELDS, _JSON_PUNCTUATION)
                .decode()
            )
        else:
            formatted = orjson.dumps(values, default=_number)[1:-1].decode().split(",")
            parts = []
            for k, qk, v, text, q in zip(sl.keys, sl.quality_keys, values, formatted, quality, strict=False):
                if q:
                    parts.append(f"{qk}{q}i")
                elif v - v == 0.0:
                    parts.append(k + text)
            fields = ",".join(parts)
        if not self.step_cycle_tags:
            extra = f"cycle={rec.cycle}i,step={rec.step}i"
            fields = f"{fields},{extra}" if fields else extra
        if not fields:
            return None
        return f"{self._prefix(sl, rec.run_id, rec.step, rec.cycle)}{fields} {rec.t_ns}"

    def event_line(self, event: JournalEvent) -> str:
        """An event: tags bench, kind, run; fields seq (integer) and data (JSON string)."""
        kind = escape_key(event.kind) or "event"
        data = escape_string_field(json.dumps(event.data, separators=(",", ":"), default=str))
        return f"{self._events_head},kind={kind}{self._run_tag(event.run_id)} seq={event.seq}i,data={data} {event.t_ns}"
