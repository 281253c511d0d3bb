"""Hot-path components, one at a time: CPU microseconds per record of 64 values.

Each step a record takes between the wire and the sinks, timed alone on synthetic input
(``time.process_time``, so other load on the machine counts less): register decoding, building
the ``Record``, journal append + commit (writer thread included), journal read-back (what each
sink does), the MQTT JSON payload and the InfluxDB line. Their sum next to the end-to-end CPU
per poll shows what the rest (pymodbus, aiomqtt, aiohttp, the event loop) costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import scenario_result
from benchmarks.devices import METER_VALUES, meter_regmap_spec, regmap_from_spec
from benchmarks.harness import blocks_of, workdir
from daq.journal import Journal, JournalReader
from daq.records import DeviceSchema, Record
from drivers.modbus.regmap import compile_block_decoder, plan_channels

NAME = "components"
TITLE = "Hot-path components: CPU per record of 64 values"


def cases(smoke: bool) -> list[str]:
    return ["64"]


def _cpu_us_per_call(fn: Callable[[], object], min_s: float) -> float:
    calls = 1
    while True:
        start = time.process_time()
        for _ in range(calls):
            fn()
        used = time.process_time() - start
        if used >= min_s:
            return 1e6 * used / calls
        calls *= 2


def _records(schema: DeviceSchema, n: int) -> list[Record]:
    return [
        Record(
            schema,
            1_700_000_000_000_000_000 + i * 100_000_000,
            [3.0 + (i + k) % 1000 / 1000 for k in range(len(schema))],
            bytes(len(schema)),
            "run-1",
        )
        for i in range(n)
    ]


def _journal_costs(folder: Path, schema: DeviceSchema, n: int) -> tuple[float, float]:
    records = _records(schema, n)
    journal = Journal(folder / "journal.sqlite", commit_interval_s=0.5)
    journal.open()
    try:
        run_id = journal.begin_run("bench", schemas=[schema], run_id="run-1")
        for r in records:
            r.run_id = run_id
        start = time.process_time()
        for r in records:
            journal.append(r)
        journal.flush()
        append_us = 1e6 * (time.process_time() - start) / n
    finally:
        journal.close()
    reader = JournalReader(folder / "journal.sqlite")
    try:
        start = time.process_time()
        after, read = 0, 0
        while True:
            batch = reader.records_after(after, 1000)
            if not batch:
                break
            read += len(batch)
            after = batch[-1].seq
        read_us = 1e6 * (time.process_time() - start) / max(read, 1)
    finally:
        reader.close()
    return append_us, read_us


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    from daq.sinks.lineprotocol import LineProtocolEncoder
    from daq.sinks.mqtt_payload import RecordPayloads

    min_s = 0.05 if smoke else 0.5
    n = 2000 if smoke else 50_000
    regmap = regmap_from_spec(meter_regmap_spec())
    (block,) = blocks_of(regmap)
    schema = DeviceSchema("meter-1", "meter", plan_channels([block]))
    decode = compile_block_decoder(block, 0)
    raw = [3000 + k for k in range(METER_VALUES)]
    values = [math.nan] * METER_VALUES
    quality = bytearray(METER_VALUES)

    def build_record() -> Record:
        v = [math.nan] * METER_VALUES
        q = bytearray(METER_VALUES)
        decode(raw, v, q)
        return Record(schema, 1, v, bytes(q))

    record = _records(schema, 1)[0]
    payloads = RecordPayloads("bench")
    lines = LineProtocolEncoder("bench")
    with workdir("components") as folder:
        append_us, read_us = _journal_costs(folder, schema, n)
    row = {
        "values_per_record": METER_VALUES,
        "decode_us": _cpu_us_per_call(lambda: decode(raw, values, quality), min_s),
        "poll_to_record_us": _cpu_us_per_call(build_record, min_s),
        "journal_append_commit_us": append_us,
        "journal_read_us": read_us,
        "mqtt_json_us": _cpu_us_per_call(lambda: payloads.encode(record, historical=False), min_s),
        "line_protocol_us": _cpu_us_per_call(lambda: lines.record_line(record), min_s),
    }
    # One poll's share of the project's own work: decode + record, journal once, read back once
    # per sink (two), one JSON payload, one line.
    row["project_share_us"] = (
        row["poll_to_record_us"] + append_us + 2 * read_us + row["mqtt_json_us"] + row["line_protocol_us"]
    )
    return row


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    notes = [
        "CPU (time.process_time, all threads) per record; journal figures over "
        "50,000 records (smoke: 2,000), commit every 0.5 s.",
        "project_share_us = poll_to_record + journal_append_commit + 2 x journal_read + mqtt_json + line_protocol.",
    ]
    return scenario_result(NAME, TITLE, rows, notes=notes)
