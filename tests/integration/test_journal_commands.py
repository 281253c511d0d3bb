"""One journal write API for other processes: two ``daq``-side processes write acknowledgement
requests and operator commands through ``JournalCommands`` at the same time, while this process's
writer thread commits records and events into the same file. Nothing is lost, nothing interleaves,
nobody sees a lock error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from daq.errors import JournalError
from daq.journal import Journal, JournalReader
from daq.records import Channel, DeviceSchema, Record
from daq.runner.control import COMMAND_PREFIX, JournalControl
from daq.safety.ack import ACK_REQUEST, AckRequestReader, request_acknowledge
from tests.helpers import REPO

SCHEMA = DeviceSchema("cyc", "cycler", (Channel("voltage_v", "V"),))
PER_PROCESS = 60

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from daq.runner.control import JournalControl
    from daq.safety.ack import request_acknowledge

    journal, run_id, go, name, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    deadline = time.monotonic() + 30
    while not go.exists():  # start together with the other writer
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.001)
    with JournalControl(journal) as control:
        for i in range(count):
            request_acknowledge(journal, run_id, who=name, note=str(i))
            control.post(run_id, "pause", reason=f"{name} {i}", who=name)
    """
)


def test_two_processes_write_commands_while_the_writer_thread_commits(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, commit_interval_s=0.01)
    journal.open()
    procs: list[subprocess.Popen[str]] = []
    try:
        run_id = journal.begin_run("bench", schemas=[SCHEMA])
        go = tmp_path / "go"
        procs += [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), run_id, str(go), name, str(PER_PROCESS)],
                cwd=REPO,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("alice", "bob")
        ]
        go.touch()
        appended = 0
        while any(p.poll() is None for p in procs):  # keep the writer thread busy meanwhile
            for _ in range(20):
                journal.append(Record(SCHEMA, time.time_ns(), [float(appended)], b"\x00", run_id))
                appended += 1
            journal.append_event(run_id, time.time_ns(), "bench.tick", {"n": appended})
            journal.flush()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        journal.flush()
        assert journal.error is None
    finally:
        for p in procs:  # a failed assertion above must not leave the writers running
            if p.poll() is None:
                p.kill()
                p.communicate()
        journal.close()

    with JournalReader(path) as reader:
        events = reader.run_events(run_id)
        records = list(reader.iter_run_records(run_id))
    assert len(records) == appended and appended > 0
    requests = [e for e in events if e.kind == ACK_REQUEST]
    assert len({e.seq for e in events}) == len(events)
    for name in ("alice", "bob"):
        # each process's rows arrive whole and in its own order
        notes = [e.data["note"] for e in requests if e.data["who"] == name]
        assert notes == [str(i) for i in range(PER_PROCESS)]
    with JournalControl(path) as control:
        commands = control.commands_after(run_id, "")
    assert len(commands) == 2 * PER_PROCESS and all(c.key.startswith(COMMAND_PREFIX) for c in commands)
    for name in ("alice", "bob"):
        reasons = [c.reason for c in commands if c.who == name]
        assert reasons == [f"{name} {i}" for i in range(PER_PROCESS)]
    # the bench's side reads them back through the same API
    assert len(AckRequestReader(path, run_id).pending()) == 2 * PER_PROCESS


def test_a_command_to_a_missing_journal_is_one_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(JournalError, match=r"no journal at .*nope.sqlite; pass --journal or --bench"):
        request_acknowledge(missing, "run", who="x")
    assert not missing.exists()
