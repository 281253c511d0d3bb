"""Sink building blocks: rate meter, metrics snapshot, rejection log, backlog from the journal."""

from __future__ import annotations

from pathlib import Path

from daq.journal import Journal, JournalReader
from daq.records import Channel, DeviceSchema, Record
from daq.sinks.base import (
    RateMeter,
    Rejection,
    RejectionLog,
    SinkMetrics,
    cursor_names,
    error_text,
    iso_ns,
    journal_backlog,
)

SCHEMA = DeviceSchema("cycler-1", "cycler", (Channel("voltage_v", "V"),))


def test_rate_meter_window():
    meter = RateMeter(window_s=10)
    assert meter.rate(now=0) == 0
    meter.add(100, now=0)
    meter.add(100, now=5)
    assert meter.rate(now=5) == 40  # 200 over the 5 s since the first delivery
    assert meter.rate(now=12) == 10  # the first sample left the window
    assert meter.rate(now=30) == 0


def test_snapshot_backlog_and_age():
    m = SinkMetrics(name="s", kind="mqtt", target="mqtt://h:1883", cursor=10, journal_seq=25)
    m.oldest_pending_t_ns = 1_000_000_000
    snap = m.snapshot(now_ns=3_500_000_000, rate=2.0, journal_seq=30)
    assert snap["backlog_records"] == 20 and snap["backlog_s"] == 2.5 and snap["rate_records_per_s"] == 2.0
    m.cursor = 30
    assert m.snapshot(now_ns=0, rate=0, journal_seq=30)["backlog_s"] == 0


def test_iso_and_error_text():
    assert iso_ns(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    assert error_text(ExceptionGroup("g", [ValueError("inner")])) == "inner"
    assert error_text(TimeoutError()) == "TimeoutError"


def test_rejection_log_and_journal_event(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.05) as journal:
        run = journal.begin_run("b", schemas=[SCHEMA])
        log = RejectionLog(path, writer=journal)
        rejection = Rejection("influx", "record", 7, run, "cycler-1", 123, 400, "unable to parse")
        log.record(rejection, now_ns=999)
        journal.flush()
    assert log.path == tmp_path / "j.sqlite.rejections.jsonl"
    assert log.read() == [
        {
            "at_ns": 999,
            "sink": "influx",
            "stream": "record",
            "seq": 7,
            "run_id": run,
            "device": "cycler-1",
            "t_ns": 123,
            "status": 400,
            "reason": "unable to parse",
        }
    ]
    with JournalReader(path) as reader:
        (event,) = reader.run_events(run)
    assert event.kind == "sink_rejected" and event.data["seq"] == 7


def test_backlog_from_the_journal_alone(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path, commit_interval_s=0.05) as journal:
        run = journal.begin_run("b", schemas=[SCHEMA])
        for k in range(5):
            journal.append(Record(SCHEMA, (k + 1) * 1_000_000_000, [1.0], b"\0", run))
        journal.append_event(run, 1, "note", {})
        journal.flush()
    with JournalReader(path) as reader:
        reader.set_cursor(cursor_names("influx")[0], 2)
        backlog = journal_backlog(reader, "influx", now_ns=10_000_000_000)
    assert backlog == {
        "name": "influx",
        "cursor": 2,
        "event_cursor": 0,
        "backlog_records": 3,
        "backlog_events": 1,
        "backlog_s": 7.0,
    }
