"""The journal: the crash-safe local store every reading is recorded in before anything else.

SQLite in WAL mode. The bench process owns one ``Journal`` (the writer): ``append`` only puts the
record on a queue, and a writer thread commits the queue every ``commit_interval_s``, so the
event loop and the safety path never wait on the disk. A ``kill -9`` loses at most the records of
the last commit interval; WAL keeps the file consistent, so it always reopens cleanly.

Sinks, exports and reports read through ``JournalReader`` (its own connection; WAL lets readers
and the writer work at the same time). Records are stored as one row per poll: the values as a
packed float64 array and the qualities as bytes; the channel names live once per (run, device).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daq.errors import JournalError
from daq.journal_ring import DEFAULT_CAPACITY, CommittedRing
from daq.records import Channel, DeviceSchema, Record

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    bench_id TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    status TEXT NOT NULL,          -- running | completed | aborted | interrupted
    reason TEXT NOT NULL DEFAULT '',
    config_hash TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    channels TEXT NOT NULL,        -- JSON [[name, unit], ...]
    UNIQUE (run_id, device)
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    t_ns INTEGER NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    cycle INTEGER NOT NULL DEFAULT 0,
    vals BLOB NOT NULL,            -- float64 little-endian, one per channel
    qual BLOB NOT NULL             -- one daq.records.Quality code per channel
);
CREATE INDEX IF NOT EXISTS records_by_device_time ON records (device_id, t_ns);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    t_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key));
"""


# What reading a damaged journal file raises, so callers can name it without importing sqlite3.
DatabaseError = sqlite3.Error


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
        else:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process kill; only a power cut may lose the
            # last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}; check the path exists and is writable") from exc


def new_run_id(bench_id: str, now_ns: int) -> str:
    stamp = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"{bench_id}-{stamp}"


@dataclass(slots=True)
class JournalEvent:
    seq: int
    run_id: str
    t_ns: int
    kind: str
    data: dict[str, Any]


@dataclass(slots=True)
class RunInfo:
    run_id: str
    bench_id: str
    started_ns: int
    ended_ns: int | None
    status: str
    reason: str
    config_hash: str
    metadata: dict[str, Any]
    records: int = 0


class Journal:
    """The writer side. Thread-safe ``append``; one writer thread does all the commits."""

    def __init__(self, path: str | Path, *, commit_interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._device_ids: dict[tuple[str, str], int] = {}
        self._committed_record_seq = 0
        self._committed_event_seq = 0
        self._flush_requests: list[threading.Event] = []
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        # Not ``_lock``: the writer holds that for a whole commit, and the event loop must never wait for one.
        self._waiters_lock = threading.Lock()
        self._error: BaseException | None = None
        self.records_written = 0
        # Committed records for readers in this process (the sinks' live path); None until asked for.
        self.ring: CommittedRing | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"cannot create journal folder {self.path.parent}: {exc}") from exc
        self._conn = _connect(self.path)
        try:
            self._conn.executescript(_DDL)
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            # A run still marked running was cut short by a crash: say so instead of pretending.
            self._conn.execute(
                "UPDATE runs SET status='interrupted', reason='process ended without closing the run'"
                " WHERE status='running'"
            )
            for device_id, run_id, device in self._conn.execute("SELECT device_id, run_id, device FROM devices"):
                self._device_ids[(run_id, device)] = device_id
            self._committed_record_seq = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
            self._committed_event_seq = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is not a readable SQLite database ({exc}); move it aside") from exc
        self._thread = threading.Thread(target=self._writer, name="journal-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        assert self._conn is not None
        self._conn.close()
        self._conn = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------
    def begin_run(
        self,
        bench_id: str,
        *,
        schemas: list[DeviceSchema],
        metadata: dict[str, Any] | None = None,
        config_hash: str = "",
        started_ns: int | None = None,
        run_id: str | None = None,
    ) -> str:
        """Create a run and register its devices' channels. Synchronous (rare, at start)."""
        conn = self._require_conn()
        started_ns = time.time_ns() if started_ns is None else started_ns
        run_id = run_id or new_run_id(bench_id, started_ns)
        with self._lock:
            base, n = run_id, 1
            while conn.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                n += 1
                run_id = f"{base}-{n}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO runs (run_id, bench_id, started_ns, status, config_hash, metadata)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, bench_id, started_ns, config_hash, json.dumps(metadata or {})),
            )
            for schema in schemas:
                self._register_device(conn, run_id, schema)
            conn.execute("COMMIT")
        return run_id

    def reopen_run(self, run_id: str) -> None:
        """Mark an interrupted run as running again (crash resume)."""
        conn = self._require_conn()
        with self._lock:
            conn.execute("UPDATE runs SET status='running', ended_ns=NULL, reason='' WHERE run_id=?", (run_id,))

    def add_devices(self, run_id: str, schemas: list[DeviceSchema]) -> None:
        conn = self._require_conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            for schema in schemas:
                if (run_id, schema.device) not in self._device_ids:
                    self._register_device(conn, run_id, schema)
            conn.execute("COMMIT")

    def _register_device(self, conn: sqlite3.Connection, run_id: str, schema: DeviceSchema) -> None:
        channels = json.dumps([[c.name, c.unit] for c in schema.channels])
        cur = conn.execute(
            "INSERT INTO devices (run_id, device, kind, channels) VALUES (?, ?, ?, ?)",
            (run_id, schema.device, schema.kind, channels),
        )
        self._device_ids[(run_id, schema.device)] = int(cur.lastrowid or 0)

    def end_run(self, run_id: str, *, status: str, reason: str = "", ended_ns: int | None = None) -> None:
        self.flush()
        conn = self._require_conn()
        with self._lock:
            conn.execute(
                "UPDATE runs SET status=?, reason=?, ended_ns=? WHERE run_id=?",
                (status, reason, time.time_ns() if ended_ns is None else ended_ns, run_id),
            )

    def set_run_value(self, run_id: str, key: str, value: Any) -> None:
        """Small per-run state (runner position, cycle summaries) as JSON; committed at once."""
        conn = self._require_conn()
        with self._lock:
            conn.execute(
                "INSERT OR REPLACE INTO kv (run_id, key, value) VALUES (?, ?, ?)",
                (run_id, key, json.dumps(value)),
            )

    def queue_run_value(self, run_id: str, key: str, value: Any) -> None:
        """Like ``set_run_value`` but never blocks: committed with the next batch of records."""
        self._queue.put(("k", (run_id, key, json.dumps(value, default=str))))

    # -- hot path ------------------------------------------------------------------------------
    def append(self, record: Record) -> None:
        """Queue one record for the next commit. Never blocks, never drops."""
        self._queue.put(("r", record))

    @property
    def error(self) -> str | None:
        """The last commit failure while it lasts (records are held in memory meanwhile)."""
        return None if self._error is None else str(self._error)

    def append_event(self, run_id: str, t_ns: int, kind: str, data: dict[str, Any]) -> None:
        self._queue.put(("e", (run_id, t_ns, kind, json.dumps(data, default=str))))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything appended so far is committed."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(("f", done))
        if not done.wait(timeout):
            raise JournalError(f"journal {self.path}: commit did not finish within {timeout} s")
        if self._error is not None:
            raise JournalError(f"journal {self.path} stopped writing: {self._error}")

    @property
    def committed_record_seq(self) -> int:
        return self._committed_record_seq

    @property
    def committed_event_seq(self) -> int:
        return self._committed_event_seq

    async def wait_for_commit(self, after_seq: int, timeout: float) -> int:
        """Wait until a record with seq > ``after_seq`` is committed, or ``timeout`` passes."""
        if self._committed_record_seq > after_seq:
            return self._committed_record_seq
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        with self._waiters_lock:
            self._waiters.append((loop, fut))
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the caller's cancellation
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return self._committed_record_seq
        finally:
            with self._waiters_lock:
                self._waiters = [w for w in self._waiters if w[1] is not fut]

    def live_ring(self, capacity: int = DEFAULT_CAPACITY) -> CommittedRing:
        """The ring every commit hands its records to from now on (created on first use).

        Records committed before it existed are only in the journal: a reader whose cursor is
        behind ``ring.first_seq`` reads them back from SQLite.
        """
        with self._waiters_lock:
            if self.ring is None:
                self.ring = CommittedRing(capacity, next_seq=self._committed_record_seq + 1)
            return self.ring

    # -- writer thread -------------------------------------------------------------------------
    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError("journal is not open")
        return self._conn

    def _writer(self) -> None:
        conn = self._require_conn()
        stop = False
        # Rows survive a failed commit (disk full, I/O error) and are retried with the next one.
        rows: list[tuple[int, int, int, int, bytes, bytes]] = []
        records: list[Record] = []  # the rows' records, for the live ring
        events: list[tuple[str, int, str, str]] = []
        values: dict[tuple[str, str], str] = {}  # latest wins
        while not stop:
            deadline = time.monotonic() + self.commit_interval_s
            flushes: list[threading.Event] = []
            # Block for the first item, then gather until the commit interval has passed.
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=max(remaining, 0.0005)) if remaining > 0 else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                tag, payload = item
                if tag == "r":
                    rec: Record = payload
                    device_id = self._device_ids.get((rec.run_id, rec.schema.device))
                    if device_id is None:
                        with self._lock:
                            self._register_device(conn, rec.run_id, rec.schema)
                        device_id = self._device_ids[(rec.run_id, rec.schema.device)]
                    rows.append(
                        (
                            device_id,
                            rec.t_ns,
                            rec.step,
                            rec.cycle,
                            array("d", rec.values).tobytes(),
                            rec.quality,
                        )
                    )
                    if self.ring is not None:  # only the live ring needs the objects after the commit
                        records.append(rec)
                elif tag == "e":
                    events.append(payload)
                elif tag == "k":
                    run_id, key, text = payload
                    values[(run_id, key)] = text
                else:
                    flushes.append(payload)
                    break
            if (rows or events or values) and self._commit(conn, rows, events, values, records):
                rows, events, values, records = [], [], {}, []
            for done in flushes:
                done.set()

    def _commit(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[int, int, int, int, bytes, bytes]],
        events: list[tuple[str, int, str, str]],
        values: dict[tuple[str, str], str],
        records: list[Record] | None = None,
    ) -> bool:
        try:
            with self._lock:
                # IMMEDIATE: take the write lock before reading ``before``. A deferred transaction
                # that has read is refused at once ("database is locked", no busy wait) when another
                # connection (daq ack, a sink's cursor) committed in between.
                conn.execute("BEGIN IMMEDIATE")
                before = conn.execute("SELECT COALESCE(MAX(seq),0) FROM records").fetchone()[0]
                if rows:
                    conn.executemany(
                        "INSERT INTO records (device_id, t_ns, step, cycle, vals, qual) VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                if events:
                    conn.executemany("INSERT INTO events (run_id, t_ns, kind, data) VALUES (?, ?, ?, ?)", events)
                if values:
                    conn.executemany(
                        "INSERT OR REPLACE INTO kv (run_id, key, value) VALUES (?, ?, ?)",
                        [(r, k, v) for (r, k), v in values.items()],
                    )
                conn.execute("COMMIT")
                last = conn.execute("SELECT COALESCE(MAX(seq),0) FROM records").fetchone()[0]
                last_ev = conn.execute("SELECT COALESCE(MAX(seq),0) FROM events").fetchone()[0]
        except sqlite3.Error as exc:
            # Disk full or I/O error: the caller keeps the rows in memory and retries; the error
            # is reported loudly (flush raises, the bench logs) until a commit succeeds again.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if self._error is None:
                log.error("journal %s: commit failed, keeping %d records in memory: %s", self.path, len(rows), exc)
            self._error = exc
            return False
        self._error = None
        self.records_written += len(rows)
        ring = self.ring
        if ring is not None and rows:
            # Offered only now that they are durable; the seqs are contiguous when nothing else
            # inserted meanwhile (this thread is the only writer of records), else nobody can tell.
            if records is not None and len(records) == len(rows) and last - before == len(rows):
                ring.extend(before + 1, records)
            else:
                ring.reset(last + 1)
        self._committed_record_seq = last
        self._committed_event_seq = last_ev
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut, last)
        return True


def _resolve(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


class JournalReader:
    """Read side: sinks, exports, reports, the CLI. Blocking calls; use ``asyncio.to_thread``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path}; run a bench first (daq run CONFIG) or pass --journal")
        self._conn = _connect(self.path)
        self._conn.execute("PRAGMA query_only=0")
        self._schemas: dict[int, tuple[str, DeviceSchema]] = {}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schemas -------------------------------------------------------------------------------
    def _schema(self, device_id: int) -> tuple[str, DeviceSchema]:
        hit = self._schemas.get(device_id)
        if hit is None:
            row = self._conn.execute(
                "SELECT run_id, device, kind, channels FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
            if row is None:
                raise JournalError(f"journal {self.path}: record refers to unknown device {device_id}")
            run_id, device, kind, channels = row
            schema = DeviceSchema(device, kind, tuple(Channel(n, u) for n, u in json.loads(channels)))
            hit = self._schemas[device_id] = (run_id, schema)
        return hit

    def schemas(self, run_id: str) -> list[DeviceSchema]:
        rows = self._conn.execute(
            "SELECT device_id FROM devices WHERE run_id=? ORDER BY device_id", (run_id,)
        ).fetchall()
        return [self._schema(r[0])[1] for r in rows]

    def _to_record(self, row: tuple[int, int, int, int, int, bytes, bytes]) -> Record:
        seq, device_id, t_ns, step, cycle, vals, qual = row
        run_id, schema = self._schema(device_id)
        values = array("d")
        values.frombytes(vals)
        return Record(schema, t_ns, values.tolist(), bytes(qual), run_id, step, cycle, seq)

    # -- forwarding ----------------------------------------------------------------------------
    def records_after(self, seq: int, limit: int) -> list[Record]:
        rows = self._conn.execute(
            "SELECT seq, device_id, t_ns, step, cycle, vals, qual FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [self._to_record(r) for r in rows]

    def events_after(self, seq: int, limit: int) -> list[JournalEvent]:
        rows = self._conn.execute(
            "SELECT seq, run_id, t_ns, kind, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [JournalEvent(s, r, t, k, json.loads(d)) for s, r, t, k, d in rows]

    def last_record_seq(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]

    def last_event_seq(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def record_t_ns(self, seq: int) -> int | None:
        row = self._conn.execute("SELECT t_ns FROM records WHERE seq=?", (seq,)).fetchone()
        return None if row is None else row[0]

    def get_cursor(self, name: str) -> int:
        row = self._conn.execute("SELECT seq FROM cursors WHERE name=?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, name: str, seq: int) -> None:
        self._conn.execute(
            "INSERT INTO cursors (name, seq, updated_ns) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET seq=excluded.seq, updated_ns=excluded.updated_ns",
            (name, seq, time.time_ns()),
        )

    def cursors(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, seq FROM cursors").fetchall())

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[RunInfo]:
        rows = self._conn.execute(
            "SELECT r.run_id, bench_id, started_ns, ended_ns, status, reason, config_hash, metadata,"
            " (SELECT COUNT(*) FROM records JOIN devices d USING (device_id) WHERE d.run_id = r.run_id)"
            " FROM runs r ORDER BY started_ns"
        ).fetchall()
        return [RunInfo(*r[:7], json.loads(r[7]), r[8]) for r in rows]

    def run(self, run_id: str) -> RunInfo:
        """A run by id, by unique prefix, or ``latest``."""
        runs = self.runs()
        if not runs:
            raise JournalError(f"journal {self.path} holds no runs yet")
        if run_id == "latest":
            return runs[-1]
        exact = [r for r in runs if r.run_id == run_id]
        if exact:
            return exact[0]
        prefixed = [r for r in runs if r.run_id.startswith(run_id)]
        if len(prefixed) == 1:
            return prefixed[0]
        known = ", ".join(r.run_id for r in runs[-5:])
        if prefixed:
            raise JournalError(f"run id {run_id!r} is ambiguous ({len(prefixed)} runs); give more of it")
        raise JournalError(f"no run {run_id!r} in {self.path}; recent runs: {known} (see: daq runs)")

    def run_value(self, run_id: str, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM kv WHERE run_id=? AND key=?", (run_id, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def iter_run_records(
        self,
        run_id: str,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: list[str] | None = None,
        batch: int = 5000,
    ) -> Iterator[Record]:
        """Records of one run in time order (all devices interleaved)."""
        ids = [
            r[0]
            for r in self._conn.execute("SELECT device_id, device FROM devices WHERE run_id=?", (run_id,)).fetchall()
            if devices is None or r[1] in devices
        ]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        lo = -(2**62) if start_ns is None else start_ns
        hi = 2**63 - 1 if end_ns is None else end_ns
        last_t, last_seq = lo - 1, 0
        while True:
            rows = self._conn.execute(
                f"SELECT seq, device_id, t_ns, step, cycle, vals, qual FROM records"
                f" WHERE device_id IN ({marks}) AND (t_ns > ? OR (t_ns = ? AND seq > ?)) AND t_ns <= ?"
                f" ORDER BY t_ns, seq LIMIT ?",
                (*ids, last_t, last_t, last_seq, hi, batch),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._to_record(row)
            last_seq, last_t = rows[-1][0], rows[-1][2]

    def run_events(self, run_id: str) -> list[JournalEvent]:
        rows = self._conn.execute(
            "SELECT seq, run_id, t_ns, kind, data FROM events WHERE run_id=? ORDER BY seq", (run_id,)
        ).fetchall()
        return [JournalEvent(s, r, t, k, json.loads(d)) for s, r, t, k, d in rows]

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += os.path.getsize(p)
        return total


# -- writes from other processes and tasks ---------------------------------------------------------


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the SQLite pages in use (freed pages are reused, so this is what a budget counts)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


_PRUNE_CHUNK_ROWS = 20_000


def prune_delivered(conn: sqlite3.Connection, *, max_bytes: int, delivered_seq: int, keep_run: str) -> tuple[int, int]:
    """Delete delivered records (seq <= ``delivered_seq``) of finished runs other than ``keep_run``,
    oldest first in chunks, until under ``max_bytes``. Returns (rows deleted, used bytes after)."""
    deleted = 0
    used = used_bytes(conn)
    while used > max_bytes:
        cur = conn.execute(
            "DELETE FROM records WHERE seq IN (SELECT r.seq FROM records r JOIN devices d USING (device_id)"
            " JOIN runs USING (run_id) WHERE r.seq <= ? AND d.run_id != ? AND runs.status != 'running'"
            " ORDER BY r.seq LIMIT ?)",
            (delivered_seq, keep_run, _PRUNE_CHUNK_ROWS),
        )
        if cur.rowcount <= 0:
            break
        deleted += cur.rowcount
        used = used_bytes(conn)
    return deleted, used


class JournalCommands:
    """Every write to a journal that its writer thread does not make: ``daq ack`` and ``daq test
    pause|resume|abort`` from another process, a run closed after its process died, the bench's
    answers it reads back, and the disk budget's pruning.

    Same rules as the writer thread: WAL, ``synchronous=NORMAL``, a 10 s busy timeout, and every
    write in one short ``BEGIN IMMEDIATE`` transaction, so it either lands whole or not at all and
    never interleaves with the writer's batch; SQLite's file lock serialises writers across
    processes. Errors are ``JournalError`` lines naming the file. Blocking: from async code, call
    it in a worker thread. ``connect_each_call`` opens a connection per call (for pollers that may be
    cancelled mid-call: nothing stays open).
    """

    def __init__(self, path: str | Path, *, connect_each_call: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path}; pass --journal or --bench")
        self._per_call = connect_each_call
        self._conn = None if connect_each_call else _connect(self.path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> JournalCommands:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _with_conn(self, work: Any, *, write: bool) -> Any:
        conn = _connect(self.path) if self._per_call or self._conn is None else self._conn
        try:
            if not write:
                return work(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            action = "write to" if write else "read"
            raise JournalError(f"cannot {action} journal {self.path}: {exc}; is the file writable?") from exc
        finally:
            if conn is not self._conn:
                conn.close()

    # -- events --------------------------------------------------------------------------------
    def append_events(self, run_id: str, rows: list[tuple[int, str, dict[str, Any]]]) -> list[int]:
        """Append events (t_ns, kind, data) to a run in one transaction; returns their seqs."""

        def work(conn: sqlite3.Connection) -> list[int]:
            seqs = []
            for t_ns, kind, data in rows:
                cur = conn.execute(
                    "INSERT INTO events (run_id, t_ns, kind, data) VALUES (?, ?, ?, ?)",
                    (run_id, t_ns, kind, json.dumps(data, default=str)),
                )
                seqs.append(int(cur.lastrowid or 0))
            return seqs

        return self._with_conn(work, write=True)

    def run_events_after(self, run_id: str, after_seq: int, kind: str) -> list[JournalEvent]:
        """A run's events of one kind with seq > ``after_seq``, in order."""

        def work(conn: sqlite3.Connection) -> list[JournalEvent]:
            rows = conn.execute(
                "SELECT seq, run_id, t_ns, kind, data FROM events WHERE run_id=? AND seq>? AND kind=? ORDER BY seq",
                (run_id, after_seq, kind),
            ).fetchall()
            return [JournalEvent(s, r, t, k, json.loads(d)) for s, r, t, k, d in rows]

        return self._with_conn(work, write=False)

    # -- run values (kv) -----------------------------------------------------------------------
    def insert_value(self, run_id: str, key: str, value: Any) -> None:
        """Add a new run value; JournalError if the key exists (commands never overwrite)."""
        sql = "INSERT INTO kv (run_id, key, value) VALUES (?, ?, ?)"
        self._with_conn(lambda c: c.execute(sql, (run_id, key, json.dumps(value))), write=True)

    def set_value(self, run_id: str, key: str, value: Any) -> None:
        self._with_conn(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO kv (run_id, key, value) VALUES (?, ?, ?)", (run_id, key, json.dumps(value))
            ),
            write=True,
        )

    def value(self, run_id: str, key: str, default: Any = None) -> Any:
        rows = self._with_conn(
            lambda c: c.execute("SELECT value FROM kv WHERE run_id=? AND key=?", (run_id, key)).fetchall(), write=False
        )
        return default if not rows else json.loads(rows[0][0])

    def last_key(self, run_id: str, prefix: str) -> str:
        """The greatest run-value key starting with ``prefix`` ('' if none)."""
        rows = self._with_conn(
            lambda c: c.execute(
                "SELECT MAX(key) FROM kv WHERE run_id=? AND key LIKE ? ESCAPE '\\'", (run_id, _like_prefix(prefix))
            ).fetchall(),
            write=False,
        )
        return rows[0][0] or ""

    def values_after(self, run_id: str, prefix: str, after_key: str) -> list[tuple[str, str]]:
        """(key, raw JSON) of the run values with ``prefix`` and a key greater than ``after_key``, by key."""
        return self._with_conn(
            lambda c: c.execute(
                "SELECT key, value FROM kv WHERE run_id=? AND key LIKE ? ESCAPE '\\' AND key > ? ORDER BY key",
                (run_id, _like_prefix(prefix), after_key),
            ).fetchall(),
            write=False,
        )

    # -- runs ----------------------------------------------------------------------------------
    def end_run_offline(self, run_id: str, *, status: str, reason: str, event: str, data: dict[str, Any]) -> None:
        """Close a run whose process is gone: status, reason and one event, in one transaction."""
        now = time.time_ns()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET status=?, reason=?, ended_ns=COALESCE(ended_ns, ?) WHERE run_id=?",
                (status, reason, now, run_id),
            )
            conn.execute(
                "INSERT INTO events (run_id, t_ns, kind, data) VALUES (?, ?, ?, ?)",
                (run_id, now, event, json.dumps(data, default=str)),
            )

        self._with_conn(work, write=True)

    # -- disk budget ---------------------------------------------------------------------------
    def used_bytes(self) -> int:
        return self._with_conn(used_bytes, write=False)

    def delivered_seq(self, cursor_names: list[str]) -> int:
        """The record seq every named cursor has passed (0 if a cursor never delivered, or none given)."""
        return self._with_conn(lambda c: _delivered_seq(c, cursor_names), write=False)

    def prune_delivered(self, *, max_bytes: int, cursor_names: list[str], keep_run: str) -> tuple[int, int]:
        """If over ``max_bytes``: ``prune_delivered`` what every named cursor has delivered.
        Returns (rows deleted, used bytes). Autocommit chunks, not one transaction, so each chunk's
        pages are free for the writer at once."""

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            used = used_bytes(conn)
            if used <= max_bytes:
                return 0, used
            delivered = _delivered_seq(conn, cursor_names)
            return prune_delivered(conn, max_bytes=max_bytes, delivered_seq=delivered, keep_run=keep_run)

        return self._with_conn(work, write=False)


def _delivered_seq(conn: sqlite3.Connection, cursor_names: list[str]) -> int:
    if not cursor_names:
        return 0  # no sink: the journal is the only copy, nothing may go
    marks = ",".join("?" * len(cursor_names))
    rows = conn.execute(f"SELECT name, seq FROM cursors WHERE name IN ({marks})", cursor_names).fetchall()
    if len(rows) < len(cursor_names):
        return 0  # a sink that never delivered anything
    # and never what a sink may still send again after a server crash (daq.sinks.replay)
    floors = [f"{name}:replay" for name in cursor_names]
    kept = conn.execute(f"SELECT seq FROM cursors WHERE name IN ({marks})", floors).fetchall()
    return min([seq for _, seq in rows] + [seq for (seq,) in kept])


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
