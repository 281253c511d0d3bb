"""InfluxDB sink against real servers started by the test: InfluxDB 1.x (``api: v1``, read back
with InfluxQL) and VictoriaMetrics (``api: v2``, read back with its export API). Every journaled
record must arrive, across outages, error answers, restarts and refusals."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from daq.config.sinks import InfluxSinkConfig
from daq.journal import Journal, JournalReader
from daq.sinks import InfluxSink, cursor_names
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import INFLUX_ADMIN, INFLUX_PASSWORD, InfluxV1Server, VictoriaMetricsServer
from tests.system.sink_helpers import (
    BMS,
    CYCLER,
    POISON,
    FaultProxy,
    SyntheticBench,
    eventually,
    influx_config,
    stop_task,
)

pytestmark = pytest.mark.system

BENCH = "bench-a"
DB = "battery"


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    yield j
    j.close()


def make_sink(journal: Journal, url: str, **overrides) -> InfluxSink:
    config = InfluxSinkConfig.model_validate(influx_config(url, **overrides))
    return InfluxSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)


def v1_sink(journal: Journal, server: InfluxV1Server, **overrides) -> InfluxSink:
    return make_sink(journal, server.url, api="v1", database=DB, **overrides)


def v2_sink(journal: Journal, url: str, **overrides) -> InfluxSink:
    return make_sink(journal, url, api="v2", bucket="battery", org="lab", **overrides)


def start(sink: InfluxSink) -> asyncio.Task[None]:
    return asyncio.create_task(sink.run(), name=f"sink:{sink.name}")


# --- reading back ------------------------------------------------------------------------------


def v1_keys(server: InfluxV1Server) -> set[tuple[str, int]]:
    rows = server.select('SELECT * FROM "cycler", "bms", "meter"', db=DB)
    return {(r["device"], r["time"]) for r in rows}


def vm_keys(server: VictoriaMetricsServer) -> set[tuple[str, int]]:
    """(device, t_ms) of every sample, from every field series (VictoriaMetrics keeps milliseconds)."""
    keys: set[tuple[str, int]] = set()
    for series in server.export('{__name__=~"(cycler|bms|meter)_.*"}'):
        device = series["metric"]["device"]
        keys.update((device, t) for t in series["timestamps"])
    return keys


def ms_keys(keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
    return {(d, t // 1_000_000) for d, t in keys}


async def all_in_v1(server: InfluxV1Server, bench: SyntheticBench) -> None:
    want = bench.keys()
    await eventually(lambda: want <= v1_keys(server), what="every record in InfluxDB 1.x")


async def all_in_vm(server: VictoriaMetricsServer, bench: SyntheticBench, *, timeout_s: float = 30) -> None:
    want = ms_keys(bench.keys())
    await eventually(lambda: want <= vm_keys(server), timeout_s=timeout_s, what="every record in VictoriaMetrics")


# --- v1 against InfluxDB 1.x -------------------------------------------------------------------


async def test_v1_schema_tags_fields_quality_and_ns_timestamps(influxdb_v1: InfluxV1Server, journal: Journal):
    influxdb_v1.create_database(DB)
    bench = SyntheticBench(journal, bench_id=BENCH)
    journal.append_event(bench.run_id, bench.t_ns, "alarm", {"id": "cell_ov", "state": "active", "note": 'a "q"'})
    bench.write(120, step=3, cycle=2)
    sink = v1_sink(journal, influxdb_v1)
    task = start(sink)
    try:
        await all_in_v1(influxdb_v1, bench)
        await eventually(lambda: sink.metrics()["delivered_events"] == 1, what="event delivered")
    finally:
        await stop_task(task)

    rows = {(r["device"], r["time"]): r for r in influxdb_v1.select('SELECT * FROM "cycler", "bms"', db=DB)}
    assert len(rows) == len(bench.expected) == 240
    for key, rec in bench.expected.items():
        row = rows[key]  # nanosecond timestamp preserved exactly
        assert row["_measurement"] == rec.schema.kind
        assert (row["bench"], row["run"], row["step"], row["cycle"]) == (BENCH, bench.run_id, "3", "2")
        for ch, v, q in zip(rec.schema.channels, rec.values, rec.quality, strict=True):
            if q == 0 and not math.isnan(v):
                assert row[ch.name] == pytest.approx(v, abs=0, rel=1e-15)
                assert row.get(f"{ch.name}_quality") is None
            else:
                assert row[ch.name] is None  # a bad value is not written as a value...
                assert row[f"{ch.name}_quality"] == q  # ...its quality code is
    events = influxdb_v1.select('SELECT * FROM "daq_events"', db=DB)
    assert len(events) == 1 and events[0]["kind"] == "alarm"
    assert json.loads(events[0]["data"])["note"] == 'a "q"'
    with JournalReader(journal.path) as reader:
        assert reader.get_cursor(cursor_names("influx")[0]) == 240
        assert reader.get_cursor(cursor_names("influx")[1]) == 1


async def test_v1_database_stopped_then_restarted_loses_nothing(influxdb_v1: InfluxV1Server, journal: Journal):
    influxdb_v1.create_database(DB)
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v1_sink(journal, influxdb_v1)
    task = start(sink)
    try:
        bench.write(50)
        await all_in_v1(influxdb_v1, bench)
        await asyncio.to_thread(influxdb_v1.stop)
        bench.write(300)
        await eventually(lambda: "cannot connect" in sink.metrics()["last_error"], what="outage noticed")
        # >=: under load influxd may answer 500 to a write it still stores; that batch is then pending too
        await eventually(lambda: sink.metrics()["backlog_records"] >= 600, what="backlog counted")
        assert sink.metrics()["backlog_s"] > 0
        await asyncio.to_thread(influxdb_v1.start)
        bench.write(50)
        await all_in_v1(influxdb_v1, bench)
        await eventually(lambda: sink.metrics()["backlog_records"] == 0, what="backlog drained")
    finally:
        await stop_task(task)
    assert sink.metrics()["connected"] is True


async def test_v1_wrong_password_is_a_clear_error_then_right_one_delivers(
    influxdb_v1_auth: InfluxV1Server, journal: Journal, tmp_path: Path, monkeypatch
):
    influxdb_v1_auth.create_database(DB)
    monkeypatch.setenv("TEST_INFLUX_USER", INFLUX_ADMIN)
    monkeypatch.setenv("TEST_INFLUX_PASSWORD", "wrong-password-7")
    bench = SyntheticBench(journal, bench_id=BENCH)
    bench.write(20)
    creds = {"username": {"env": "TEST_INFLUX_USER"}, "password": {"env": "TEST_INFLUX_PASSWORD"}}
    sink = v1_sink(journal, influxdb_v1_auth, **creds)
    task = start(sink)
    try:
        await eventually(lambda: "refused the credentials" in sink.metrics()["last_error"], what="auth refused")
    finally:
        await stop_task(task)
    m = sink.metrics()
    assert "environment variable TEST_INFLUX_PASSWORD" in m["last_error"] and "wrong-password-7" not in m["last_error"]
    assert m["delivered_records"] == 0 and m["backlog_records"] == 40

    secret = tmp_path / "influx.pass"
    secret.write_text(INFLUX_PASSWORD)
    secret.chmod(0o600)
    sink = v1_sink(journal, influxdb_v1_auth, username={"env": "TEST_INFLUX_USER"}, password={"file": str(secret)})
    task = start(sink)
    try:
        await all_in_v1(influxdb_v1_auth, bench)
    finally:
        await stop_task(task)


async def test_v1_missing_database_is_reported_and_retried(influxdb_v1: InfluxV1Server, journal: Journal):
    bench = SyntheticBench(journal, bench_id=BENCH)
    bench.write(10)
    sink = v1_sink(journal, influxdb_v1)
    task = start(sink)
    try:
        await eventually(lambda: "database 'battery' not found" in sink.metrics()["last_error"], what="404")
        influxdb_v1.create_database(DB)
        await all_in_v1(influxdb_v1, bench)
    finally:
        await stop_task(task)


# --- v2 against VictoriaMetrics ----------------------------------------------------------------


async def test_v2_every_record_reaches_victoria_metrics(victoria_metrics: VictoriaMetricsServer, journal: Journal):
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v2_sink(journal, victoria_metrics.url, batch_max_records=64)
    task = start(sink)
    try:
        bench.write(400)
        await all_in_vm(victoria_metrics, bench)
    finally:
        await stop_task(task)
    series = victoria_metrics.export('{__name__="cycler_voltage_v"}')
    assert series[0]["metric"] == {
        "__name__": "cycler_voltage_v",
        "bench": BENCH,
        "device": "cycler-1",
        "run": bench.run_id,
        "step": "1",
        "cycle": "1",
    }
    # the bad values are absent, their quality codes are there
    quality = victoria_metrics.export('{__name__="cycler_power_w_quality"}')
    assert len(quality[0]["values"]) == sum(
        1 for r in bench.expected.values() if r.device == "cycler-1" and r.quality[2]
    )


async def test_v2_gzip_bodies_arrive(victoria_metrics: VictoriaMetricsServer, journal: Journal):
    bench = SyntheticBench(journal, bench_id=BENCH)
    task = start(v2_sink(journal, victoria_metrics.url, gzip=True))
    try:
        bench.write(100)
        await all_in_vm(victoria_metrics, bench)
    finally:
        await stop_task(task)


async def test_v2_500_and_429_answers_back_off_and_lose_nothing(
    victoria_metrics: VictoriaMetricsServer, journal: Journal
):
    proxy = await FaultProxy(victoria_metrics.url).start()
    proxy.script = [(500, {})] * 3 + [(503, {"Retry-After": "0.3"})] + [(429, {"Retry-After": "1"})] * 2
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v2_sink(journal, proxy.url)
    task = start(sink)
    try:
        bench.write(100)
        await eventually(lambda: sink.metrics()["errors"] >= 1, what="first failure")
        bench.write(100)
        await all_in_vm(victoria_metrics, bench)
        await eventually(lambda: sink.metrics()["cursor"] == 400, what="all acknowledged")
    finally:
        await stop_task(task)
        await proxy.stop()
    assert proxy.statuses[:6] == [500, 500, 500, 503, 429, 429]
    m = sink.metrics()
    assert m["errors"] == 6 and "HTTP 429" in m["last_error"] and "wait 1 s" in m["last_error"]
    assert m["rejected_records"] == 0 and m["connected"] is True


async def test_v2_413_splits_the_batch(victoria_metrics: VictoriaMetricsServer, journal: Journal):
    proxy = await FaultProxy(victoria_metrics.url).start()
    proxy.max_body = 4_000  # a few dozen lines
    bench = SyntheticBench(journal, bench_id=BENCH)
    bench.write(300)  # all waiting before the sink starts: one big batch
    sink = v2_sink(journal, proxy.url)
    task = start(sink)
    try:
        await all_in_vm(victoria_metrics, bench)
    finally:
        await stop_task(task)
        await proxy.stop()
    assert 413 in proxy.statuses and proxy.forwarded_lines == 600
    assert sink.metrics()["rejected_records"] == 0


async def test_v2_refused_record_is_logged_counted_and_passed(
    victoria_metrics: VictoriaMetricsServer, journal: Journal
):
    proxy = await FaultProxy(victoria_metrics.url).start()
    proxy.reject_if = lambda body: b"device=poison" in body
    bench = SyntheticBench(journal, bench_id=BENCH, schemas=(CYCLER, BMS, POISON))
    bench.write(1, schemas=(CYCLER, BMS))
    bench.write(1, schemas=(POISON,))
    bench.write(99, schemas=(CYCLER, BMS))
    sink = v2_sink(journal, proxy.url)
    task = start(sink)
    try:
        await eventually(lambda: sink.metrics()["cursor"] == 201, what="cursor past everything")
        good = {k for k in bench.keys() if k[0] != "poison"}
        await eventually(lambda: ms_keys(good) <= vm_keys(victoria_metrics), what="good records delivered")
    finally:
        await stop_task(task)
        await proxy.stop()
    m = sink.metrics()
    assert m["rejected_records"] == 1 and m["delivered_records"] == 200
    assert "unable to parse: injected rejection" in m["last_rejection"] and "poison" in m["last_rejection"]
    log = [json.loads(line) for line in sink.rejection_log_path.read_text().splitlines()]
    assert [(e["device"], e["seq"], e["status"]) for e in log] == [("poison", 3, 400)]
    with JournalReader(journal.path) as reader:  # also journaled as an event of the run
        events = reader.run_events(bench.run_id)
    assert [e.kind for e in events] == ["sink_rejected"] and events[0].data["seq"] == 3


async def test_v2_sink_restart_resumes_from_cursor_without_resending(
    victoria_metrics: VictoriaMetricsServer, journal: Journal
):
    proxy = await FaultProxy(victoria_metrics.url).start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    # replay window off: a restart resends nothing (test_replay_window.py covers it on)
    first = v2_sink(journal, proxy.url, replay_window_s=0)
    task = start(first)
    try:
        bench.write(100)
        # the database may show the data a moment before the sink has its answer and moves the cursor
        await eventually(lambda: first.metrics()["cursor"] == 200, what="first part acknowledged")
        await stop_task(task)
        bench.write(150)  # journaled while no sink runs
        second = v2_sink(journal, proxy.url, replay_window_s=0)
        task = start(second)
        await eventually(lambda: second.metrics()["cursor"] == 500, what="second part acknowledged")
        await all_in_vm(victoria_metrics, bench)
    finally:
        await stop_task(task)
        await proxy.stop()
    assert proxy.forwarded_lines == 500  # nothing sent twice
    assert second.metrics()["delivered_records"] == 300


async def test_v2_database_unreachable_at_start_then_appears(tmp_path: Path, journal: Journal):
    server = VictoriaMetricsServer(tmp_path / "late-vm")  # configured, not started
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v2_sink(journal, server.url)
    task = start(sink)
    try:
        bench.write(100)
        await eventually(lambda: "cannot connect" in sink.metrics()["last_error"], what="refused")
        await eventually(lambda: sink.metrics()["backlog_records"] == 200, what="backlog seen")
        await asyncio.to_thread(server.start)
        bench.write(20)
        await all_in_vm(server, bench)
    finally:
        await stop_task(task)
        server.kill()


async def test_v2_database_stopped_then_restarted(victoria_metrics: VictoriaMetricsServer, journal: Journal):
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v2_sink(journal, victoria_metrics.url)
    task = start(sink)
    try:
        bench.write(50)
        await all_in_vm(victoria_metrics, bench)
        await asyncio.to_thread(victoria_metrics.stop)
        bench.write(200)
        await eventually(lambda: "cannot connect" in sink.metrics()["last_error"], what="outage noticed")
        await asyncio.to_thread(victoria_metrics.start)
        bench.write(50)
        await all_in_vm(victoria_metrics, bench)
    finally:
        await stop_task(task)
