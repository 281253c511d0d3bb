"""The sinks' live path: committed records handed over in memory, the journal read back only for
what the ring no longer holds. Against a real Mosquitto and a real VictoriaMetrics (behind a
forwarding proxy that counts the lines it passes): every record arrives exactly once while a sink
falls behind the ring (a commit larger than the ring) and comes back to it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig
from daq.journal import Journal
from daq.sinks import InfluxSink, MqttSink
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer, VictoriaMetricsServer
from tests.system.sink_helpers import (
    FaultProxy,
    MqttCollector,
    SyntheticBench,
    eventually,
    influx_config,
    mqtt_config,
    stop_task,
)

pytestmark = pytest.mark.system

BENCH = "bench-a"
RING = 16  # records: far fewer than one 100-poll commit of two devices


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    j.live_ring(capacity=RING)  # before the sinks ask for it: they share this small one
    yield j
    j.close()


async def deliver_live_in_small_commits(bench: SyntheticBench, delivered, polls: int) -> None:
    """Two records per commit, each delivered before the next: the sink never leaves the ring."""
    for _ in range(polls):
        bench.write(1)
        target = bench.journal.committed_record_seq
        await eventually(lambda target=target: delivered() >= target, what=f"record {target} delivered")


async def test_mqtt_sink_falls_behind_the_ring_and_back_without_loss_or_repeat(
    mosquitto: MosquittoServer, journal: Journal
):
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    config = MqttSinkConfig.model_validate(mqtt_config(mosquitto.port, batch_max_records=50))
    sink = MqttSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)
    task = asyncio.create_task(sink.run(), name="sink:mqtt")
    try:
        await eventually(lambda: sink.metrics()["connected"], what="sink connected")
        bench.write(100)  # one commit of 200 records: the ring keeps only the newest few
        await eventually(lambda: sink.metrics()["cursor"] == 200, what="backlog delivered")
        after_backlog = sink.metrics()
        assert after_backlog["records_from_journal"] >= 200 - RING  # read back from SQLite
        await deliver_live_in_small_commits(bench, lambda: sink.metrics()["cursor"], 10)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="every record on MQTT")
        final = sink.metrics()
    finally:
        await stop_task(task)
        await collector.stop()

    # back on the ring: the 20 live records came from memory, none from SQLite
    assert final["records_from_journal"] == after_backlog["records_from_journal"]
    assert final["records_from_ring"] - after_backlog["records_from_ring"] == 20
    seqs = Counter(p["seq"] for p in collector.payloads("/data"))
    assert sorted(seqs) == list(range(1, 221))
    assert set(seqs.values()) == {1}
    # live and replayed records carry the same content
    by_seq = {p["seq"]: p for p in collector.payloads("/data")}
    for key, rec in bench.expected.items():
        seq = next(s for s, p in by_seq.items() if (p["device"], p["t_ns"]) == key)
        assert by_seq[seq]["step"] == rec.step and len(by_seq[seq]["values"]) == len(rec.values)


async def test_influx_sink_falls_behind_the_ring_and_back_without_loss_or_repeat(
    victoria_metrics: VictoriaMetricsServer, journal: Journal
):
    proxy = await FaultProxy(victoria_metrics.url).start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    config = InfluxSinkConfig.model_validate(
        influx_config(proxy.url, api="v2", bucket="battery", org="lab", batch_max_records=64)
    )
    sink = InfluxSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)
    task = asyncio.create_task(sink.run(), name="sink:influx")
    try:
        bench.write(100)
        await eventually(lambda: sink.metrics()["cursor"] == 200, what="backlog delivered")
        after_backlog = sink.metrics()
        assert after_backlog["records_from_journal"] >= 200 - RING
        await deliver_live_in_small_commits(bench, lambda: sink.metrics()["cursor"], 10)
        final = sink.metrics()
    finally:
        await stop_task(task)
        await proxy.stop()

    assert final["records_from_journal"] == after_backlog["records_from_journal"]
    assert final["records_from_ring"] - after_backlog["records_from_ring"] == 20
    # one line per record reached the database: none lost, none sent twice
    assert proxy.forwarded_lines == 220
    assert set(proxy.statuses) == {204}
    good = sum(1 for r in bench.expected.values() if r.device == "cycler-1" and r.quality[0] == 0)

    def stored() -> int:
        return sum(len(s["timestamps"]) for s in victoria_metrics.export('{__name__="cycler_voltage_v"}'))

    await eventually(lambda: stored() == good, what="every good voltage in VictoriaMetrics")
