"""The ring of committed records: only committed records, the journal's own seqs, and a reader that
moves between the ring and the journal read-back sees every record once, in order."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daq.journal import Journal, JournalReader
from daq.journal_ring import CommittedRing
from daq.records import Channel, DeviceSchema, Record
from daq.sinks.base import JournalFeed

METER = DeviceSchema("meter-1", "meter", (Channel("u_v", "V"), Channel("i_a", "A")))


def rec(k: int) -> Record:
    return Record(METER, 1_700_000_000_000_000_000 + k, [float(k), math.nan], bytes([0, 2]), "r1", 1, 2)


def test_ring_answers_from_memory_or_says_read_the_journal():
    ring = CommittedRing(8, next_seq=1)
    assert ring.after(0, 10) == []  # nothing committed yet: nothing to read anywhere
    ring.extend(1, [rec(k) for k in range(5)])
    assert [r.seq for r in ring.after(0, 10)] == [1, 2, 3, 4, 5]
    assert [r.seq for r in ring.after(2, 2)] == [3, 4]
    assert ring.after(5, 10) == []
    ring.extend(6, [rec(k) for k in range(6, 20)])  # over capacity: the oldest go
    assert len(ring) <= 8 and ring.next_seq == 20
    assert ring.after(0, 10) is None  # fell behind: the journal has them
    assert [r.seq for r in ring.after(ring.first_seq - 1, 100)] == list(range(ring.first_seq, 20))


def test_a_gap_in_seqs_starts_the_ring_over():
    ring = CommittedRing(8, next_seq=1)
    ring.extend(1, [rec(1), rec(2)])
    ring.extend(10, [rec(10)])  # seqs 3..9 never came through here
    assert ring.after(2, 10) is None
    assert [r.seq for r in ring.after(9, 10)] == [10]
    ring.reset(11)
    assert ring.after(9, 10) is None and ring.after(10, 10) == []


def test_records_reach_the_ring_only_once_committed_with_the_journals_seqs(tmp_path: Path):
    with Journal(tmp_path / "j.sqlite", commit_interval_s=60) as journal:
        journal.begin_run("b", schemas=[METER], run_id="r1")
        ring = journal.live_ring(capacity=100)
        for k in range(10):
            journal.append(rec(k))
        assert ring.after(0, 100) == []  # appended, not committed: not offered
        journal.flush()
        live = ring.after(0, 100)
        with JournalReader(journal.path) as reader:
            stored = reader.records_after(0, 100)
    assert [r.seq for r in live] == [r.seq for r in stored] == list(range(1, 11))
    for a, b in zip(live, stored, strict=True):
        assert (a.t_ns, a.quality, a.run_id, a.step, a.cycle, a.schema.names) == (
            b.t_ns,
            b.quality,
            b.run_id,
            b.step,
            b.cycle,
            b.schema.names,
        )
        assert a.values[0] == b.values[0] and math.isnan(a.values[1]) and math.isnan(b.values[1])


@settings(max_examples=15, deadline=None)
@given(
    commits=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    reads=st.lists(st.integers(1, 30), min_size=1, max_size=40),
    capacity=st.integers(1, 24),
)
def test_a_reader_switching_between_ring_and_journal_sees_each_record_once(
    tmp_path_factory, commits: list[int], reads: list[int], capacity: int
):
    path = tmp_path_factory.mktemp("ring") / "j.sqlite"
    with Journal(path, commit_interval_s=60) as journal:
        journal.begin_run("b", schemas=[METER], run_id="r1")
        journal.live_ring(capacity=capacity)
        feed = JournalFeed(path, writer=journal, live=True)
        feed.reader = JournalReader(path)
        try:
            seen: list[int] = []
            k = 0
            for i, size in enumerate(commits):
                for _ in range(size):
                    journal.append(rec(k))
                    k += 1
                journal.flush()
                # read a little after each commit, so the reader lags by varying amounts
                for limit in reads[i :: len(commits)]:
                    seen += [r.seq for r in feed.records_after(seen[-1] if seen else 0, limit)]
            while batch := feed.records_after(seen[-1] if seen else 0, 7):
                seen += [r.seq for r in batch]
        finally:
            feed.reader.close()
    assert seen == list(range(1, k + 1))
    assert feed.records_from_ring + feed.records_from_journal == k
