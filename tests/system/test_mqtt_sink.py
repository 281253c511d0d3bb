"""MQTT sink against a real Mosquitto started by the test: every journaled record arrives, across
broker outages, sink restarts, TLS and login failures."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest

from daq.config.sinks import MqttSinkConfig, TlsConfig
from daq.errors import ConfigError
from daq.journal import Journal, JournalReader
from daq.records import Quality
from daq.sinks import MqttSink, cursor_names
from daq.sinks.credentials import client_ssl_context
from daq.sinks.mqtt_payload import device_state
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MQTT_PASSWORD, MQTT_USER, MosquittoServer, TlsMaterial, free_port
from tests.system.sink_helpers import MqttCollector, SyntheticBench, eventually, mqtt_config, stop_task

pytestmark = pytest.mark.system

BENCH = "bench-a"


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    yield j
    j.close()


def make_sink(journal: Journal, port: int, **overrides) -> MqttSink:
    config = MqttSinkConfig.model_validate(mqtt_config(port, **overrides))
    return MqttSink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)


def start(sink: MqttSink) -> asyncio.Task[None]:
    return asyncio.create_task(sink.run(), name=f"sink:{sink.name}")


async def test_live_records_arrive_with_units_quality_and_status(mosquitto: MosquittoServer, journal: Journal):
    collector = await MqttCollector(mosquitto.port, "test/#").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, mosquitto.port)
    task = start(sink)
    try:
        await eventually(lambda: sink.metrics()["connected"], what="sink connected")
        bench.write(150)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="all records on MQTT")
        await eventually(lambda: sink.metrics()["cursor"] == 300, what="all acknowledged")
    finally:
        await stop_task(task)
        await collector.stop()

    by_key = {(p["device"], p["t_ns"]): p for p in collector.payloads("/data")}
    for key, rec in bench.expected.items():
        p = by_key[key]
        assert p["bench"] == BENCH and p["kind"] == rec.schema.kind and p["run"] == bench.run_id
        assert p["historical"] is False
        assert (p["step"], p["cycle"]) == (1, 1)
        for ch, v, q in zip(rec.schema.channels, rec.values, rec.quality, strict=True):
            assert p["units"][ch.name] == ch.unit
            assert p["quality"][ch.name] == Quality(q).label
            assert p["values"][ch.name] == (None if math.isnan(v) else v)
    # topics: one data topic per device, retained device and bench status
    topics = {str(m.topic) for m in collector.messages}
    assert {"test/bench-a/cycler-1/data", "test/bench-a/bms-1/data"} <= topics
    # device status follows the newest record of each batch: the last one is the last record's state
    last = {device: rec for (device, _), rec in sorted(bench.expected.items(), key=lambda kv: kv[0][1])}
    for device, rec in last.items():
        assert collector.on(f"test/bench-a/{device}/status")[-1]["state"] == device_state(rec.quality)
    status = collector.on("test/bench-a/status")
    assert status[0]["state"] == "online"
    assert status[-1] == {"bench": BENCH, "state": "offline", "t": status[-1]["t"], "reason": "stopped"}
    metrics = collector.on("test/bench-a/metrics")
    assert metrics and metrics[-1]["sinks"][0]["name"] == "mqtt"

    # the cursor is in the journal: every record acknowledged
    with JournalReader(journal.path) as reader:
        assert reader.get_cursor(cursor_names("mqtt")[0]) == reader.last_record_seq() == 300


async def test_broker_stopped_mid_run_then_restarted_loses_nothing(mosquitto: MosquittoServer, journal: Journal):
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, mosquitto.port)
    task = start(sink)
    try:
        bench.write(50)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="records before the outage")
        await asyncio.to_thread(mosquitto.stop)
        bench.write(200)  # journaled while the broker is down
        await eventually(lambda: not sink.metrics()["connected"], what="sink notices the outage")
        assert sink.metrics()["backlog_records"] > 0
        assert "mqtt://127.0.0.1" in sink.metrics()["last_error"]
        await asyncio.to_thread(mosquitto.start)
        bench.write(50)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="every record after the outage")
        await eventually(lambda: sink.metrics()["backlog_records"] == 0, what="backlog drained")
    finally:
        await stop_task(task)
        await collector.stop()
    replayed = [p for p in collector.payloads("/data") if p["historical"]]
    assert replayed, "records sent after reconnecting must be flagged historical"
    assert sink.metrics()["errors"] >= 1


async def test_restart_of_the_sink_resumes_from_its_cursor(mosquitto: MosquittoServer, journal: Journal):
    collector = await MqttCollector(mosquitto.port, "test/+/+/data").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    # replay window off: a restart resends nothing (test_replay_window.py covers it on)
    first = make_sink(journal, mosquitto.port, replay_window_s=0)
    task = start(first)
    bench.write(40)
    await eventually(lambda: bench.keys() <= collector.data_keys(), what="first part")
    # subscribers may see the messages a moment before the sink has every ack and moves the cursor
    await eventually(lambda: first.metrics()["cursor"] == 80, what="first part acknowledged")
    await stop_task(task)
    delivered_first = len(collector.payloads("/data"))

    bench.write(60)  # no sink running
    second = make_sink(journal, mosquitto.port, replay_window_s=0)
    task = start(second)
    try:
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="second part")
        await eventually(lambda: second.metrics()["cursor"] == 200, what="second part acknowledged")
    finally:
        await stop_task(task)
        await collector.stop()
    payloads = collector.payloads("/data")
    # a clean stop persisted the cursor: nothing of the first part is sent again
    assert len(payloads) == len(bench.expected) == delivered_first + 120
    assert all(p["historical"] for p in payloads[delivered_first:])
    assert second.metrics()["delivered_records"] == 120


async def test_broker_unreachable_at_start_catches_up_when_it_appears(tmp_path: Path, journal: Journal):
    broker = MosquittoServer(tmp_path / "late-broker")
    # The test subscriber's persistent session must exist before the sink ever connects; the broker
    # keeps it across the restart (persistence on), so nothing the sink sends can slip past it.
    await asyncio.to_thread(broker.start)
    collector = await MqttCollector(broker.port, "test/+/+/data").start()
    await asyncio.to_thread(broker.stop)
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, broker.port)
    task = start(sink)
    try:
        bench.write(100)
        await eventually(lambda: "connection refused" in sink.metrics()["last_error"], what="refused")
        await eventually(lambda: sink.metrics()["backlog_records"] == 200, what="backlog seen")
        m = sink.metrics()
        assert m["connected"] is False and m["backlog_s"] > 0 and m["delivered_records"] == 0
        await asyncio.to_thread(broker.start)
        bench.write(20)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="catch-up")
    finally:
        await stop_task(task)
        await collector.stop()
        broker.kill()


async def test_alarms_on_their_topics_and_active_set_retained(mosquitto: MosquittoServer, journal: Journal):
    collector = await MqttCollector(mosquitto.port, "test/bench-a/#").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, mosquitto.port)
    task = start(sink)
    t = bench.t_ns
    ov = {"limit": "cell_voltage_max_v", "device": "bms-1", "channel": "cell1_v", "value": 4.31}
    ot = {"limit": "pack_temp_max_c", "device": "bms-1", "channel": "temp1_c", "value": 61.0}
    journal.append_event(bench.run_id, t, "safety.limits", {"set": "nmc"})
    journal.append_event(bench.run_id, t + 1, "alarm.tripped", {**ov, "level": "trip"})
    journal.append_event(bench.run_id, t + 2, "alarm.raised", {**ot, "level": "warning"})
    journal.append_event(bench.run_id, t + 3, "alarm.cleared", {**ot, "level": "warning"})
    journal.flush()
    tripped = "bms-1:cell_voltage_max_v:cell1_v:trip"

    def active() -> list[str]:
        sets = collector.on("test/bench-a/alarms/active")
        return [a["key"] for a in sets[-1]["alarms"]] if sets else []

    try:
        await eventually(lambda: len(collector.on("test/bench-a/events")) == 4, what="events")
        await eventually(lambda: active() == [tripped], what="active alarm set")
    finally:
        await stop_task(task)
    kinds = [e["kind"] for e in collector.on("test/bench-a/events")]
    assert kinds == ["safety.limits", "alarm.tripped", "alarm.raised", "alarm.cleared"]
    assert [e["kind"] for e in collector.on("test/bench-a/alarms")] == kinds[1:]
    retained = [m for m in collector.messages if str(m.topic) == "test/bench-a/alarms/active"]
    assert all(m.qos == 1 for m in retained)

    # a new sink object rebuilds the active set from the journal and publishes it again on connect
    before = len(collector.on("test/bench-a/alarms/active"))
    task = start(make_sink(journal, mosquitto.port))
    try:
        await eventually(lambda: len(collector.on("test/bench-a/alarms/active")) > before, what="republished set")
    finally:
        await stop_task(task)
        await collector.stop()
    assert active() == [tripped]


# --- TLS and credentials -----------------------------------------------------------------------


def tls_collector(server: MosquittoServer, tls: TlsMaterial, topic: str) -> MqttCollector:
    return MqttCollector(
        server.port,
        topic,
        tls_context=client_ssl_context(TlsConfig(ca_file=tls.ca_file), what="test"),
        username=MQTT_USER,
        password=MQTT_PASSWORD,
    )


async def test_tls_with_ca_and_credentials_from_env_and_file_delivers(
    mosquitto_tls: MosquittoServer, tls_material: TlsMaterial, journal: Journal, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("TEST_MQTT_USER", MQTT_USER)
    secret = tmp_path / "mqtt.pass"
    secret.write_text(MQTT_PASSWORD + "\n")
    secret.chmod(0o600)
    collector = await tls_collector(mosquitto_tls, tls_material, "test/+/+/data").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(
        journal,
        mosquitto_tls.port,
        tls={"ca_file": str(tls_material.ca_file)},
        username={"env": "TEST_MQTT_USER"},
        password={"file": str(secret)},
    )
    assert sink.target.startswith("mqtts://")
    task = start(sink)
    try:
        bench.write(30)
        await eventually(lambda: bench.keys() <= collector.data_keys(), what="records over TLS")
    finally:
        await stop_task(task)
        await collector.stop()


async def test_tls_wrong_ca_is_a_clear_error(
    mosquitto_tls: MosquittoServer, tls_material: TlsMaterial, journal: Journal, monkeypatch
):
    monkeypatch.setenv("TEST_MQTT_USER", MQTT_USER)
    monkeypatch.setenv("TEST_MQTT_PASSWORD", MQTT_PASSWORD)
    bench = SyntheticBench(journal, bench_id=BENCH)
    bench.write(5)
    sink = make_sink(
        journal,
        mosquitto_tls.port,
        tls={"ca_file": str(tls_material.wrong_ca_file)},
        username={"env": "TEST_MQTT_USER"},
        password={"env": "TEST_MQTT_PASSWORD"},
    )
    task = start(sink)
    try:
        await eventually(lambda: sink.metrics()["errors"] >= 2, what="failed attempts")
    finally:
        await stop_task(task)
    m = sink.metrics()
    assert "TLS certificate not trusted" in m["last_error"]
    assert str(tls_material.wrong_ca_file) in m["last_error"]
    assert m["delivered_records"] == 0 and m["backlog_records"] == 10 and m["connected"] is False


async def test_tls_never_falls_back_to_plain_mqtt(journal: Journal):
    """A TCP server that records what the sink sends: only TLS handshakes, never an MQTT CONNECT."""
    first_bytes: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_bytes.append(await reader.read(5))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    SyntheticBench(journal, bench_id=BENCH).write(3)
    sink = make_sink(journal, port, tls={})
    task = start(sink)
    try:
        await eventually(lambda: len(first_bytes) >= 3, what="three connection attempts")
    finally:
        await stop_task(task)
        server.close()
        await server.wait_closed()
    for data in first_bytes:
        assert data[:1] == b"\x16", f"expected a TLS handshake record, got {data!r}"  # 0x10 would be CONNECT
    assert sink.metrics()["delivered_records"] == 0


async def test_wrong_password_is_a_clear_error_and_never_logged(
    mosquitto_tls: MosquittoServer, tls_material: TlsMaterial, journal: Journal, monkeypatch, caplog
):
    wrong = "not-the-password-42"
    monkeypatch.setenv("TEST_MQTT_USER", MQTT_USER)
    monkeypatch.setenv("TEST_MQTT_PASSWORD", wrong)
    SyntheticBench(journal, bench_id=BENCH).write(5)
    caplog.set_level(logging.DEBUG)
    sink = make_sink(
        journal,
        mosquitto_tls.port,
        tls={"ca_file": str(tls_material.ca_file)},
        username={"env": "TEST_MQTT_USER"},
        password={"env": "TEST_MQTT_PASSWORD"},
    )
    task = start(sink)
    try:
        await eventually(lambda: "refused the login" in sink.metrics()["last_error"], what="login refused")
    finally:
        await stop_task(task)
    m = sink.metrics()
    assert "environment variable TEST_MQTT_PASSWORD" in m["last_error"]
    assert wrong not in m["last_error"]
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert "refused the login" in caplog.text
    assert m["delivered_records"] == 0


def test_missing_secret_fails_at_build_time(journal: Journal, monkeypatch):
    monkeypatch.delenv("TEST_MQTT_NOPE", raising=False)
    config = MqttSinkConfig.model_validate(
        mqtt_config(free_port(), username={"env": "TEST_MQTT_NOPE"}, password={"env": "TEST_MQTT_NOPE"})
    )
    with pytest.raises(ConfigError, match="environment variable TEST_MQTT_NOPE is not set"):
        MqttSink(config, bench_id=BENCH, journal_path=journal.path, where="bench.yaml: sinks[0](mqtt)")
