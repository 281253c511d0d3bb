"""Sparkplug B topics and payloads for one edge node (the bench). Pure: no MQTT, no clock.

Mapping (docs/sinks.md): the bench is the edge node, each bench device a Sparkplug device, each
record channel a Double metric named after the channel (``cell3_v``) with its unit as the
``engUnit`` property. A record becomes one DDATA message; a value whose quality is not GOOD is
sent ``is_null`` with a ``Quality`` property (OPC-style code: 192 good, 0 bad, 64
uncertain (stale); our own label in ``daqQuality``), so a SCADA never shows a NaN as a number.

Sequence rules (Sparkplug 3.0): ``seq`` runs 0..255 and wraps, over every NBIRTH/NDATA/DBIRTH/DDATA/
DDEATH of one MQTT session; NBIRTH carries 0. ``bdSeq`` (birth/death sequence) is a metric of the
NBIRTH and of the NDEATH registered as the MQTT will for that session, incremented per session.

A device that stops answering (a record of only TIMEOUT / COMM_LOST) gets a DDEATH, and a DBIRTH
again before its next data, so the host shows it offline instead of a row of nulls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from daq.records import GOOD, DeviceSchema, Quality, Record
from daq.sinks.sparkplug import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
UINT64, BOOLEAN, STRING, DOUBLE, INT32 = 8, 11, 12, 10, 3
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
OPC_GOOD, OPC_BAD, OPC_UNCERTAIN = 192, 0, 64


def opc_quality(code: int) -> int:
    """Our per-value quality -> the OPC-style code SCADA hosts read from the ``Quality`` property."""
    if code == GOOD:
        return OPC_GOOD
    return OPC_UNCERTAIN if code == int(Quality.STALE) else OPC_BAD


@dataclass(frozen=True, slots=True)
class SparkplugTopics:
    group_id: str
    edge_node_id: str

    def node(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device(self, kind: str, device_id: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}/{device_id}"


@dataclass(slots=True)
class BirthedDevice:
    device_id: str
    schema: DeviceSchema
    first_alias: int  # channel i has alias first_alias + i
    last: Record | None = None  # the last record sent as data (the values of the next DBIRTH)
    alive: bool = True  # False after a DDEATH, until the next DBIRTH


def _set_property(
    props: pb.Payload.PropertySet, key: str, *, string: str | None = None, int32: int | None = None
) -> None:
    props.keys.append(key)
    value = props.values.add()
    if string is not None:
        value.type = STRING
        value.string_value = string
    else:
        value.type = INT32
        value.int_value = int32 or 0


@dataclass(slots=True)
class EdgeNodeSession:
    """Aliases, births and the seq counter of one edge node. ``start_session`` on every (re)connect."""

    topics: SparkplugTopics
    device_ids: dict[str, str] = field(default_factory=dict)  # bench device name -> Sparkplug device id
    bd_seq: int = 0
    seq: int = 0
    devices: dict[str, BirthedDevice] = field(default_factory=dict)  # by bench device name
    _next_alias: int = 2  # 0 bdSeq, 1 Node Control/Rebirth

    def device_id(self, device: str) -> str:
        return self.device_ids.get(device, device)

    def _next_seq(self) -> int:
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    # -- node -----------------------------------------------------------------------------------
    def ndeath(self, *, t_ms: int) -> bytes:
        """The NDEATH for this session's bdSeq (the MQTT will, and the goodbye on a clean stop)."""
        p = pb.Payload(timestamp=t_ms)
        m = p.metrics.add(name=BD_SEQ, timestamp=t_ms, datatype=UINT64)
        m.long_value = self.bd_seq
        return p.SerializeToString()

    def nbirth(self, *, t_ms: int, node_info: dict[str, str] | None = None) -> bytes:
        """NBIRTH: seq 0, bdSeq, the rebirth control and the node's information strings."""
        self.seq = 0
        p = pb.Payload(timestamp=t_ms, seq=self._next_seq())
        m = p.metrics.add(name=BD_SEQ, alias=0, timestamp=t_ms, datatype=UINT64)
        m.long_value = self.bd_seq
        m = p.metrics.add(name=REBIRTH, alias=1, timestamp=t_ms, datatype=BOOLEAN)
        m.boolean_value = False
        for name, value in (node_info or {}).items():
            m = p.metrics.add(name=f"Properties/{name}", timestamp=t_ms, datatype=STRING)
            m.string_value = value
        return p.SerializeToString()

    def reset_births(self) -> None:
        """Forget the births (a new session or a rebirth): aliases are assigned afresh."""
        self.devices = {name: BirthedDevice(d.device_id, d.schema, 0, d.last) for name, d in self.devices.items()}
        self._next_alias = 2
        for d in self.devices.values():
            d.first_alias = self._take_aliases(len(d.schema.channels))

    def _take_aliases(self, n: int) -> int:
        first = self._next_alias
        self._next_alias += n
        return first

    # -- devices --------------------------------------------------------------------------------
    def needs_birth(self, record: Record) -> bool:
        d = self.devices.get(record.schema.device)
        return d is None or d.schema != record.schema

    def add_device(self, schema: DeviceSchema) -> BirthedDevice:
        d = BirthedDevice(self.device_id(schema.device), schema, self._take_aliases(len(schema.channels)))
        self.devices[schema.device] = d
        return d

    def ddeath(self, device: BirthedDevice, *, t_ms: int) -> bytes:
        """The device stopped answering (every value TIMEOUT or COMM_LOST): no data until its next DBIRTH."""
        device.alive = False
        return pb.Payload(timestamp=t_ms, seq=self._next_seq()).SerializeToString()

    def dbirth(self, device: BirthedDevice, *, t_ms: int) -> bytes:
        """Every metric of the device with name, alias, type, unit and its last value (null if none)."""
        device.alive = True
        p = pb.Payload(timestamp=t_ms, seq=self._next_seq())
        last = device.last
        for i, channel in enumerate(device.schema.channels):
            m = p.metrics.add(name=channel.name, alias=device.first_alias + i, datatype=DOUBLE)
            m.timestamp = last.t_ns // 1_000_000 if last is not None else t_ms
            if channel.unit:
                _set_property(m.properties, "engUnit", string=channel.unit)
            if last is None:
                m.is_null = True
            else:
                _fill_value(m, last.values[i], last.quality[i])
        return p.SerializeToString()

    def ddata(self, record: Record, *, t_ms: int, historical: bool) -> bytes:
        """One record as DDATA: every channel by alias, with the record's acquisition time."""
        device = self.devices[record.schema.device]
        device.last = record
        p = pb.Payload(timestamp=t_ms, seq=self._next_seq())
        ts = record.t_ns // 1_000_000
        first = device.first_alias
        for i, value in enumerate(record.values):
            m = p.metrics.add(alias=first + i, timestamp=ts)
            if historical:
                m.is_historical = True
            _fill_value(m, value, record.quality[i])
        return p.SerializeToString()


_NO_ANSWER = frozenset({int(Quality.TIMEOUT), int(Quality.COMM_LOST)})


def no_answer(quality: bytes) -> bool:
    """The device did not answer at all in this record: a DDEATH for a SCADA host, not data."""
    return set(quality) <= _NO_ANSWER


def _fill_value(m: pb.Payload.Metric, value: float, quality: int) -> None:
    if quality != GOOD:
        m.is_null = True
        _set_property(m.properties, "Quality", int32=opc_quality(quality))
        _set_property(m.properties, "daqQuality", string=Quality(quality).label)
    elif math.isnan(value):
        m.is_null = True  # a good "no value": e.g. an alarm this BMS cannot report
    else:
        m.double_value = value


def rebirth_requested(payload: bytes) -> bool:
    """An NCMD asking for a rebirth: ``Node Control/Rebirth`` (by name or its alias 1) set true."""
    try:
        p = pb.Payload.FromString(payload)
    except DecodeError:  # a malformed command is ignored, never a crash
        return False
    return any((m.name == REBIRTH or (not m.name and m.alias == 1)) and m.boolean_value for m in p.metrics)
