"""Crash resume: ``kill -9`` of ``daq test start`` mid-step, then ``daq test resume`` in a new process.

The simulated cycler runs in its own process (``daq sim``), like real hardware that outlives the
test process, so the pack keeps its state across the crash and the cycler's own charge counter
measures what flowed while nobody was watching (until its watchdog switched the output off).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from daq.errors import DaqError
from daq.journal import JournalReader
from daq.runner.state import STATE_KEY, SUMMARY_KEY
from tests.helpers import CYCLER_REGMAP, REPO, sim_bench

AMPS = 10.0
PULSE_S = 1.5


def daq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def start_simulator(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    sim_dir = tmp_path / "sim"
    sim_dir.mkdir()
    proc = spawn("sim", str(sim_bench(sim_dir, initial_soc=0.5)))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        found = re.search(r"Modbus TCP on [\d.]+:(\d+)", line)
        if found:
            return proc, int(found.group(1))
        assert time.monotonic() < deadline, "daq sim did not report its port"
    raise AssertionError(f"daq sim ended without a port (exit {proc.wait()})")


def write_files(tmp_path: Path, port: int) -> tuple[Path, Path, Path]:
    journal = tmp_path / "journal.sqlite"
    bench = {
        "bench": {"id": "lab"},
        "journal": {"path": str(journal), "commit_interval_s": 0.05},
        "devices": [
            {
                "name": "cycler-1",
                "kind": "modbus",
                "role": "cycler",
                "transport": {"kind": "tcp", "host": "127.0.0.1", "port": port},
                "regmap": CYCLER_REGMAP,
                "poll_period_s": 0.05,
                "timeout_s": 0.5,
                "watchdog_timeout_s": 3.0,  # generous: a loaded CI machine must not trip it mid-test
            }
        ],
    }
    profile = {
        "name": "crash_cycles",
        "capacity_ah": 27,
        "record_period_s": 0.05,
        "metadata": {"series_cells": 14, "chemistry": "nmc"},
        "steps": [
            {
                "kind": "loop",
                "repeat": 2,
                "steps": [
                    {"kind": "cc", "label": "discharge pulse", "direction": "discharge", "current_a": AMPS,
                     "duration_s": PULSE_S, "tags": ["capacity_measurement"]},
                    "Rest for 0.5 seconds",
                    {"kind": "cc", "label": "charge pulse", "direction": "charge", "current_a": AMPS,
                     "duration_s": PULSE_S},
                    "Rest for 0.5 seconds",
                ],
            }
        ],
    }  # fmt: skip
    bench_path, profile_path = tmp_path / "lab.yaml", tmp_path / "crash_cycles.yaml"
    bench_path.write_text(yaml.safe_dump(bench, sort_keys=False))
    profile_path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return bench_path, profile_path, journal


def wait_for_progress_in_step(journal: Path, step: int, seconds: float, timeout: float = 60) -> str:
    """The run id, once the journal holds ``seconds`` of records of running step ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with JournalReader(journal) as reader:
                runs = reader.runs()
                if runs:
                    run_id = runs[-1].run_id
                    times = [r.t_ns for r in reader.iter_run_records(run_id) if r.step == step]
                    if times and (times[-1] - times[0]) / 1e9 >= seconds:
                        return run_id
        except (DaqError, sqlite3.Error):
            pass  # the other process is still creating the journal
        time.sleep(0.02)
    raise AssertionError(f"step {step} did not run for {seconds} s within {timeout} s")


def test_kill_9_mid_step_then_resume_continues_with_counters_and_journals_the_gap(tmp_path: Path) -> None:
    sim, port = start_simulator(tmp_path)
    try:
        bench, profile, journal = write_files(tmp_path, port)
        runner = spawn("test", "start", str(bench), str(profile), "--operator", "ci", "--pack-serial", "SN-1")
        try:
            # step 5 is cycle 2's discharge pulse: kill it half way
            run_id = wait_for_progress_in_step(journal, step=5, seconds=PULSE_S / 2)
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
        finally:
            if runner.poll() is None:
                runner.kill()
            if runner.stdout is not None:
                runner.stdout.close()

        status = daq("test", "status", run_id, "--journal", str(journal))
        assert status.returncode == 0, status.stderr
        assert "interrupted (runner process gone while running" in status.stdout
        assert "cycle 2 of 2 · step 5 of 8" in status.stdout

        resumed = daq("test", "resume", run_id, "--journal", str(journal), timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"run {run_id}: completed" in resumed.stdout

        with JournalReader(journal) as reader:
            run = reader.run(run_id)
            events = reader.run_events(run_id)
            summaries = reader.run_value(run_id, SUMMARY_KEY)
            state = reader.run_value(run_id, STATE_KEY)
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=10)
        finally:
            if sim.poll() is None:
                sim.kill()
            if sim.stdout is not None:
                sim.stdout.close()

    assert run.status == "completed" and state["phase"] == "completed"
    assert run.metadata["test"]["pack_serial"] == "SN-1"

    gaps = [e.data for e in events if e.kind == "runner.gap"]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["cause"] == "crash" and gap["step"] == 5 and gap["cycle"] == 2 and gap["gap_s"] > 0
    # the pulse went on discharging until the watchdog fired or the resume switched it off
    assert gap["gap_ah"] is not None and gap["gap_ah"] < 0

    started = [e.data["step"] for e in events if e.kind == "runner.step_started"]
    assert started == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # only the interrupted step starts twice
    resumed_start = [e.data for e in events if e.kind == "runner.step_started"][5]
    assert 0 < resumed_start["resumed_at_s"] < PULSE_S  # it went on from where it was, not from 0
    ended = [e.data for e in events if e.kind == "runner.step_ended"]
    assert [e["step"] for e in ended] == list(range(1, 9))
    assert all(e["reason"] == "time" for e in ended)
    # step time excludes the gap: the interrupted pulse still ran 1.5 s in all
    assert abs(ended[4]["duration_s"] - PULSE_S) < 0.3

    assert [s["cycle"] for s in summaries] == [1, 2]
    one, two = summaries
    expected_ah = AMPS * PULSE_S / 3600
    assert abs(one["discharge_ah"] - expected_ah) < 0.1 * expected_ah
    # the counters survived the crash: records before it + after it + what flowed in the gap
    assert abs(two["discharge_ah"] - (expected_ah - gap["gap_ah"])) < 0.1 * expected_ah
    assert abs(two["charge_ah"] - expected_ah) < 0.1 * expected_ah
