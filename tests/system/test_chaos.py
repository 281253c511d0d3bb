"""Chaos: ``daq run``, Mosquitto and VictoriaMetrics are killed with SIGKILL at random moments,
several times each, and restarted on the same ports. Afterwards nothing is lost:

- every journal record is in VictoriaMetrics, exactly once per (series, time);
- every journal record reached a persistent MQTT subscriber at least once, and every repeat is
  flagged ``historical``;
- the journal passes ``PRAGMA integrity_check``.

The moments come from a seeded generator; the seed and the schedule are printed (shown when the test
fails). Reproduce a run with ``DAQ_CHAOS_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.journal import JournalReader
from daq.sinks import cursor_names
from tests.helpers import sim_bench
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer, VictoriaMetricsServer
from tests.system.sink_helpers import MqttCollector, eventually, journal_keys, unflagged_repeats

pytestmark = pytest.mark.system

KILLS = 9  # about three per victim
GAP_S = (1.0, 3.0)  # between two kills: the bench runs and delivers meanwhile
DOWN_S = (0.2, 2.0)  # how long a killed server stays down
SAVED = "Saving in-memory database"


class DaqRun:
    """A real ``daq run`` child process on one bench file; kill -9 and start again."""

    def __init__(self, bench: Path, log: Path) -> None:
        self.bench = bench
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daq.cli.main", "run", str(self.bench), "--quiet"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def journal_progress(path: Path) -> tuple[int, int, int]:
    """(last record seq, MQTT cursor, InfluxDB cursor); zeros until the tables exist."""
    try:
        with JournalReader(path) as reader:
            return (
                reader.last_record_seq(),
                reader.get_cursor(cursor_names("live")[0]),
                reader.get_cursor(cursor_names("history")[0]),
            )
    except (sqlite3.Error, Exception):
        return 0, 0, 0


def vm_samples(server: VictoriaMetricsServer) -> Counter[tuple[Any, ...]]:
    """How often each (series, t_ms) is stored."""
    samples: Counter[tuple[Any, ...]] = Counter()
    for series in server.export('{__name__=~"cycler_.*"}'):
        labels = tuple(sorted(series["metric"].items()))
        samples.update((labels, t) for t in series["timestamps"])
    return samples


def chaos_bench(tmp_path: Path, mqtt_port: int, vm_url: str) -> tuple[Path, Path]:
    path = sim_bench(tmp_path, poll_period_s=0.01)  # about 100 records/s
    cfg = yaml.safe_load(path.read_text())
    fast = {"initial_s": 0.05, "max_s": 0.5}
    cfg["sinks"] = [
        {
            "kind": "mqtt",
            "name": "live",
            "host": "127.0.0.1",
            "port": mqtt_port,
            "topic_prefix": "chaos",
            "connect_timeout_s": 2,
            "ack_timeout_s": 3,
            "backoff": fast,
        },
        {
            "kind": "influxdb",
            "name": "history",
            "url": vm_url,
            "bucket": "battery",
            "org": "lab",
            "flush_interval_s": 0.2,
            "request_timeout_s": 3,
            "backoff": fast,
        },
    ]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, Path(cfg["journal"]["path"])


@pytest.fixture
def vm_dedup(tmp_path: Path):
    with VictoriaMetricsServer(tmp_path / "vm", dedup=True) as server:
        yield server


async def test_sigkill_of_daq_broker_and_database_at_random_moments_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoServer, vm_dedup: VictoriaMetricsServer
):
    seed = int(os.environ.get("DAQ_CHAOS_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"chaos seed {seed} (DAQ_CHAOS_SEED={seed} repeats this schedule)")
    bench, journal = chaos_bench(tmp_path, mosquitto.port, vm_dedup.url)
    collector = await MqttCollector(mosquitto.port, "chaos/+/+/data", identifier="chaos-collector").start()
    # the subscriber's session must be in the broker's saved state, or a crash forgets it
    saves = mosquitto.broker_log().count(SAVED)
    await eventually(lambda: mosquitto.broker_log().count(SAVED) > saves, what="the broker's autosave")
    daq = DaqRun(bench, tmp_path / "daq.log")
    daq.start()
    try:
        await eventually(lambda: journal_progress(journal)[0] > 50, what="records journaled", timeout_s=60)
        victims = ["daq", "mosquitto", "victoria-metrics"] * (KILLS // 3)
        rng.shuffle(victims)
        for victim in victims:
            gap, down = rng.uniform(*GAP_S), rng.uniform(*DOWN_S)
            await asyncio.sleep(gap)  # a random moment, not a wait for a condition
            seq, live, history = journal_progress(journal)
            print(f"  +{gap:.2f} s: kill -9 {victim} for {down:.2f} s (journal {seq}, mqtt {live}, influx {history})")
            if victim == "daq":
                await asyncio.to_thread(daq.kill)
                await asyncio.sleep(down)
                daq.start()
            else:
                server = mosquitto if victim == "mosquitto" else vm_dedup
                await asyncio.to_thread(server.kill)
                await asyncio.sleep(down)
                await asyncio.to_thread(server.start)
        # everything is up again: the last daq run records (so it is past its start and handles
        # Ctrl-C), the sinks catch up, then a clean stop drains the rest
        seq_now = journal_progress(journal)[0] + 50
        await eventually(lambda: journal_progress(journal)[0] >= seq_now, what="recording again", timeout_s=60)
        await eventually(
            lambda: min(journal_progress(journal)[1:]) >= seq_now, what="both sinks caught up", timeout_s=60
        )
        assert daq.alive(), (tmp_path / "daq.log").read_text()[-3000:]
        assert await asyncio.to_thread(daq.interrupt) == 0, (tmp_path / "daq.log").read_text()[-3000:]
        records = journal_keys(journal)
        want = {(device, t_ns // 1_000_000) for device, t_ns in records}
        last, live, history = journal_progress(journal)
        assert (live, history) == (last, last), "a clean stop left a backlog"
        # MQTT: at least once, every repeat flagged historical
        await eventually(lambda: set(records) <= collector.data_keys(), what="every record on MQTT")
    finally:
        if daq.alive():
            daq.kill()
        await collector.stop()
    data = [m for m in collector.messages if str(m.topic).endswith("/data")]
    assert not unflagged_repeats(data), "a record sent again without historical: true"
    # InfluxDB protocol (VictoriaMetrics): every record, once per (series, time). A confirmed write
    # may take a moment to show in an export (the server's ingestion buffers), hence the polling.
    def stored() -> set[tuple[str, int]]:
        return {(dict(labels)["device"], t) for labels, t in vm_samples(vm_dedup)}

    await eventually(lambda: stored() >= want, what="every journal record in VictoriaMetrics")
    samples = vm_samples(vm_dedup)
    assert {(dict(labels)["device"], t) for labels, t in samples} == want
    twice = [k for k, n in samples.items() if n > 1]
    assert not twice, f"stored more than once: {twice[:3]}"
    with sqlite3.connect(journal) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with JournalReader(journal) as reader:
        runs = reader.runs()
    print(f"  {len(records)} records in {len(runs)} runs; {json.dumps(Counter(r.status for r in runs))}")
    # each kill of daq run interrupted a run (unless it came before the run began); the last completed
    assert [r.status for r in runs] == ["interrupted"] * (len(runs) - 1) + ["completed"]
    assert 1 < len(runs) <= 1 + victims.count("daq")
