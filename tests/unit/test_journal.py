"""Journal: round trip, ordering, cursors, run bookkeeping, reopen after an unclean end."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from daq.errors import JournalError
from daq.journal import Journal, JournalReader
from daq.records import Channel, DeviceSchema, Quality, Record

SCHEMA = DeviceSchema("cyc", "cycler", (Channel("voltage_v", "V"), Channel("current_a", "A")))


def rec(i: int, run_id: str) -> Record:
    return Record(SCHEMA, 1_000 + i, [3.5 + i, -float(i)], bytes([0, 0]), run_id, step=i % 3, cycle=i // 10)


def test_records_round_trip_in_order(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite", commit_interval_s=0.05) as journal:
        run = journal.begin_run("b1", schemas=[SCHEMA], metadata={"operator": "ann"})
        for i in range(250):
            journal.append(rec(i, run))
        bad = Record.failed(SCHEMA, 5_000, Quality.TIMEOUT)
        bad.run_id = run
        journal.append(bad)
        journal.flush()
        assert journal.committed_record_seq == 251
    with JournalReader(tmp_path / "j.sqlite") as reader:
        got = reader.records_after(0, 1000)
        assert [r.seq for r in got] == list(range(1, 252))
        assert got[7].values == [10.5, -7.0] and got[7].step == 1 and got[7].run_id == run
        assert got[-1].quality == bytes([Quality.TIMEOUT] * 2) and math.isnan(got[-1].values[0])
        assert got[0].schema.names == ("voltage_v", "current_a") and got[0].schema.channels[0].unit == "V"
        assert len(reader.records_after(200, 1000)) == 51
        info = reader.run(run)
        assert info.status == "completed" or info.status == "running"
        assert info.metadata == {"operator": "ann"} and info.records == 251


def test_cursors_persist(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite"):
        pass
    with JournalReader(tmp_path / "j.sqlite") as reader:
        assert reader.get_cursor("mqtt") == 0
        reader.set_cursor("mqtt", 42)
    with JournalReader(tmp_path / "j.sqlite") as reader:
        assert reader.get_cursor("mqtt") == 42


def test_run_ids_are_unique_and_resolvable(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        a = journal.begin_run("bench", schemas=[SCHEMA], started_ns=0)
        b = journal.begin_run("bench", schemas=[SCHEMA], started_ns=0)
        journal.end_run(a, status="aborted", reason="cell7 over voltage")
    assert a != b
    with JournalReader(tmp_path / "j.sqlite") as reader:
        assert reader.run("latest").run_id == b
        assert reader.run(a).status == "aborted" and reader.run(a).reason == "cell7 over voltage"
        with pytest.raises(JournalError, match="ambiguous"):
            reader.run("bench-")
        with pytest.raises(JournalError, match="no run 'nope'"):
            reader.run("nope")


def test_unclosed_run_is_marked_interrupted_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, commit_interval_s=0.01)
    journal.open()
    run = journal.begin_run("b", schemas=[SCHEMA])
    journal.append(rec(1, run))
    journal.flush()
    # Simulate a crash: no close(), no end_run(); a second writer opens the same file.
    with Journal(path) as again:
        assert again.committed_record_seq == 1
    with JournalReader(path) as reader:
        assert reader.run(run).status == "interrupted"


def test_events_are_journaled(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.begin_run("b", schemas=[SCHEMA])
        journal.append_event(run, 123, "alarm.tripped", {"channel": "cell3_v", "value": 4.3})
    with JournalReader(tmp_path / "j.sqlite") as reader:
        (ev,) = reader.run_events(run)
        assert ev.kind == "alarm.tripped" and ev.data["value"] == 4.3 and ev.t_ns == 123


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "j.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=r"not a readable SQLite database|cannot open journal"):
        Journal(bad).open()
    assert sqlite3.sqlite_version


def test_queued_run_values_are_committed_with_the_next_batch(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.queue_run_value("r1", "status", {"records": 1})
        journal.queue_run_value("r1", "status", {"records": 2})  # latest wins
        journal.set_run_value("r1", "summary", [1, 2])
    with JournalReader(tmp_path / "j.sqlite") as reader:
        assert reader.run_value("r1", "status") == {"records": 2}
        assert reader.run_value("r1", "summary") == [1, 2]
        assert reader.run_value("r1", "missing", "dflt") == "dflt"
