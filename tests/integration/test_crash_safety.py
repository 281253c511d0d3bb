"""A ``kill -9`` of a running ``daq run`` loses at most the last commit interval; the journal reopens."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from daq.journal import Journal, JournalReader
from tests.helpers import sim_bench


def count(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_keeps_journal_consistent(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path, poll_period_s=0.02)
    journal = tmp_path / "journal.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while count(journal) < 100:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "daq run recorded nothing"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # the file is consistent and reopens for writing; the run is marked interrupted, not completed
    with sqlite3.connect(journal) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = count(journal)
    assert kept >= 100
    with Journal(journal):
        pass
    with JournalReader(journal) as reader:
        (run,) = reader.runs()
        assert run.status == "interrupted"
        records = reader.records_after(0, 100_000)
    assert len(records) == kept
    # no hole in the sequence: every committed record is there, in order
    assert [r.seq for r in records] == list(range(1, kept + 1))
    assert all(r.all_good() for r in records[:-1])


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path, poll_period_s=0.05)
    journal = tmp_path / "journal.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while count(journal) < 20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    with JournalReader(journal) as reader:
        (run,) = reader.runs()
        assert run.status == "completed"
        assert run.records == count(journal)
    assert run.run_id.encode() in out
