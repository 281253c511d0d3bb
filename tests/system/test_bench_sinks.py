"""A whole simulated bench with MQTT and both InfluxDB modes: every journaled record reaches every
sink, including a sink whose server is not there when the bench starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from daq.bench import Bench
from daq.config.loader import load_bench
from daq.journal import JournalReader
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import InfluxV1Server, MosquittoServer, VictoriaMetricsServer
from tests.system.sink_helpers import MqttCollector, influx_config, mqtt_config

from tests.helpers import sim_bench, wait_until  # isort: skip  (after the star import, which has its own)


async def stop_polling_and_drain(bench: Bench) -> None:
    """Stop producing records, then wait until every sink has delivered its whole backlog."""
    for task in bench._tasks:
        if task.get_name().startswith("poll:"):
            task.cancel()
    await asyncio.sleep(0.1)
    bench.journal.flush()
    last = bench.journal.committed_record_seq

    def drained() -> bool:
        return all(s.metrics()["cursor"] >= last for s in bench.sinks)

    await wait_until(drained, timeout=60, what="every sink drained")


pytestmark = pytest.mark.system


def journal_keys(path: Path, run_id: str) -> set[tuple[str, int]]:
    with JournalReader(path) as reader:
        return {(r.device, r.t_ns) for r in reader.iter_run_records(run_id)}


async def test_bench_delivers_every_record_to_mqtt_influx_v1_and_v2(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb_v1: InfluxV1Server
) -> None:
    vm = VictoriaMetricsServer(tmp_path / "vm")  # started only after the bench: unreachable at start
    bench_file = sim_bench(tmp_path, poll_period_s=0.05)
    cfg = yaml.safe_load(bench_file.read_text())
    influxdb_v1.create_database("battery")
    cfg["sinks"] = [
        mqtt_config(mosquitto.port),
        influx_config(influxdb_v1.url, name="influx-v1", api="v1", database="battery"),
        influx_config(vm.url, name="influx-v2", api="v2", bucket="battery", org="lab"),
    ]
    bench_file.write_text(yaml.safe_dump(cfg))
    collector = await MqttCollector(mosquitto.port, "test/#").start()
    bench = Bench(load_bench(bench_file))
    await bench.start()
    try:
        await wait_until(lambda: bench.records_seen >= 60, what="60 records")
        await asyncio.to_thread(vm.start)
        await wait_until(lambda: bench.records_seen >= 120, what="120 records")
        await stop_polling_and_drain(bench)
    finally:
        await bench.stop()
    try:
        want = journal_keys(tmp_path / "journal.sqlite", bench.run_id)
        assert len(want) == bench.records_seen >= 120
        await wait_until(lambda: want <= collector.data_keys(), timeout=30, what="every record on MQTT")
        rows = influxdb_v1.select('SELECT * FROM "cycler"', db="battery")
        assert want <= {(r["device"], r["time"]) for r in rows}

        def vm_keys() -> set[tuple[str, int]]:
            keys: set[tuple[str, int]] = set()
            for series in vm.export('{__name__="cycler_voltage_v"}'):
                keys.update((series["metric"]["device"], t) for t in series["timestamps"])
            return keys

        want_ms = {(d, t // 1_000_000) for d, t in want}  # VictoriaMetrics keeps milliseconds
        # acknowledged writes become searchable a moment after the 2xx: poll, don't sleep
        await wait_until(lambda: want_ms <= vm_keys(), timeout=30, what="every record in VictoriaMetrics")
    finally:
        await collector.stop()
        vm.stop()


async def test_sink_metrics_appear_in_the_status(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    bench_file = sim_bench(tmp_path, poll_period_s=0.05)
    cfg = yaml.safe_load(bench_file.read_text())
    cfg["sinks"] = [mqtt_config(mosquitto.port)]
    bench_file.write_text(yaml.safe_dump(cfg))
    bench = Bench(load_bench(bench_file))
    await bench.start()
    try:
        await wait_until(
            lambda: bench.last_status.get("sinks", {}).get("mqtt", {}).get("delivered_records", 0) > 10,
            what="sink metrics in the status",
        )
        metrics = bench.last_status["sinks"]["mqtt"]
        assert metrics["connected"] and metrics["errors"] == 0
    finally:
        await bench.stop()
