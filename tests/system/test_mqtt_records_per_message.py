"""``records_per_message`` > 1 against a real Mosquitto: arrays of one device's records, each
record exactly once, the cursor and the counts still per record."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from daq.config.sinks import MqttSinkConfig
from daq.journal import Journal
from daq.sinks import MqttSink
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer
from tests.system.sink_helpers import MqttCollector, SyntheticBench, eventually, mqtt_config, stop_task

pytestmark = pytest.mark.system

BENCH = "bench-a"


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    yield j
    j.close()


async def test_records_grouped_per_device_arrive_once_each(mosquitto: MosquittoServer, journal: Journal):
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    config = MqttSinkConfig.model_validate(mqtt_config(mosquitto.port, records_per_message=5, batch_max_records=50))
    sink = MqttSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)
    task = asyncio.create_task(sink.run(), name="sink:mqtt")
    try:
        bench.write(60)  # 120 records, two devices
        await eventually(lambda: sink.metrics()["cursor"] == 120, what="all acknowledged")
        await eventually(lambda: sum(len(m) for m in collector.payloads("/data")) >= 120, what="all on MQTT")
        metrics = sink.metrics()
    finally:
        await stop_task(task)
        await collector.stop()

    messages = [(str(m.topic), m) for m in collector.messages if str(m.topic).endswith("/data")]
    arrays = collector.payloads("/data")
    assert all(isinstance(a, list) and 1 <= len(a) <= 5 for a in arrays)
    assert len(arrays) < 120  # fewer messages than records: that is the point
    for (topic, _), array in zip(messages, arrays, strict=True):
        devices = {p["device"] for p in array}
        assert len(devices) == 1 and topic == f"test/{BENCH}/{devices.pop()}/data"
        assert [p["seq"] for p in array] == sorted(p["seq"] for p in array)
    seqs = Counter(p["seq"] for a in arrays for p in a)
    assert sorted(seqs) == list(range(1, 121)) and set(seqs.values()) == {1}
    assert {(p["device"], p["t_ns"]) for a in arrays for p in a} == bench.keys()
    assert metrics["delivered_records"] == 120
