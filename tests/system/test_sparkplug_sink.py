"""Sparkplug B sink against a real Mosquitto started by the test, checked by an independent host
(tests/system/sparkplug_host.py) that decodes with the protobuf definition."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
import yaml

from daq.bench import Bench
from daq.config.loader import load_bench
from daq.config.sinks import SparkplugSinkConfig
from daq.journal import Journal, JournalReader
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks import build_sink
from daq.sinks.sparkplug import sparkplug_b_pb2 as pb
from tests.helpers import REPO
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer
from tests.system.sink_helpers import BMS, CYCLER, MqttCollector, SyntheticBench, eventually, stop_task
from tests.system.sparkplug_host import SparkplugStream

pytestmark = pytest.mark.system

BENCH, GROUP = "bench-a", "battery-lab"


def sink_config(port: int, **overrides: object) -> dict[str, object]:
    return {
        "kind": "sparkplug",
        "name": "scada",
        "host": "127.0.0.1",
        "port": port,
        "group_id": GROUP,
        "device_ids": {"bms-1": "pack-bms"},
        "connect_timeout_s": 5,
        "ack_timeout_s": 10,
        "backoff": {"initial_s": 0.05, "max_s": 0.5},
        **overrides,
    }


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite", commit_interval_s=0.05)
    j.open()
    yield j
    j.close()


def make_sink(journal: Journal, port: int):
    config = SparkplugSinkConfig.model_validate(sink_config(port))
    return build_sink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)


def stream(collector: MqttCollector) -> SparkplugStream:
    return SparkplugStream(GROUP, BENCH, list(collector.messages))


def device_of(name: str) -> str:
    return {"bms-1": "pack-bms"}.get(name, name)


async def test_births_first_then_every_metric_by_alias_and_a_rebirth_on_ncmd(
    mosquitto: MosquittoServer, journal: Journal
) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, mosquitto.port)
    task = asyncio.create_task(sink.run(), name="sink:scada")
    try:
        await eventually(lambda: sink.metrics()["connected"], what="sink connected")
        bench.write(60)
        await eventually(lambda: len(stream(collector).records()) >= 120, what="every record as DDATA")

        # a SCADA host asks for a rebirth
        ncmd = pb.Payload(timestamp=1)
        m = ncmd.metrics.add(name="Node Control/Rebirth", datatype=11)
        m.boolean_value = True
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="scada-cmd") as cmd:
            await cmd.publish(f"spBv1.0/{GROUP}/NCMD/{BENCH}", ncmd.SerializeToString(), qos=1)
        await eventually(lambda: len(stream(collector).bd_seqs) == 2, what="a second NBIRTH")
        bench.write(10)
        await eventually(lambda: len(stream(collector).records()) >= 140, what="data after the rebirth")
    finally:
        await stop_task(task)
        await collector.stop()

    s = stream(collector)
    assert s.problems == []
    kinds = s.kinds()
    assert kinds[0] == "NBIRTH"
    assert kinds[1:3] == ["DBIRTH", "DDATA"]  # each device born right before its first data
    # the rebirth: the same bdSeq (same session), seq back to 0, both devices born again
    assert s.bd_seqs[0] == s.bd_seqs[1]
    second = kinds.index("NBIRTH", 1)
    assert kinds[second + 1 : second + 3] == ["DBIRTH", "DBIRTH"]
    assert kinds[-1] == "NDEATH"  # a clean stop says goodbye itself
    assert s.deaths == [s.bd_seqs[0]]
    # every record, every metric with its value, unit and type
    got = s.records()
    for (device, t_ns), rec in bench.expected.items():
        points = got[(device_of(device), t_ns // 1_000_000)]
        for ch, v, q in zip(rec.schema.channels, rec.values, rec.quality, strict=True):
            point = points[ch.name]
            assert s.types[(device_of(device), ch.name)] == 10  # Double
            assert s.units.get((device_of(device), ch.name), "") == ch.unit
            if q == int(Quality.GOOD) and not math.isnan(v):
                assert point.value == v
            else:
                assert point.value is None
                if q != int(Quality.GOOD):
                    assert point.properties["daqQuality"] == Quality(q).label
                    assert point.properties["Quality"] == 0  # OPC bad
    assert sink.metrics()["cursor"] == 140


def spawn_child(spec: Path) -> subprocess.Popen[bytes]:
    """The child bench process (journal + Sparkplug sink) to kill -9."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.system.sparkplug_host", str(spec)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def test_ndeath_is_the_will_after_kill_9(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    spec = tmp_path / "child.json"
    spec.write_text(
        json.dumps({"journal": str(tmp_path / "child.sqlite"), "bench_id": BENCH, "sink": sink_config(mosquitto.port)})
    )
    child = spawn_child(spec)
    try:
        await eventually(lambda: "DDATA" in stream(collector).kinds(), what="the child's data")
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait, 30)
        await eventually(lambda: stream(collector).deaths, what="NDEATH from the broker (the will)")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        await collector.stop()
    s = stream(collector)
    assert s.problems == []
    assert s.deaths == s.bd_seqs[:1]  # the will carries the bdSeq of the NBIRTH it ends


async def test_no_seq_gap_and_no_lost_record_across_a_broker_outage(
    mosquitto: MosquittoServer, journal: Journal
) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    bench = SyntheticBench(journal, bench_id=BENCH)
    sink = make_sink(journal, mosquitto.port)
    task = asyncio.create_task(sink.run(), name="sink:scada")
    expected_keys = lambda: {(device_of(d), t // 1_000_000) for d, t in bench.expected}  # noqa: E731
    try:
        bench.write(150)  # seq wraps past 255 within the first session
        await eventually(lambda: expected_keys() <= set(stream(collector).records()), what="records before")
        await asyncio.to_thread(mosquitto.stop)
        bench.write(100)  # journaled while the broker is down
        await eventually(lambda: not sink.metrics()["connected"], what="sink notices the outage")
        await asyncio.to_thread(mosquitto.start)
        bench.write(20)
        await eventually(lambda: expected_keys() <= set(stream(collector).records()), what="every record after")
        await eventually(lambda: sink.metrics()["backlog_records"] == 0, what="backlog drained")
    finally:
        await stop_task(task)
        await collector.stop()
    s = stream(collector)
    assert s.problems == []  # seq follows 0..255, 0.. with no gap in each session; aliases resolve
    # a new session, a new bdSeq: one more per CONNECT attempt (those refused while the broker was down count)
    assert len(s.bd_seqs) >= 2 and 0 < (s.bd_seqs[1] - s.bd_seqs[0]) % 256 < 128
    replayed = {(p.device, p.timestamp_ms) for p in s.data if p.historical}
    outage = {(device_of(d), t // 1_000_000) for d, t in list(bench.expected)[300:500]}
    assert outage <= replayed  # records journaled during the outage arrive flagged historical


async def test_the_can_demo_bench_reaches_a_scada_host(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "demo_can.yaml").read_text())
    cfg["journal"] = {"path": str(tmp_path / "journal.sqlite"), "commit_interval_s": 0.1}
    cfg["simulation"]["time_scale"] = 5
    for entry in (cfg["simulation"]["simulators"][1], cfg["devices"][1]):
        entry.update(channel="can-scada", dbc=str(REPO / "configs" / "dbc" / "demo_pack.dbc"))
    cfg["devices"][0]["regmap"] = str(REPO / "configs" / "regmaps" / "sim_cycler.yaml")
    cfg["sinks"] = [sink_config(mosquitto.port, device_ids={})]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    bench = Bench(load_bench(path))
    await bench.start()

    def good_cells() -> bool:
        points = SparkplugStream(GROUP, "demo-can", list(collector.messages)).data
        return any(p.device == "bms-can" and p.name == "cell14_v" and p.value for p in points)

    try:
        await eventually(good_cells, what="good CAN BMS cells at the SCADA host")
    finally:
        await bench.stop()
        await collector.stop()
    s = SparkplugStream(GROUP, "demo-can", list(collector.messages))
    assert s.problems == []
    assert {s.units[("bms-can", f"cell{n}_v")] for n in range(1, 15)} == {"V"}
    got = s.records()
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        records = [r for r in reader.iter_run_records(bench.run_id) if r.device == "bms-can"]
    compared = 0
    for rec in records:
        points = got.get(("bms-can", rec.t_ns // 1_000_000))
        cells = [rec.get(f"cell{n}_v") for n in range(1, 15)]
        if points is None or any(math.isnan(v) for v in cells):
            continue  # the cell frames had not all arrived yet
        assert [points[f"cell{n}_v"].value for n in range(1, 15)] == cells
        compared += 1
    assert compared >= 1


async def test_a_device_whose_channels_change_gets_a_full_rebirth(mosquitto: MosquittoServer, journal: Journal) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    first = SyntheticBench(journal, bench_id=BENCH, schemas=(CYCLER,))
    sink = make_sink(journal, mosquitto.port)
    task = asyncio.create_task(sink.run(), name="sink:scada")
    wider = DeviceSchema("cycler-1", "cycler", (*CYCLER.channels, Channel("temperature_c", "degC")))
    try:
        first.write(5)
        await eventually(lambda: len(stream(collector).records()) >= 5, what="the first run's records")
        second = SyntheticBench(journal, bench_id=BENCH, schemas=(wider,))  # the next run: one channel more
        second.write(5)
        await eventually(lambda: len(stream(collector).records()) >= 10, what="the second run's records")
    finally:
        await stop_task(task)
        await collector.stop()
    s = stream(collector)
    assert s.problems == []  # no alias of the old birth is reused for the new channel set
    assert len(s.bd_seqs) == 2 and s.bd_seqs[0] == s.bd_seqs[1]  # a rebirth in the same session
    assert s.units[("cycler-1", "temperature_c")] == "degC"
    last = {
        name: p.value for name, p in s.records()[("cycler-1", max(t for _, t in second.expected) // 1_000_000)].items()
    }
    assert set(last) == {c.name for c in wider.channels}


async def test_a_device_that_stops_answering_gets_ddeath_then_a_new_dbirth(
    mosquitto: MosquittoServer, journal: Journal
) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    bench = SyntheticBench(journal, bench_id=BENCH, schemas=(BMS,))
    sink = make_sink(journal, mosquitto.port)
    task = asyncio.create_task(sink.run(), name="sink:scada")
    try:
        bench.write(3)
        for _ in range(3):  # the BMS is silent: every value COMM_LOST
            bench.t_ns += 1_000_000
            silent = Record.failed(BMS, bench.t_ns, Quality.COMM_LOST)
            silent.run_id = bench.run_id
            journal.append(silent)
        bench.write(2)
        await eventually(lambda: len(stream(collector).records()) >= 5, what="data after the device came back")
    finally:
        await stop_task(task)
        await collector.stop()
    s = stream(collector)
    assert s.problems == []  # includes: no DDATA between the DDEATH and the next DBIRTH
    kinds = [k for k in s.kinds() if k.startswith("D")]
    assert kinds == ["DBIRTH", "DDATA", "DDATA", "DDATA", "DDEATH", "DBIRTH", "DDATA", "DDATA"]
    assert s.device_deaths == ["pack-bms"]


async def test_a_primary_host_gates_the_edge_node(mosquitto: MosquittoServer, journal: Journal) -> None:
    collector = await MqttCollector(mosquitto.port, "spBv1.0/#", identifier="scada-host").start()
    bench = SyntheticBench(journal, bench_id=BENCH, schemas=(CYCLER,))
    config = SparkplugSinkConfig.model_validate(sink_config(mosquitto.port, primary_host_id="ignition-1"))
    sink = build_sink(config, bench_id=BENCH, journal_path=journal.path, journal=journal)
    task = asyncio.create_task(sink.run(), name="sink:scada")
    state_topic = "spBv1.0/STATE/ignition-1"

    async def host_state(online: bool) -> None:
        payload = json.dumps({"online": online, "timestamp": 1}).encode()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="ignition-1") as host:
            await host.publish(state_topic, payload, qos=1, retain=True)

    def index_of(predicate) -> int:
        return next((i for i, m in enumerate(collector.messages) if predicate(m)), -1)

    try:
        bench.write(5)
        await eventually(lambda: sink.waiting_for_host, what="the sink holding its births")
        await host_state(True)
        await eventually(lambda: len(stream(collector).records()) >= 5, what="data once the host is online")
        await host_state(False)
        await eventually(lambda: stream(collector).deaths, what="NDEATH when the host goes offline")
        await eventually(lambda: sink.waiting_for_host, what="waiting again after reconnecting")
        await host_state(True)
        await eventually(lambda: len(stream(collector).bd_seqs) == 2, what="a new NBIRTH")
    finally:
        await stop_task(task)
        await collector.stop()
    s = stream(collector)
    assert s.problems == []
    first_online = index_of(lambda m: str(m.topic) == state_topic and b"true" in m.payload)
    first_birth = index_of(lambda m: str(m.topic).endswith(f"/NBIRTH/{BENCH}"))
    assert 0 <= first_online < first_birth  # nothing before the host said online
    assert s.deaths[0] == s.bd_seqs[0] and s.bd_seqs[1] != s.bd_seqs[0]
