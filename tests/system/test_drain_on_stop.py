"""A clean stop of ``daq run`` leaves nothing behind in the sinks, or says what it left; ``daq sinks
flush`` delivers a stopped journal's backlog without starting the bench. Real ``daq run``
processes against a real Mosquitto and VictoriaMetrics."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.journal import JournalReader
from daq.sinks import cursor_names
from tests.helpers import sim_bench
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import MosquittoServer, VictoriaMetricsServer, free_port, wait_until
from tests.system.sink_helpers import journal_keys

pytestmark = pytest.mark.system


def bench_with_sinks(tmp_path: Path, sinks: list[dict[str, Any]]) -> tuple[Path, Path]:
    """A simulated cycler polled every 10 ms (about 100 records/s) and the given sinks."""
    path = sim_bench(tmp_path, poll_period_s=0.01)
    cfg = yaml.safe_load(path.read_text())
    cfg["sinks"] = sinks
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, Path(cfg["journal"]["path"])


def records_in(journal: Path) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


def daq(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_then_interrupt(bench: Path, journal: Path, *, records: int = 300) -> tuple[str, str]:
    proc = daq("run", str(bench), "--quiet")
    try:
        wait_until(lambda: records_in(journal) >= records or proc.poll() is not None, timeout_s=60, what="records")
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out, err


def cursor(journal: Path, sink: str) -> int:
    with JournalReader(journal) as reader:
        return reader.get_cursor(cursor_names(sink)[0])


def vm_keys(server: VictoriaMetricsServer) -> set[tuple[str, int]]:
    keys: set[tuple[str, int]] = set()
    for series in server.export('{__name__=~"cycler_.*"}'):
        keys.update((series["metric"]["device"], t) for t in series["timestamps"])
    return keys


def influx_sink(url: str, **extra: Any) -> dict[str, Any]:
    # the default flush interval (1 s): at the stop up to a second of records waits for its batch
    return {
        "kind": "influxdb",
        "name": "history",
        "url": url,
        "bucket": "battery",
        "org": "lab",
        "backoff": {"initial_s": 0.05, "max_s": 0.5},
        **extra,
    }


def test_ctrl_c_delivers_the_backlog_before_exit(
    tmp_path: Path, mosquitto: MosquittoServer, victoria_metrics: VictoriaMetricsServer
):
    mqtt = {"kind": "mqtt", "name": "live", "host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": "t"}
    bench, journal = bench_with_sinks(tmp_path, [mqtt, influx_sink(victoria_metrics.url)])
    out, _ = run_then_interrupt(bench, journal)
    with JournalReader(journal) as reader:
        last = reader.last_record_seq()
    assert cursor(journal, "live") == last
    assert cursor(journal, "history") == last
    assert "sink history: everything delivered" in out
    want = {(d, t // 1_000_000) for d, t in journal_keys(journal)}
    # confirmed, so it shows up; an export may lag the confirmation by a moment (ingestion buffers)
    wait_until(lambda: want <= vm_keys(victoria_metrics), timeout_s=30, what="every record in VictoriaMetrics")


def test_stop_says_what_is_left_and_sinks_flush_delivers_it(tmp_path: Path):
    server = VictoriaMetricsServer(tmp_path / "vm-later")  # not running during the bench run
    bench, journal = bench_with_sinks(tmp_path, [influx_sink(server.url, drain_on_stop_s=0.5)])
    out, _ = run_then_interrupt(bench, journal, records=100)
    with JournalReader(journal) as reader:
        last = reader.last_record_seq()
    left = last - cursor(journal, "history")
    assert left == last  # nothing reached the database
    assert f"sink history: {left} records not yet delivered; they stay in the journal" in out

    with server:
        flush = daq("sinks", "flush", str(journal), "--timeout", "60")
        out, err = flush.communicate(timeout=90)
        assert flush.returncode == 0, err
        assert "sink history: everything delivered" in out
        assert cursor(journal, "history") == last
        want = {(d, t // 1_000_000) for d, t in journal_keys(journal)}
        wait_until(lambda: want <= vm_keys(server), timeout_s=30, what="every record in VictoriaMetrics")


def test_sinks_flush_says_what_is_left_when_the_server_stays_down(tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    bench, journal = bench_with_sinks(tmp_path, [influx_sink(dead, drain_on_stop_s=0)])
    run_then_interrupt(bench, journal, records=50)
    flush = daq("sinks", "flush", str(bench), "--timeout", "1")
    out, err = flush.communicate(timeout=60)
    assert flush.returncode == 1, err
    assert "records not yet delivered; they stay in the journal" in out
    assert "Traceback" not in err


def test_sinks_flush_of_a_bench_without_sinks_is_one_line_and_exit_2(tmp_path: Path):
    bench = sim_bench(tmp_path)
    flush = daq("sinks", "flush", str(bench))
    _, err = flush.communicate(timeout=60)
    assert flush.returncode == 2
    assert err.strip().count("\n") == 0 and "has no sinks" in err
