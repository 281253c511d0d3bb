"""Operator controls and safety around a running test: pause/resume/abort from another terminal,
a safety trip, Ctrl-C, and profiles rejected before anything starts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.cli.main import main
from daq.config.loader import load_bench
from daq.errors import DaqError
from daq.journal import JournalReader
from daq.runner import TestSession, prepare_test
from daq.runner.state import STATE_KEY
from tests.helpers import REPO, sim_bench, wait_until


def write_profile(tmp_path: Path, steps: list[Any], name: str = "profile.yaml", **extra: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "t", "record_period_s": 0.05, **extra, "steps": steps}, sort_keys=False))
    return path


def daq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def read_step_times(journal: Path, *, step: int) -> tuple[list[Any], list[int]]:
    """The journal's runs and the record times of ``step`` in the last run; empty while the
    journal is still being created by the other process."""
    try:
        with JournalReader(journal) as reader:
            runs = reader.runs()
            times = [r.t_ns for r in reader.iter_run_records(runs[-1].run_id) if r.step == step] if runs else []
    except (DaqError, sqlite3.Error):
        return [], []
    return runs, times


async def start_session(bench: Path, profile: Path) -> tuple[TestSession, asyncio.Task[Any]]:
    session = TestSession(prepare_test(load_bench(bench), profile), metadata={"operator": "t"})
    await session.start()
    return session, asyncio.create_task(session.run(), name="test:run")


async def test_pause_resume_and_abort_from_another_terminal(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path, poll_period_s=0.05)
    profile = write_profile(
        tmp_path,
        [{"kind": "cc", "label": "long discharge", "direction": "discharge", "current_a": 5, "duration_s": 3600}],
    )
    session, task = await start_session(bench, profile)
    sim = session.bench.simulation.cyclers["sim-0"]
    journal = str(tmp_path / "journal.sqlite")
    outcome = None
    try:
        await wait_until(lambda: sim.output_on and sim.read("current_a") < -4.9, what="discharge running")

        paused = await asyncio.to_thread(
            daq, "test", "pause", session.run_id, "--journal", journal, "--reason", "lunch"
        )
        assert paused.returncode == 0, paused.stderr
        assert "paused" in paused.stdout
        assert not sim.output_on and session.runner.phase == "paused"  # safe state before the answer

        again = await asyncio.to_thread(daq, "test", "pause", session.run_id, "--journal", journal)
        assert again.returncode == 0 and "already paused" in again.stdout

        status = await asyncio.to_thread(daq, "test", "status", session.run_id, "--journal", journal)
        assert status.returncode == 0 and "state: paused" in status.stdout and "lunch" in status.stdout

        resumed = await asyncio.to_thread(daq, "test", "resume", session.run_id, "--journal", journal)
        assert resumed.returncode == 0, resumed.stderr
        assert sim.output_on and session.runner.phase == "running"
        await wait_until(lambda: sim.read("current_a") < -4.9, what="discharge running again")

        aborted = await asyncio.to_thread(
            daq, "test", "abort", session.run_id, "--journal", journal, "--reason", "pack swelling"
        )
        assert aborted.returncode == 0, aborted.stderr
        outcome = await asyncio.wait_for(task, 10)
    finally:
        if not task.done():
            task.cancel()
        await session.close(outcome)
    assert outcome.status == "aborted" and outcome.reason == "pack swelling"
    assert not sim.output_on

    with JournalReader(journal) as reader:
        run = reader.run(session.run_id)
        events = [e for e in reader.run_events(session.run_id) if e.kind.startswith("runner.")]
    assert run.status == "aborted" and run.reason == "pack swelling"
    control = [
        (e.kind, e.data.get("reason"), e.data.get("safe_state_verified"))
        for e in events
        if e.kind in ("runner.paused", "runner.resumed", "runner.aborted")
    ]
    assert control == [
        ("runner.paused", "lunch", True),
        ("runner.resumed", None, None),
        ("runner.aborted", "pack swelling", True),
    ]
    ended = [e.data for e in events if e.kind == "runner.step_ended"]
    assert len(ended) == 1 and ended[0]["reason"] == "aborted" and ended[0]["discharge_ah"] > 0
    partial = [e.data for e in events if e.kind == "runner.cycle_incomplete"]
    assert len(partial) == 1 and partial[0]["complete"] is False


async def test_a_safety_trip_aborts_the_test_and_the_output_stays_off(tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text(yaml.safe_dump({"name": "low ceiling", "pack_voltage_max_v": {"trip": 56.0}}))
    bench = sim_bench(tmp_path, time_scale=100, poll_period_s=1.0, initial_soc=0.7)
    cfg = yaml.safe_load(bench.read_text())
    cfg["safety"] = {"limits": str(limits), "push_device_limits": False}
    bench.write_text(yaml.safe_dump(cfg))
    # no voltage end: a 4.2 V/cell clamp (58.8 V) above the 56 V trip is refused before the start
    profile = write_profile(tmp_path, ["Charge at 1C for 1 hour", "Rest for 1 hour"], capacity_ah=27)
    session, task = await start_session(bench, profile)
    sim = session.bench.simulation.cyclers["sim-0"]
    outcome = None
    try:
        outcome = await asyncio.wait_for(task, 60)
        assert not sim.output_on
        # the runner is gone and the latch holds: nothing switches the output on again
        await session.bench.clock.sleep(60)
        assert not sim.output_on
    finally:
        if not task.done():
            task.cancel()
        await session.close(outcome)
    assert outcome.status == "aborted" and outcome.reason.startswith("safety trip: ")
    assert "pack_voltage_max_v" in outcome.reason or "56" in outcome.reason
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        events = reader.run_events(session.run_id)
        state = reader.run_value(session.run_id, STATE_KEY)
    aborts = [e.data for e in events if e.kind == "runner.aborted"]
    assert aborts and aborts[0]["who"] == "safety"
    assert state["phase"] == "aborted"
    started = [e.data["label"] for e in events if e.kind == "runner.step_started"]
    assert started == ["Charge at 1C for 1 hour"]  # the rest step never started


def test_ctrl_c_pauses_the_test_and_resume_finishes_it(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path, poll_period_s=0.05)
    profile = write_profile(
        tmp_path,
        [
            {"kind": "cc", "label": "pulse", "direction": "discharge", "current_a": 5, "duration_s": 2.0},
            "Rest for 0.5 s",
        ],
    )
    journal = tmp_path / "journal.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "test", "start", str(bench), str(profile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until the pulse has run a while
            assert time.monotonic() < deadline, "the test did not start"
            runs, times = read_step_times(journal, step=1)
            if times and times[-1] - times[0] > 0.5e9:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "paused (Ctrl-C in the test terminal)" in out
    run_id = runs[-1].run_id
    with JournalReader(journal) as reader:
        assert reader.run(run_id).status == "paused"
        assert reader.run_value(run_id, STATE_KEY)["phase"] == "stopped"

    resumed = daq("test", "resume", run_id, "--journal", str(journal))
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {run_id}: completed" in resumed.stdout
    with JournalReader(journal) as reader:
        events = reader.run_events(run_id)
    kinds = [e.kind for e in events if e.kind.startswith("runner.")]
    assert "runner.gap" not in kinds and "runner.restarted" in kinds
    paused = next(e.data for e in events if e.kind == "runner.paused")
    assert paused["who"] == "terminal" and paused["safe_state_verified"]
    pulse = next(e.data for e in events if e.kind == "runner.step_ended" and e.data["step"] == 1)
    assert pulse["reason"] == "time" and abs(pulse["duration_s"] - 2.0) < 0.3  # the pause is not step time


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["Charge at 20C until 4.2 V"], "step 1 (Charge at 20C until 4.2 V): charges at 540 A"),
        (["Discharge at 1C until 2.5 V"], "step 1 (Discharge at 1C until 2.5 V): until voltage_below_v 2.5 V"),
        ([{"kind": "cc", "direction": "discharge", "c_rate": 1}], "step 1 (cc discharge 1C): no end condition"),
        (["Charge quickly"], "step 1 (Charge quickly): 'Charge quickly' is not a phrase"),
    ],
)
def test_a_profile_the_bench_cannot_run_is_rejected_before_the_test_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: list[Any], expected: str
) -> None:
    bench = sim_bench(tmp_path)
    profile = write_profile(tmp_path, steps)
    assert main(["test", "start", str(bench), str(profile)]) == 2
    err = capsys.readouterr().err
    assert f"error: {profile}: {expected}" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "journal.sqlite").exists()  # nothing started, no run recorded
