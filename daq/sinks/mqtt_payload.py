"""MQTT topic scheme and JSON payloads. Pure: records and events in, topics and bytes out.

Topics (``<p>`` = topic prefix, ``<b>`` = bench id, ``<d>`` = device name)::

    <p>/<b>/status          retained  bench state: online | offline (Last Will) ; QoS status
    <p>/<b>/metrics         retained  self-metrics of the bench process (sinks, devices)  ; QoS metrics
    <p>/<b>/events                    every journal event (run events, alarms, ...)      ; QoS events
    <p>/<b>/alarms                    alarm transitions only                              ; QoS events
    <p>/<b>/alarms/active   retained  the set of active alarms                            ; QoS events
    <p>/<b>/<d>/data                  one JSON record per poll                            ; QoS data
    <p>/<b>/<d>/status      retained  device state: online | fault | offline              ; QoS status

Bench-level topics have three levels after the prefix and device leaves are only ``data`` and
``status``, so no device name can collide with a bench-level topic. ``+``, ``#`` and ``/`` in a
name are replaced by ``_``.
"""

from __future__ import annotations

import json
import numbers
from typing import TYPE_CHECKING, Any

import orjson

from daq.records import DeviceSchema, Quality, Record
from daq.sinks.base import iso_ns

if TYPE_CHECKING:
    from daq.journal import JournalEvent

_TOPIC_LEVEL = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})

ONLINE = "online"
OFFLINE = "offline"
FAULT = "fault"

_NO_ANSWER = {int(Quality.TIMEOUT), int(Quality.COMM_LOST)}
_USABLE = {int(Quality.GOOD), int(Quality.STALE)}


def _quality_label(code: int) -> str:
    try:
        return Quality(code).label
    except ValueError:
        return f"q{code}"


# JSON string per quality code, for all 256 byte values (unknown codes read "q<code>").
_QUALITY_JSON = tuple(json.dumps(_quality_label(code)) for code in range(256))
_QUALITY_LABELS = tuple(_quality_label(code) for code in range(256))


def _number(obj: Any) -> float:
    """orjson's fallback: numbers it does not know natively (numpy scalars) as floats."""
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(f"not a number: {type(obj).__name__}")


def topic_level(name: str) -> str:
    return name.translate(_TOPIC_LEVEL) or "_"


class MqttTopics:
    """The topics of one bench under one prefix."""

    def __init__(self, prefix: str, bench_id: str) -> None:
        base = f"{prefix}/{topic_level(bench_id)}"
        self.base = base
        self.bench_status = f"{base}/status"
        self.metrics = f"{base}/metrics"
        self.events = f"{base}/events"
        self.alarms = f"{base}/alarms"
        self.alarms_active = f"{base}/alarms/active"
        self._devices: dict[str, str] = {}

    def _device(self, device: str) -> str:
        level = self._devices.get(device)
        if level is None:
            level = self._devices[device] = f"{self.base}/{topic_level(device)}"
        return level

    def device_data(self, device: str) -> str:
        return self._device(device) + "/data"

    def device_status(self, device: str) -> str:
        return self._device(device) + "/status"


def device_state(quality: bytes) -> str:
    """online: every value usable; offline: the device did not answer at all; fault: anything between."""
    codes = set(quality)
    if codes <= _USABLE:
        return ONLINE
    if codes <= _NO_ANSWER:
        return OFFLINE
    return FAULT


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


class _SchemaJson:
    __slots__ = ("all_good", "good_quality", "head", "keys", "names", "schema", "unique", "units")

    def __init__(self, schema: DeviceSchema, bench_json: str) -> None:
        self.schema = schema
        self.head = f'{{"bench":{bench_json},"device":{json.dumps(schema.device)},"kind":{json.dumps(schema.kind)},'
        self.names = [c.name for c in schema.channels]
        # orjson builds the objects from dicts: only possible when no channel name repeats
        self.unique = len(set(self.names)) == len(self.names)
        self.keys = [json.dumps(c.name) + ":" for c in schema.channels]
        units = [k + json.dumps(c.unit) for k, c in zip(self.keys, schema.channels, strict=True)]
        self.units = orjson.Fragment("{" + ",".join(units) + "}")
        self.all_good = bytes(len(schema.channels))
        self.good_quality = orjson.Fragment("{" + ",".join(k + _QUALITY_JSON[0] for k in self.keys) + "}")


class RecordPayloads:
    """JSON for ``<p>/<b>/<d>/data``, one object per record::

        {"bench": "b1", "device": "cycler-1", "kind": "cycler", "seq": 42,
         "t": "2024-05-01T12:00:00.123456789Z", "t_ns": 1714564800123456789,
         "run": "b1-20240501-120000", "step": 3, "cycle": 1, "historical": false,
         "values": {"voltage_v": 51.2, "current_a": null},
         "units": {"voltage_v": "V", "current_a": "A"},
         "quality": {"voltage_v": "good", "current_a": "timeout"}}

    ``values`` are SI floats or null (no value: NaN/inf, see ``quality``); ``historical`` is true for
    a record replayed from the journal's backlog (after an outage or a restart), not sent live.
    The parts that depend only on the schema are built once per device.
    """

    def __init__(self, bench_id: str) -> None:
        self._bench = bench_id
        self._bench_json = json.dumps(bench_id)
        self._iso_second = -1
        self._iso_prefix = ""
        self._schemas: dict[int, _SchemaJson] = {}
        self._runs: dict[str, str] = {}

    def _schema(self, schema: DeviceSchema) -> _SchemaJson:
        sj = self._schemas.get(id(schema))
        if sj is None or sj.schema is not schema:
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            sj = self._schemas[id(schema)] = _SchemaJson(schema, self._bench_json)
        return sj

    def _run(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        if run is None:
            if len(self._runs) > 10_000:
                self._runs.clear()
            run = self._runs[run_id] = json.dumps(run_id)
        return run

    def encode(self, rec: Record, *, historical: bool) -> bytes:
        """One payload; orjson formats the floats (shortest round trip, NaN/inf as null)."""
        sj = self._schema(rec.schema)
        if not sj.unique:
            return self._encode_repeated_names(sj, rec, historical=historical)
        if rec.quality == sj.all_good:
            quality: Any = sj.good_quality
        else:
            labels = _QUALITY_LABELS
            quality = dict(zip(sj.names, [labels[q] for q in rec.quality], strict=False))
        return orjson.dumps(
            {
                "bench": self._bench,
                "device": rec.schema.device,
                "kind": rec.schema.kind,
                "seq": rec.seq,
                "t": self._iso(rec.t_ns),
                "t_ns": rec.t_ns,
                "run": rec.run_id,
                "step": rec.step,
                "cycle": rec.cycle,
                "historical": historical,
                "values": dict(zip(sj.names, rec.values, strict=False)),
                "units": sj.units,
                "quality": quality,
            },
            default=_number,
        )

    def _iso(self, t_ns: int) -> str:
        """``iso_ns`` with the formatted second reused while it lasts (polls come many per second)."""
        s, ns = divmod(t_ns, 1_000_000_000)
        if s != self._iso_second:
            self._iso_second = s
            self._iso_prefix = iso_ns(s * 1_000_000_000)[:-10]
        return f"{self._iso_prefix}{ns:09d}Z"

    def _encode_repeated_names(self, sj: _SchemaJson, rec: Record, *, historical: bool) -> bytes:
        """A schema with a repeated channel name: one key per channel, as written, built by hand."""
        parts = orjson.dumps(rec.values, default=_number)[1:-1].decode().split(",")
        values = ",".join([k + v for k, v in zip(sj.keys, parts, strict=False)])
        quality = "{" + ",".join([k + _QUALITY_JSON[q] for k, q in zip(sj.keys, rec.quality, strict=False)]) + "}"
        units = orjson.dumps(sj.units).decode()
        return (
            f'{sj.head}"seq":{rec.seq},"t":"{iso_ns(rec.t_ns)}","t_ns":{rec.t_ns},"run":{self._run(rec.run_id)},'
            f'"step":{rec.step},"cycle":{rec.cycle},"historical":{"true" if historical else "false"},'
            f'"values":{{{values}}},"units":{units},"quality":{quality}}}'
        ).encode()


def bench_status_payload(bench_id: str, state: str, *, t_ns: int | None = None, reason: str = "") -> bytes:
    """``<p>/<b>/status``: {"bench", "state", "t"?, "reason"?}. The Last Will has no time."""
    body: dict[str, Any] = {"bench": bench_id, "state": state}
    if t_ns is not None:
        body["t"] = iso_ns(t_ns)
    if reason:
        body["reason"] = reason
    return _dumps(body)


def device_status_payload(bench_id: str, device: str, state: str, *, t_ns: int) -> bytes:
    """``<p>/<b>/<d>/status``: state as of the record stamped ``t``."""
    return _dumps({"bench": bench_id, "device": device, "state": state, "t": iso_ns(t_ns)})


def event_payload(bench_id: str, event: JournalEvent, *, historical: bool) -> bytes:
    """``<p>/<b>/events`` and ``<p>/<b>/alarms``: {"bench","seq","t","t_ns","run","kind","data","historical"}."""
    return _dumps(
        {
            "bench": bench_id,
            "seq": event.seq,
            "t": iso_ns(event.t_ns),
            "t_ns": event.t_ns,
            "run": event.run_id,
            "kind": event.kind,
            "data": event.data,
            "historical": historical,
        }
    )


def metrics_payload(bench_id: str, metrics: dict[str, Any], *, t_ns: int) -> bytes:
    return _dumps({"bench": bench_id, "t": iso_ns(t_ns), **metrics})


# --- alarms ------------------------------------------------------------------------------------

# The safety monitor journals alarm state changes as ``alarm.<kind>`` events (daq.safety.events):
# warnings are raised and cleared; trips are latched until an operator acknowledges them.
_ALARM_STATES = {"alarm.raised": True, "alarm.tripped": True, "alarm.cleared": False, "alarm.acknowledged": False}
_ALARM_KEY_FIELDS = ("device", "limit", "channel", "level")


def alarm_transition(event: JournalEvent) -> tuple[str, bool] | None:
    """(alarm key, now active?) if ``event`` raises or ends an alarm, else None.

    The key is ``device:limit:channel:level``, so a limit's warning and its trip are separate
    entries: ``alarm.raised`` / ``alarm.cleared`` switch the warning, ``alarm.tripped`` /
    ``alarm.acknowledged`` the trip.
    """
    active = _ALARM_STATES.get(event.kind)
    if active is None:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    return ":".join(str(data.get(k, "")) for k in _ALARM_KEY_FIELDS), active


class ActiveAlarms:
    """The set of active alarms of the current run, rebuilt from journal events."""

    def __init__(self) -> None:
        self.run_id = ""
        self._active: dict[str, dict[str, Any]] = {}

    def apply(self, event: JournalEvent) -> bool:
        """Fold one event in; True if the active set changed (publish it again)."""
        changed = False
        if event.run_id and event.run_id != self.run_id:
            # Alarms belong to a run: a new run starts with none (a crashed run's alarms are stale).
            changed = bool(self._active)
            self._active.clear()
            self.run_id = event.run_id
        transition = alarm_transition(event)
        if transition is None:
            return changed
        key, active = transition
        if active:
            self._active[key] = {
                "key": key,
                "since": iso_ns(event.t_ns),
                "since_t_ns": event.t_ns,
                "seq": event.seq,
                "data": event.data,
            }
            return True
        return self._active.pop(key, None) is not None or changed

    @property
    def keys(self) -> list[str]:
        return list(self._active)

    def payload(self, bench_id: str, *, t_ns: int) -> bytes:
        """``<p>/<b>/alarms/active``: {"bench","run","t","count","alarms":[{key,since,since_t_ns,seq,data}]}."""
        return _dumps(
            {
                "bench": bench_id,
                "run": self.run_id,
                "t": iso_ns(t_ns),
                "count": len(self._active),
                "alarms": list(self._active.values()),
            }
        )
