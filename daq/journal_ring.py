"""The newest committed records, kept in memory for readers in the bench process (the sinks' live path).

The journal writer hands each committed batch to a ``CommittedRing`` right after the commit that
made it durable, with the seqs SQLite gave the rows. A reader asks for the records after its
cursor: the ring answers while it still holds the next one, and says ``None`` when the reader has
fallen behind it (or the ring never saw those records, e.g. after a restart), so the reader reads
them back from the journal instead. Both sources are keyed by seq, so a reader moving between them
never skips or repeats a record. Only committed records are ever in the ring.
"""

from __future__ import annotations

import threading

from daq.records import Record

DEFAULT_CAPACITY = 4096


class CommittedRing:
    """Holds between ``3/4 capacity`` and ``capacity`` of the newest committed records, in seq order.

    Thread-safe: the journal writer thread extends it, sink worker threads read it.
    """

    __slots__ = ("_first_seq", "_lock", "_records", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, next_seq: int = 1) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be at least 1")
        self.capacity = capacity
        self._records: list[Record] = []
        self._first_seq = next_seq  # seq of _records[0], or of the next record when empty
        self._lock = threading.Lock()

    @property
    def next_seq(self) -> int:
        """The seq the next committed record will have, as far as the ring knows."""
        return self._first_seq + len(self._records)

    @property
    def first_seq(self) -> int:
        return self._first_seq

    def __len__(self) -> int:
        return len(self._records)

    def extend(self, first_seq: int, records: list[Record]) -> None:
        """Add a committed batch whose rows got seqs ``first_seq`` onwards (stamped on the records)."""
        for offset, record in enumerate(records):
            record.seq = first_seq + offset
        with self._lock:
            if first_seq != self._first_seq + len(self._records):
                # A gap (seqs not contiguous with what we hold): start over from this batch.
                self._records = []
                self._first_seq = first_seq
            self._records.extend(records)
            excess = len(self._records) - self.capacity
            if excess > 0:
                drop = excess + self.capacity // 4  # trim in steps, not per record
                del self._records[:drop]
                self._first_seq += drop

    def reset(self, next_seq: int) -> None:
        """Forget everything (the journal could not tell the seqs of a commit)."""
        with self._lock:
            self._records = []
            self._first_seq = next_seq

    def after(self, seq: int, limit: int) -> list[Record] | None:
        """Up to ``limit`` records with seq > ``seq`` in order; ``[]`` when there is none yet;
        ``None`` when the ring does not hold seq + 1 (read those from the journal)."""
        with self._lock:
            start = seq + 1 - self._first_seq
            if start < 0 or start > len(self._records):
                return None
            return self._records[start : start + limit]
