"""Journal disk budget: only delivered records of finished runs are pruned, oldest first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daq.journal import Journal, JournalReader
from daq.journal_budget import prune_delivered, used_bytes
from daq.records import Channel, DeviceSchema, Record

SCHEMA = DeviceSchema("cyc", "cycler", tuple(Channel(f"v{i}", "V") for i in range(64)))


def fill(journal: Journal, run_id: str, n: int, t0: int) -> None:
    for i in range(n):
        journal.append(Record(SCHEMA, t0 + i, [float(i)] * 64, bytes(64), run_id))
    journal.flush()


def test_prune_respects_delivery_and_the_running_run(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.01) as journal:
        old = journal.begin_run("b", schemas=[SCHEMA], started_ns=0)
        fill(journal, old, 3000, 0)
        journal.end_run(old, status="completed")
        current = journal.begin_run("b", schemas=[SCHEMA], started_ns=10**12)
        fill(journal, current, 3000, 10**12)
    conn = sqlite3.connect(path, isolation_level=None)
    before = used_bytes(conn)
    # a sink delivered only the first 1000 records: only those may go
    deleted, after = prune_delivered(conn, max_bytes=1, delivered_seq=1000, keep_run=current)
    assert deleted == 1000 and after < before
    # everything delivered: the old run goes, the running run stays whole
    deleted, _ = prune_delivered(conn, max_bytes=1, delivered_seq=6000, keep_run=current)
    assert deleted == 2000
    conn.close()
    with JournalReader(path) as reader:
        assert len(list(reader.iter_run_records(current))) == 3000
        assert list(reader.iter_run_records(old)) == []


def test_nothing_pruned_when_under_budget(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.01) as journal:
        run = journal.begin_run("b", schemas=[SCHEMA])
        fill(journal, run, 100, 0)
        journal.end_run(run, status="completed")
    conn = sqlite3.connect(path, isolation_level=None)
    assert prune_delivered(conn, max_bytes=10**9, delivered_seq=100, keep_run="other")[0] == 0
    conn.close()


def test_the_budget_task_prunes_what_every_sink_delivered_and_says_when_it_is_over(tmp_path: Path) -> None:
    from daq.clock import MonotonicClock
    from daq.journal_budget import JournalBudget

    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.01) as journal:
        old = journal.begin_run("b", schemas=[SCHEMA], started_ns=0)
        fill(journal, old, 3000, 0)
        journal.end_run(old, status="completed")
        current = journal.begin_run("b", schemas=[SCHEMA], started_ns=10**12)
        fill(journal, current, 3000, 10**12)
        with JournalReader(path) as reader:
            reader.set_cursor("sink:a", 6000)  # sink a has everything, sink b only the first 500
            reader.set_cursor("sink:b", 500)
        budget = JournalBudget(
            journal, run_id=current, clock=MonotonicClock(), sink_names=lambda: ["a", "b"], max_bytes=1
        )
        budget.check_once()
        assert budget.pruned_rows == 500  # only what both sinks delivered
        budget._judge()
        assert budget.status()["state"] == "over"
        journal.flush()
    with JournalReader(path) as reader:
        assert len(list(reader.iter_run_records(old))) == 2500
        assert len(list(reader.iter_run_records(current))) == 3000
        kinds = [e.kind for e in reader.run_events(current)]
    assert kinds == ["journal.size_over"]


def test_the_budget_keeps_what_a_sink_may_still_replay(tmp_path: Path) -> None:
    """A sink that rewinds after a server crash (daq.sinks.replay) still needs its window."""
    from daq.clock import MonotonicClock
    from daq.journal_budget import JournalBudget

    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.01) as journal:
        old = journal.begin_run("b", schemas=[SCHEMA], started_ns=0)
        fill(journal, old, 3000, 0)
        journal.end_run(old, status="completed")
        current = journal.begin_run("b", schemas=[SCHEMA], started_ns=10**12)
        fill(journal, current, 10, 10**12)
        with JournalReader(path) as reader:
            reader.set_cursor("sink:a", 3010)  # delivered everything, but may resend from seq 1200 on
            reader.set_cursor("sink:a:replay", 1200)
        budget = JournalBudget(journal, run_id=current, clock=MonotonicClock(), sink_names=lambda: ["a"], max_bytes=1)
        budget.check_once()
        assert budget.pruned_rows == 1200
