"""Store-and-forward across a process kill: a bench process journals and forwards to MQTT and
InfluxDB (v2, VictoriaMetrics), both servers go down, the process is killed with SIGKILL while its
backlog is pending, and a new process catches up: every journaled record reaches both."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig
from daq.journal import Journal, JournalReader
from daq.sinks import build_sink, cursor_names
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer, VictoriaMetricsServer, wait_until
from tests.system.sink_helpers import MqttCollector, eventually, influx_config, journal_keys, mqtt_config, stop_task

pytestmark = pytest.mark.system

BENCH = "bench-a"
ROOT = Path(__file__).resolve().parents[2]


def spawn_bench(tmp_path: Path, journal: Path, sinks: list[dict]) -> subprocess.Popen[bytes]:
    spec = tmp_path / "child.json"
    spec.write_text(json.dumps({"journal": str(journal), "bench_id": BENCH, "sinks": sinks}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "child.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.system.sink_helpers", str(spec)], cwd=ROOT, env=env, stdout=log, stderr=log
        )


def journal_state(path: Path) -> tuple[int, int, int]:
    """(last record seq, mqtt cursor, influx cursor), 0s while the file does not exist yet."""
    if not path.exists():
        return 0, 0, 0
    try:
        with JournalReader(path) as reader:
            return (
                reader.last_record_seq(),
                reader.get_cursor(cursor_names("mqtt")[0]),
                reader.get_cursor(cursor_names("influx")[0]),
            )
    except sqlite3.OperationalError:  # the child has created the file but not its tables yet
        return 0, 0, 0


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def test_kill_9_with_backlog_pending_then_restart_delivers_everything(
    tmp_path: Path, mosquitto: MosquittoServer, victoria_metrics: VictoriaMetricsServer
):
    journal_path = tmp_path / "journal.sqlite"
    sinks = [
        mqtt_config(mosquitto.port),
        influx_config(victoria_metrics.url, api="v2", bucket="battery", org="lab"),
    ]
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    try:
        await _kill_and_recover(tmp_path, journal_path, sinks, collector, mosquitto, victoria_metrics)
    finally:
        await collector.stop()


async def _kill_and_recover(
    tmp_path: Path,
    journal_path: Path,
    sinks: list[dict],
    collector: MqttCollector,
    mosquitto: MosquittoServer,
    victoria_metrics: VictoriaMetricsServer,
) -> None:
    child = spawn_bench(tmp_path, journal_path, sinks)
    try:
        # both sinks deliver live for a while...
        await asyncio.to_thread(
            wait_until, lambda: min(journal_state(journal_path)[1:]) > 200, timeout_s=30, what="live delivery"
        )
        # ...then both servers go down and a backlog builds up in the journal
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(victoria_metrics.stop)
        stalled = journal_state(journal_path)
        await asyncio.to_thread(
            wait_until,
            lambda: journal_state(journal_path)[0] > stalled[0] + 1000,
            timeout_s=30,
            what="backlog of 1000 records",
        )
        kill9(child)
    finally:
        if child.poll() is None:
            kill9(child)
    last, mqtt_cursor, influx_cursor = journal_state(journal_path)
    assert mqtt_cursor < last and influx_cursor < last, "the kill must leave a backlog for both sinks"

    # a new bench process: servers back, sinks resume from their cursors
    await asyncio.to_thread(mosquitto.start)
    await asyncio.to_thread(victoria_metrics.start)
    journal = Journal(journal_path)
    journal.open()
    built = [
        build_sink(MqttSinkConfig.model_validate(sinks[0]), bench_id=BENCH, journal_path=journal_path, journal=journal),
        build_sink(
            InfluxSinkConfig.model_validate(sinks[1]), bench_id=BENCH, journal_path=journal_path, journal=journal
        ),
    ]
    tasks = [asyncio.create_task(s.run(), name=f"sink:{s.name}") for s in built]
    expected = journal_keys(journal_path)
    assert len(expected) == last
    try:
        await eventually(lambda: set(expected) <= collector.data_keys(), timeout_s=60, what="all records on MQTT")

        def in_vm() -> set[tuple[str, int]]:
            keys = set()
            for series in victoria_metrics.export('{__name__=~"(cycler|bms)_.*"}'):
                keys.update((series["metric"]["device"], t) for t in series["timestamps"])
            return keys

        want = {(d, t // 1_000_000) for d, t in expected}
        await eventually(lambda: want <= in_vm(), timeout_s=60, what="all records in VictoriaMetrics")
        await eventually(lambda: all(s.metrics()["backlog_records"] == 0 for s in built), what="backlogs drained")
    finally:
        for task in tasks:
            await stop_task(task)
        journal.close()


async def test_last_will_marks_the_bench_offline_when_the_process_dies(tmp_path: Path, mosquitto: MosquittoServer):
    journal_path = tmp_path / "journal.sqlite"
    collector = await MqttCollector(mosquitto.port, "test/bench-a/status").start()
    child = spawn_bench(tmp_path, journal_path, [mqtt_config(mosquitto.port)])
    try:
        await eventually(
            lambda: any(p["state"] == "online" for p in collector.on("test/bench-a/status")), what="online"
        )
        kill9(child)
        await eventually(lambda: collector.on("test/bench-a/status")[-1]["state"] == "offline", what="Last Will")
    finally:
        if child.poll() is None:
            kill9(child)
        await collector.stop()
    assert collector.on("test/bench-a/status")[-1] == {"bench": BENCH, "state": "offline", "reason": "connection lost"}
    retained = [m for m in collector.messages if str(m.topic) == "test/bench-a/status"]
    assert retained[-1].qos == 1
