"""The operator command channel through the journal, and process liveness."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from daq.journal import Journal, JournalReader
from daq.runner.control import (
    ACK_KEY,
    JournalControl,
    OperatorCommand,
    process_alive,
    process_identity,
    serve_journal_commands,
)
from tests.helpers import wait_until


def journal_with_run(tmp_path: Path) -> tuple[Journal, str]:
    journal = Journal(tmp_path / "j.sqlite", commit_interval_s=0.05)
    journal.open()
    return journal, journal.begin_run("b", schemas=[])


def test_commands_are_read_in_order_after_a_key(tmp_path: Path) -> None:
    journal, run_id = journal_with_run(tmp_path)
    try:
        with JournalControl(journal.path) as control:
            first = control.post(run_id, "pause", reason="lunch", who="ann")
            second = control.post(run_id, "abort", reason="done", who="bob")
            other = control.post("other-run", "pause")
            assert first < second
            commands = control.commands_after(run_id, "")
            assert [(c.action, c.reason, c.who) for c in commands] == [
                ("pause", "lunch", "ann"),
                ("abort", "done", "bob"),
            ]
            assert [c.key for c in control.commands_after(run_id, first)] == [second]
            assert control.latest_command_key(run_id) == second and other not in (first, second)
    finally:
        journal.close()


def test_the_answer_is_read_from_the_journal_writer(tmp_path: Path) -> None:
    journal, run_id = journal_with_run(tmp_path)
    try:
        with JournalControl(journal.path) as control:
            key = control.post(run_id, "pause")
            assert control.wait_ack(run_id, key, timeout_s=0.1) is None
            journal.set_run_value(run_id, ACK_KEY, {"key": key, "ok": True, "message": "paused", "phase": "paused"})
            assert control.wait_ack(run_id, key, timeout_s=1)["message"] == "paused"
    finally:
        journal.close()


async def test_the_runner_side_sees_only_commands_posted_after_it_started(tmp_path: Path) -> None:
    journal, run_id = journal_with_run(tmp_path)
    control = JournalControl(journal.path)
    got: list[OperatorCommand] = []
    try:
        control.post(run_id, "pause", reason="stale, from before a crash")
        ready = asyncio.Event()
        task = asyncio.create_task(
            serve_journal_commands(journal.path, run_id, got.append, interval_s=0.02, ready=ready)
        )
        await asyncio.wait_for(ready.wait(), 10)
        control.post(run_id, "resume", who="ann")
        await wait_until(lambda: bool(got), what="the command")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [(c.action, c.who) for c in got] == [("resume", "ann")]
    finally:
        control.close()
        journal.close()


def test_offline_end_marks_the_run_and_journals_the_event(tmp_path: Path) -> None:
    journal, run_id = journal_with_run(tmp_path)
    journal.close()
    with JournalControl(journal.path) as control:
        control.end_run_offline(run_id, status="aborted", reason="done", event="runner.aborted", data={"who": "ann"})
    with JournalReader(journal.path) as reader:
        run = reader.run(run_id)
        assert (run.status, run.reason) == ("aborted", "done")
        assert [e.kind for e in reader.run_events(run_id)] == ["runner.aborted"]


def test_process_liveness_tells_a_dead_pid_and_a_reused_one() -> None:
    me = process_identity()
    assert process_alive(me) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive({**me, "pid": child.pid}) is False
    assert process_alive({**me, "pid": os.getpid(), "start": -1}) is False  # same pid, other process
    assert process_alive({**me, "host": "elsewhere"}) is None
