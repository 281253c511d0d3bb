"""What every sink shares: the contract, its self-metrics, and its view of the journal.

A sink forwards the journal to one destination. It keeps its own acknowledged cursor (the seq of
the last record the destination confirmed) in the journal's ``cursors`` table under
``sink:<name>`` (events: ``sink:<name>:events``), reads onward from it in order, and moves it only
after the destination's acknowledgement. Delivery is therefore at-least-once: after a crash
between the acknowledgement and the cursor update the last batch is sent again (InfluxDB
overwrites identical points; MQTT consumers see ``seq`` to drop duplicates).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from daq.journal import JournalReader

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.journal import Journal
    from daq.journal_ring import CommittedRing
    from daq.records import Record

T = TypeVar("T")
R = TypeVar("R")

# Records encoded per slice on the event loop before it lets the pollers run again (~0.2-0.5 ms).
ENCODE_SLICE = 32

# Repeated identical errors are logged again at most this often (the metrics always have the last one).
_ERROR_LOG_REPEAT_S = 300.0


class Sink(Protocol):
    """The composition root runs ``run()`` as a named task (``sink:<name>``) and reads ``metrics()``."""

    name: str

    async def run(self) -> None:
        """Forward forever from the persisted cursor, in order. Survives outages with jittered backoff;
        never raises for connection problems; cancellation stops it cleanly."""
        ...

    def metrics(self) -> dict[str, Any]: ...


def cursor_names(sink_name: str) -> tuple[str, str]:
    """The journal cursor names of a sink: (records, events)."""
    return f"sink:{sink_name}", f"sink:{sink_name}:events"


def iso_ns(t_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: ``2024-05-01T12:00:00.123456789Z``."""
    s, ns = divmod(t_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ns:09d}Z"


def innermost(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (a TaskGroup's failure), or the exception itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def error_text(exc: BaseException) -> str:
    """The innermost meaningful message of an exception or exception group."""
    exc = innermost(exc)
    return str(exc) or type(exc).__name__


class RateMeter:
    """Deliveries per second over a sliding window (real time: it is about the wire)."""

    __slots__ = ("_samples", "_started", "_sum", "window_s")

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._sum = 0
        self._started: float | None = None

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._sum -= self._samples.popleft()[1]

    def add(self, n: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._started is None:
            self._started = now
        self._samples.append((now, n))
        self._sum += n
        self._expire(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._expire(now)
        if self._started is None:
            return 0.0
        return self._sum / max(min(self.window_s, now - self._started), 1e-3)


@dataclass(slots=True)
class SinkMetrics:
    """A sink's self-metrics. ``snapshot()`` is what ``metrics()`` returns and MQTT publishes."""

    name: str
    kind: str
    target: str  # URL or host:port; never credentials
    connected: bool = False
    cursor: int = 0
    event_cursor: int = 0
    journal_seq: int = 0  # newest record seq the sink knows the journal holds
    oldest_pending_t_ns: int | None = None  # t_ns of the first record not yet delivered
    delivered_records: int = 0
    delivered_events: int = 0
    rejected_records: int = 0
    rejected_events: int = 0
    last_rejection: str = ""
    errors: int = 0
    last_error: str = ""
    last_error_at: str = ""
    last_delivery_at: str = ""

    def snapshot(self, *, now_ns: int, rate: float, journal_seq: int | None = None) -> dict[str, Any]:
        newest = max(self.journal_seq, journal_seq or 0)
        backlog = max(0, newest - self.cursor)
        backlog_s = 0.0
        if backlog and self.oldest_pending_t_ns is not None:
            backlog_s = max(0.0, (now_ns - self.oldest_pending_t_ns) / 1e9)
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "connected": self.connected,
            "backlog_records": backlog,
            "backlog_s": round(backlog_s, 3),
            "delivered_records": self.delivered_records,
            "delivered_events": self.delivered_events,
            "rate_records_per_s": round(rate, 1),
            "rejected_records": self.rejected_records,
            "rejected_events": self.rejected_events,
            "last_rejection": self.last_rejection,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_delivery_at": self.last_delivery_at,
            "cursor": self.cursor,
            "event_cursor": self.event_cursor,
        }


class ErrorReporter:
    """Counts failures into the metrics and logs each distinct one once (again after a while)."""

    def __init__(self, metrics: SinkMetrics, logger: logging.Logger, clock: Clock) -> None:
        self._metrics = metrics
        self._log = logger
        self._clock = clock
        self._last_logged: tuple[str, float] | None = None
        self._failing = False

    def failed(self, message: str, *, exc: BaseException | None = None) -> None:
        """Count a failure; ``exc`` (an unexpected exception, i.e. a bug) is logged with its traceback."""
        m = self._metrics
        m.errors += 1
        m.last_error = message
        m.last_error_at = iso_ns(self._clock.wall_ns())
        m.connected = False
        now = time.monotonic()
        if (
            self._last_logged is None
            or self._last_logged[0] != message
            or now - self._last_logged[1] > (_ERROR_LOG_REPEAT_S)
        ):
            if exc is not None:
                self._log.error("sink %s: unexpected error: %s (retrying)", m.name, message, exc_info=exc)
            else:
                self._log.warning("sink %s: %s (data stays in the journal; retrying)", m.name, message)
            self._last_logged = (message, now)
        self._failing = True

    def recovered(self) -> None:
        m = self._metrics
        m.connected = True
        if self._failing:
            self._log.info("sink %s: delivering again to %s", m.name, m.target)
            self._failing = False
            self._last_logged = None


class JournalFeed:
    """One sink's reader of the journal: blocking SQLite calls run in a worker thread, one at a time.

    With the bench's ``Journal`` writer at hand it wakes as soon as records commit; otherwise (a
    sink in another process) it polls every ``idle_poll_s``.

    ``live=True`` (with the writer at hand) serves ``records_after`` from the writer's ring of
    committed records while the sink keeps up, and reads back from SQLite only what the ring no
    longer (or never) held: the backlog after an outage or a restart. A sink that reads through
    ``reader.records_after`` itself keeps working as before.
    """

    def __init__(
        self, path: Path, *, writer: Journal | None = None, idle_poll_s: float = 0.25, live: bool = False
    ) -> None:
        self.path = path
        self.writer = writer
        self.idle_poll_s = idle_poll_s
        self.reader: JournalReader | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.ring: CommittedRing | None = writer.live_ring() if live and writer is not None else None
        self.records_from_ring = 0  # records served from the ring
        self.records_from_journal = 0  # records read back from the journal

    async def next_records(self, after_seq: int, limit: int) -> list[Record]:
        """Event loop: up to ``limit`` committed records after ``after_seq``, in seq order; from the
        ring without a thread hop while it holds them, else read back in the worker thread."""
        if self.ring is not None:
            live = self.ring.after(after_seq, limit)
            if live is not None:
                self.records_from_ring += len(live)
                return live
        return await self.call(self.records_after, after_seq, limit)

    async def newest_record_seq(self) -> int:
        """Event loop: the newest committed record seq (a query in the worker without the writer)."""
        if self.writer is not None:
            return self.writer.committed_record_seq
        return await self.call(self.last_record_seq)

    def records_after(self, after_seq: int, limit: int) -> list[Record]:
        """Worker thread: up to ``limit`` committed records after ``after_seq``, in seq order."""
        if self.ring is not None:
            live = self.ring.after(after_seq, limit)
            if live is not None:
                self.records_from_ring += len(live)
                return live
        assert self.reader is not None
        records = self.reader.records_after(after_seq, limit)
        self.records_from_journal += len(records)
        return records

    def counters(self) -> dict[str, int]:
        """Where the records came from: the live ring or a read-back (replay) from the journal."""
        return {"records_from_ring": self.records_from_ring, "records_from_journal": self.records_from_journal}

    def last_record_seq(self) -> int:
        """Worker thread: the newest committed record seq (the writer knows it without a query)."""
        if self.writer is not None:
            return self.writer.committed_record_seq
        assert self.reader is not None
        return self.reader.last_record_seq()

    async def open(self) -> JournalReader:
        if self.reader is None:
            self.reader = await self.call(JournalReader, self.path)
        return self.reader

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in this feed's worker thread (sequential, so the reader is never shared)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-feed")
        fut = self._executor.submit(fn, *args)
        self._inflight = fut
        return await asyncio.wrap_future(fut)

    def newest_committed(self) -> int | None:
        """The writer's last committed record seq, if this process owns the writer."""
        return None if self.writer is None else self.writer.committed_record_seq

    async def wait_for_records(self, after_seq: int, timeout: float) -> None:
        """Return when a record after ``after_seq`` may be there, or after ``timeout``."""
        if timeout <= 0:
            return
        if self.writer is not None:
            await self.writer.wait_for_commit(after_seq, timeout)
        else:
            await asyncio.sleep(min(timeout, self.idle_poll_s))

    def close(self) -> None:
        """Close the reader once any call still running in the worker has finished."""
        if self._inflight is not None:
            concurrent.futures.wait([self._inflight], timeout=30)
            self._inflight = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None


async def encode_in_slices(items: list[T], encode: Callable[[T], R], *, size: int = ENCODE_SLICE) -> list[R]:
    """``[encode(x) for x in items]`` on the event loop, yielding to the other tasks every ``size`` items.

    Encoding on the loop in short slices keeps each pause of the pollers well under a millisecond;
    in a worker thread the same work would hold the GIL for up to the switch interval (5 ms) every
    time the loop wants it back.
    """
    out: list[R] = []
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        out += [encode(x) for x in items[start : start + size]]
    return out


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record or event the destination refused for good (e.g. HTTP 400 on that one line)."""

    sink: str
    stream: str  # "record" | "event"
    seq: int
    run_id: str
    device: str
    t_ns: int
    status: int | None
    reason: str


class RejectionLog:
    """Where refused data is written down before a sink's cursor moves past it: never silently.

    Appends one JSON line per rejection to ``<journal>.rejections.jsonl`` (fsynced) and, when the bench's
    journal writer is at hand, also journals a ``sink_rejected`` event so it shows with the run.
    """

    def __init__(self, journal_path: Path, *, writer: Journal | None = None) -> None:
        self.path = journal_path.with_name(journal_path.name + ".rejections.jsonl")
        self.writer = writer

    def record(self, rejection: Rejection, *, now_ns: int) -> None:
        """Blocking; call from a worker thread."""
        entry = {"at_ns": now_ns, **asdict(rejection)}
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None and rejection.stream == "record":
            self.writer.append_event(rejection.run_id, now_ns, "sink_rejected", entry)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


def journal_backlog(reader: JournalReader, sink_name: str, *, now_ns: int) -> dict[str, Any]:
    """A sink's backlog as the journal alone tells it (for ``daq status`` without the bench process)."""
    records_cursor, events_cursor = cursor_names(sink_name)
    cursor = reader.get_cursor(records_cursor)
    last = reader.last_record_seq()
    oldest = reader.record_t_ns(cursor + 1) if last > cursor else None
    return {
        "name": sink_name,
        "cursor": cursor,
        "event_cursor": reader.get_cursor(events_cursor),
        "backlog_records": max(0, last - cursor),
        "backlog_events": max(0, reader.last_event_seq() - reader.get_cursor(events_cursor)),
        "backlog_s": 0.0 if oldest is None else max(0.0, (now_ns - oldest) / 1e9),
    }
