"""Verify one run against an InfluxDB sink's database: is every journal record there?

The proof a quality engineer needs that no reading was lost on the way to the history database:
the records of a run are read from the journal and looked up in the database by (device, time);
whatever is missing is listed by seq and can be written again (``resend``; InfluxDB overwrites a
point with the same series and timestamp, so a rewrite never doubles anything).

Reading back, by server:

- ``api: v1`` (InfluxDB 1.x): InfluxQL ``SELECT * ... WHERE bench, run`` on ``/query`` (chunked);
- ``api: v2``: VictoriaMetrics' ``/api/v1/export`` (milliseconds, like its storage), else InfluxQL on
  ``/query`` with the bucket as database (InfluxDB 2.x/3.x v1 compatibility).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daq.errors import SinkError

if TYPE_CHECKING:
    from daq.journal import JournalReader, RunInfo
    from daq.records import Record
    from daq.sinks.influx import InfluxSink
    from daq.sinks.influx_http import InfluxWriter

RESEND_BATCH = 5000
RECHECK_FOR_S = 10.0


@dataclass
class VerifyResult:
    sink: str
    target: str
    run_id: str
    expected: int  # records of the run that have something to write
    missing: list[int] = field(default_factory=list)  # their seqs
    resent: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        found = self.expected - len(self.missing)
        head = f"run {self.run_id}: sink {self.sink} ({self.target}) has {found} of {self.expected} records"
        if self.complete:
            return head
        return f"{head}; missing seqs {seq_ranges(self.missing)}"


def seq_ranges(seqs: list[int], *, limit: int = 10) -> str:
    """``3071-3766, 4000`` for sorted seqs; the first ``limit`` ranges, then a count of the rest."""
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges[:limit])
    return text + (f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else "")


def _influxql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _influxql_name(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _influxql_keys(
    writer: InfluxWriter, *, database: str, rp: str | None, measurements: list[str], bench_id: str, run_id: str
) -> set[tuple[str, int]]:
    """(device, t_ns) of every point of the run, by InfluxQL."""
    sources = ", ".join((f"{_influxql_name(rp)}." if rp else "") + _influxql_name(m) for m in measurements)
    q = f'SELECT * FROM {sources} WHERE "bench" = {_influxql_string(bench_id)} AND "run" = {_influxql_string(run_id)}'
    params = {"db": database, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": "10000"}
    status, body = await writer.get("/query", params)
    if status != 200:
        raise SinkError(f"{writer.url}/query answered HTTP {status}: {body[:200].decode(errors='replace')}")
    keys: set[tuple[str, int]] = set()
    for line in body.splitlines():
        if not line.strip():
            continue
        for result in json.loads(line).get("results", []):
            if "error" in result:
                raise SinkError(f"{writer.url}/query: {result['error']}")
            for series in result.get("series", []):
                cols = series["columns"]
                t_col, d_col = cols.index("time"), cols.index("device")
                keys.update((row[d_col], int(row[t_col])) for row in series["values"])
    return keys


async def _export_keys(
    writer: InfluxWriter, *, measurements: list[str], bench_id: str, run_id: str
) -> set[tuple[str, int]] | None:
    """(device, t_ms) from VictoriaMetrics' export API; None if the server has no such API."""
    names = "|".join(m.replace("\\", "\\\\").replace(".", "\\.") for m in measurements)
    match = f'{{__name__=~"({names})_.+",bench={json.dumps(bench_id)},run={json.dumps(run_id)}}}'
    status, body = await writer.get("/api/v1/export", {"match[]": match})
    if status in (404, 405):
        return None
    if status != 200:
        raise SinkError(f"{writer.url}/api/v1/export answered HTTP {status}: {body[:200].decode(errors='replace')}")
    keys: set[tuple[str, int]] = set()
    for line in body.splitlines():
        if line.strip():
            series = json.loads(line)
            device = series["metric"].get("device", "")
            keys.update((device, int(t)) for t in series["timestamps"])
    return keys


async def _stored(sink: InfluxSink, writer: InfluxWriter, run: RunInfo, measurements: list[str]) -> tuple[set, int]:
    """The run's points in the database and the time unit of their keys (ns per unit)."""
    cfg = sink.config
    if cfg.api == "v2":
        keys = await _export_keys(writer, measurements=measurements, bench_id=run.bench_id, run_id=run.run_id)
        if keys is not None:
            return keys, 1_000_000
        database, rp = str(writer.describe()["params"].get("bucket", "")), None
    else:
        database, rp = cfg.database or "", cfg.retention_policy
    keys = await _influxql_keys(
        writer, database=database, rp=rp, measurements=measurements, bench_id=run.bench_id, run_id=run.run_id
    )
    return keys, 1


def _run_records(reader: JournalReader, sink: InfluxSink, run_id: str) -> list[tuple[Record, str]]:
    """Records of the run that have a line to write, with that line."""
    out = []
    for rec in reader.iter_run_records(run_id):
        line = sink.encoder.record_line(rec)
        if line is not None:
            out.append((rec, line))
    return out


async def _still_missing(
    sink: InfluxSink, writer: InfluxWriter, run: RunInfo, measurements: list[str], missing: list[tuple[Record, str]]
) -> list[tuple[Record, str]]:
    """Look the rewritten records up again; a server may take a moment to show new points."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECHECK_FOR_S
    while True:
        await writer.get("/internal/force_flush", {})  # VictoriaMetrics: searchable now; others ignore it
        stored, unit = await _stored(sink, writer, run, measurements)
        missing = [(r, line) for r, line in missing if (r.schema.device, r.t_ns // unit) not in stored]
        if not missing or loop.time() >= deadline:
            return missing
        await asyncio.sleep(0.5)


async def verify_run(sink: InfluxSink, reader: JournalReader, run: RunInfo, *, resend: bool) -> VerifyResult:
    """Look every record of ``run`` up in the sink's database; with ``resend`` write the missing again."""
    records = _run_records(reader, sink, run.run_id)
    measurements = sorted({s.kind or "device" for s in reader.schemas(run.run_id)})
    result = VerifyResult(sink.name, sink.config.url, run.run_id, len(records))
    if not records:
        return result
    async with sink.writer() as writer:
        stored, unit = await _stored(sink, writer, run, measurements)
        missing = [(r, line) for r, line in records if (r.schema.device, r.t_ns // unit) not in stored]
        if missing and resend:
            for i in range(0, len(missing), RESEND_BATCH):
                body = "\n".join(line for _, line in missing[i : i + RESEND_BATCH]).encode()
                answer = await writer.write(body)
                if not answer.ok:
                    raise SinkError(f"writing the missing records again failed: HTTP {answer.status}: {answer.reason}")
            result.resent = len(missing)
            missing = await _still_missing(sink, writer, run, measurements, missing)
    result.missing = sorted(r.seq for r, _ in missing)
    return result
