"""An independent Sparkplug B host for the tests: decodes what a real subscriber received with the
protobuf definition and checks the specification's rules, sharing no logic with the sink.

``SparkplugStream(messages)`` replays the received MQTT messages in order, as a primary host
application would: it learns aliases from births, resolves data by alias, and records every
violation (data before its birth, unknown alias, a seq that does not follow, an NBIRTH without
seq 0 or bdSeq) in ``problems``.

Run as a module (``python -m tests.system.sparkplug_host CONFIG.json``) it is a child "bench"
process to kill -9: it journals synthetic records forever and runs a Sparkplug sink.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daq.sinks.sparkplug import sparkplug_b_pb2 as pb

VALUE_FIELDS = ("int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value")


@dataclass
class Message:
    kind: str  # NBIRTH, DDATA, ...
    device: str | None
    payload: Any  # pb.Payload
    index: int  # position in the received stream


@dataclass
class DataPoint:
    device: str
    name: str
    value: float | None  # None: is_null
    timestamp_ms: int
    historical: bool
    properties: dict[str, Any]


def metric_value(m: Any) -> Any:
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    return getattr(m, which) if which in VALUE_FIELDS else None


def properties(m: Any) -> dict[str, Any]:
    out = {}
    for key, value in zip(m.properties.keys, m.properties.values, strict=True):
        which = value.WhichOneof("value")
        out[key] = getattr(value, which) if which else None
    return out


@dataclass
class SparkplugStream:
    group: str
    node: str
    raw: list[Any]  # aiomqtt messages, in arrival order
    messages: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    data: list[DataPoint] = field(default_factory=list)
    births: list[Message] = field(default_factory=list)
    bd_seqs: list[int] = field(default_factory=list)  # of each NBIRTH, in order
    deaths: list[int] = field(default_factory=list)  # bdSeq of each NDEATH
    device_deaths: list[str] = field(default_factory=list)  # the device of each DDEATH
    units: dict[tuple[str, str], str] = field(default_factory=dict)
    types: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        prefix = f"spBv1.0/{self.group}/"
        aliases: dict[int, tuple[str, str]] = {}
        born: set[str] = set()
        seq: int | None = None
        seen: set[tuple[str, bytes]] = set()
        for i, msg in enumerate(self.raw):
            parts = str(msg.topic).split("/")
            if not str(msg.topic).startswith(prefix) or parts[3] != self.node:
                continue
            # A QoS 1 message the broker delivers again after its restart (it was in flight when it
            # stopped) is byte for byte the same: a host drops it. Distinct messages never are:
            # seq or timestamps differ.
            key = (str(msg.topic), bytes(msg.payload))
            if key in seen:
                continue
            seen.add(key)
            kind, device = parts[2], (parts[4] if len(parts) > 4 else None)
            if kind == "NCMD":
                continue
            p = pb.Payload.FromString(msg.payload)
            m = Message(kind, device, p, i)
            self.messages.append(m)
            if kind == "NDEATH":
                self.deaths.append(next(x.long_value for x in p.metrics if x.name == "bdSeq"))
                seq = None
                continue
            if kind == "NBIRTH":
                if p.seq != 0:
                    self.problems.append(f"#{i} NBIRTH with seq {p.seq}")
                names = {x.name for x in p.metrics}
                if not {"bdSeq", "Node Control/Rebirth"} <= names:
                    self.problems.append(f"#{i} NBIRTH without bdSeq or Node Control/Rebirth: {sorted(names)}")
                self.bd_seqs.append(next(x.long_value for x in p.metrics if x.name == "bdSeq"))
                aliases.clear()
                born.clear()
                seq = 0
                self.births.append(m)
                continue
            if seq is None:
                self.problems.append(f"#{i} {kind} before any NBIRTH")
            elif p.seq != (seq + 1) % 256:
                self.problems.append(f"#{i} {kind} seq {p.seq} after {seq}: a gap")
            seq = p.seq
            if kind == "DDEATH":
                assert device is not None
                born.discard(device)  # its data must wait for a new DBIRTH
                self.device_deaths.append(device)
                continue
            if kind == "DBIRTH":
                assert device is not None
                born.add(device)
                self.births.append(m)
                for x in p.metrics:
                    if x.alias in aliases and aliases[x.alias] != (device, x.name):
                        self.problems.append(f"#{i} alias {x.alias} reused for {device}/{x.name}")
                    aliases[x.alias] = (device, x.name)
                    self.types[(device, x.name)] = x.datatype
                    unit = properties(x).get("engUnit")
                    if unit is not None:
                        self.units[(device, x.name)] = unit
            elif kind == "DDATA":
                assert device is not None
                if device not in born:
                    self.problems.append(f"#{i} DDATA of {device} before its DBIRTH")
                for x in p.metrics:
                    if x.name:
                        self.problems.append(f"#{i} DDATA metric sent by name {x.name!r}, not by alias")
                    owner = aliases.get(x.alias)
                    if owner is None or owner[0] != device:
                        self.problems.append(f"#{i} DDATA of {device}: alias {x.alias} not born for it")
                        continue
                    self.data.append(
                        DataPoint(device, owner[1], metric_value(x), x.timestamp, x.is_historical, properties(x))
                    )

    def kinds(self) -> list[str]:
        return [m.kind for m in self.messages]

    def records(self) -> dict[tuple[str, int], dict[str, DataPoint]]:
        """(device, timestamp ms) -> channel -> the data point (last one wins after a replay)."""
        out: dict[tuple[str, int], dict[str, DataPoint]] = {}
        for point in self.data:
            out.setdefault((point.device, point.timestamp_ms), {})[point.name] = point
        return out


# --- child bench process -----------------------------------------------------------------------


async def _child_main(spec: dict[str, Any]) -> None:
    from daq.config.sinks import SparkplugSinkConfig
    from daq.journal import Journal
    from daq.sinks import build_sink
    from tests.system.sink_helpers import SyntheticBench

    journal = Journal(spec["journal"], commit_interval_s=0.05)
    journal.open()
    bench = SyntheticBench(journal, bench_id=spec["bench_id"])
    sink = build_sink(
        SparkplugSinkConfig.model_validate(spec["sink"]),
        bench_id=spec["bench_id"],
        journal_path=spec["journal"],
        journal=journal,
    )
    task = asyncio.create_task(sink.run(), name=f"sink:{sink.name}")
    while True:  # journal until killed
        for schema in bench.schemas:
            bench.t_ns += 1_000_000
            journal.append(bench.record(schema, bench.n))
        bench.n += 1
        await asyncio.sleep(0.01)
    del task


if __name__ == "__main__":
    asyncio.run(_child_main(json.loads(Path(sys.argv[1]).read_text())))
