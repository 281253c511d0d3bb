"""The replay window against real servers killed with SIGKILL right after they acknowledged.

VictoriaMetrics (like InfluxDB and Mosquitto) answers a write before the data is on disk; a
``kill -9`` a moment later loses it. The sinks send the last ``replay_window_s`` of acknowledged
data again after any failure, reconnection or restart, so the database ends up with every record,
once per (series, time)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig
from daq.journal import Journal, JournalReader
from daq.sinks import InfluxSink, MqttSink, cursor_names
from daq.sinks.replay import replay_cursor_names
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer, VictoriaMetricsServer
from tests.system.sink_helpers import (
    MqttCollector,
    SyntheticBench,
    eventually,
    influx_config,
    mqtt_config,
    stop_task,
    unflagged_repeats,
)

pytestmark = pytest.mark.system

BENCH = "bench-a"


@pytest.fixture
def vm_dedup(tmp_path: Path):
    """VictoriaMetrics as a lab should run it: one sample per series and millisecond."""
    with VictoriaMetricsServer(tmp_path / "vm-dedup", dedup=True) as server:
        yield server


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    yield j
    j.close()


def v2_sink(journal: Journal, url: str, **overrides) -> InfluxSink:
    config = InfluxSinkConfig.model_validate(influx_config(url, api="v2", bucket="battery", org="lab", **overrides))
    return InfluxSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)


def mqtt_sink(journal: Journal, port: int, **overrides) -> MqttSink:
    config = MqttSinkConfig.model_validate(mqtt_config(port, **overrides))
    return MqttSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)


def vm_samples(server: VictoriaMetricsServer) -> Counter[tuple[str, str, int]]:
    """How often each (series, device, t_ms) is stored."""
    samples: Counter[tuple[str, str, int]] = Counter()
    for series in server.export('{__name__=~"(cycler|bms)_.*"}'):
        name, device = series["metric"]["__name__"], series["metric"]["device"]
        samples.update((name, device, t) for t in series["timestamps"])
    return samples


SAVED = "Saving in-memory database"


async def broker_saved(broker: MosquittoServer) -> None:
    """Wait for the broker's next autosave (every second in the test broker) to be written."""
    saves = broker.broker_log().count(SAVED)
    await eventually(lambda: broker.broker_log().count(SAVED) > saves, what="the broker's autosave")


def ms_keys(bench: SyntheticBench) -> set[tuple[str, int]]:
    return {(d, t // 1_000_000) for d, t in bench.keys()}


async def test_v2_writes_acknowledged_just_before_a_database_crash_are_written_again(
    vm_dedup: VictoriaMetricsServer, journal: Journal
):
    victoria_metrics = vm_dedup
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = v2_sink(journal, victoria_metrics.url)
    task = asyncio.create_task(sink.run(), name="sink:influx")
    try:
        for _ in range(3):
            bench.write(100)
            n = len(bench.expected)
            await eventually(lambda n=n: sink.metrics()["cursor"] == n, what="acknowledged")
            # acknowledged, still in the database's memory: killed before it flushes
            await asyncio.to_thread(victoria_metrics.kill)
            await asyncio.to_thread(victoria_metrics.start)
        bench.write(10)
        want = ms_keys(bench)
        await eventually(
            lambda: want <= {(d, t) for _, d, t in vm_samples(victoria_metrics)},
            what="every record acknowledged before a crash in the database",
        )
    finally:
        await stop_task(task)
    assert sink.metrics()["replayed_records"] > 0
    twice = [k for k, n in vm_samples(victoria_metrics).items() if n > 1]
    assert not twice, f"stored more than once: {twice[:5]}"


async def test_v2_restart_of_the_sink_sends_the_window_again_and_persists_its_floor(
    victoria_metrics: VictoriaMetricsServer, journal: Journal
):
    bench = SyntheticBench(journal, bench_id=BENCH)
    first = v2_sink(journal, victoria_metrics.url)
    task = asyncio.create_task(first.run(), name="sink:influx")
    try:
        bench.write(100)
        await eventually(lambda: first.metrics()["cursor"] == 200, what="first part acknowledged")
    finally:
        await stop_task(task)
    with JournalReader(journal.path) as reader:
        assert reader.get_cursor(replay_cursor_names("influx")[0]) == 0  # all of it within the window
    # the database crashed while the bench was down: the restarted sink writes the window again
    await asyncio.to_thread(victoria_metrics.kill)
    await asyncio.to_thread(victoria_metrics.start)
    second = v2_sink(journal, victoria_metrics.url)
    task = asyncio.create_task(second.run(), name="sink:influx")
    try:
        bench.write(10)
        await eventually(lambda: second.metrics()["cursor"] == 220, what="second part acknowledged")
    finally:
        await stop_task(task)
    assert second.metrics()["replayed_records"] == 200
    want = ms_keys(bench)
    await eventually(lambda: want <= {(d, t) for _, d, t in vm_samples(victoria_metrics)}, what="every record")


async def test_zero_window_sends_nothing_again(victoria_metrics: VictoriaMetricsServer, journal: Journal):
    bench = SyntheticBench(journal, bench_id=BENCH)
    first = v2_sink(journal, victoria_metrics.url, replay_window_s=0)
    task = asyncio.create_task(first.run(), name="sink:influx")
    try:
        bench.write(50)
        await eventually(lambda: first.metrics()["cursor"] == 100, what="acknowledged")

        def floor_and_cursor() -> tuple[int, int]:
            with JournalReader(journal.path) as reader:
                return reader.get_cursor(replay_cursor_names("influx")[0]), reader.get_cursor(cursor_names("influx")[0])

        # the floor is persisted just after the cursor moves: wait for it rather than race the stop
        await eventually(lambda: floor_and_cursor() == (100, 100), what="floor at the cursor")
    finally:
        await stop_task(task)
    assert first.metrics()["replayed_records"] == 0


async def test_mqtt_messages_acknowledged_before_a_broker_crash_reach_a_persistent_subscriber(
    mosquitto: MosquittoServer, journal: Journal
):
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    # The subscriber's session must survive the crash (saved by the broker's persistence), or the
    # broker forgets it and nothing is queued for it while it reconnects.
    await broker_saved(mosquitto)
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = mqtt_sink(journal, mosquitto.port)
    task = asyncio.create_task(sink.run(), name="sink:mqtt")
    try:
        bench.write(50)
        await eventually(lambda: sink.metrics()["cursor"] == 100, what="acknowledged")
        await asyncio.to_thread(mosquitto.kill)
        bench.write(50)  # journaled while the broker is down
        await asyncio.to_thread(mosquitto.start)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="every record on MQTT")
        await eventually(lambda: sink.metrics()["cursor"] == 200, what="all acknowledged")
    finally:
        await stop_task(task)
        await collector.stop()
    # the first copy may be live; what the sink sent again is flagged historical
    assert not unflagged_repeats(m for m in collector.messages if str(m.topic).endswith("/data"))
    assert sink.metrics()["replayed_records"] >= 100
