"""The InfluxDB sink: history from the journal, as line protocol, v1 or v2 API.

Batches of up to ``batch_max_records`` records (plus the events journaled meanwhile) are written
when full or when the oldest waited ``flush_interval_s``. A batch counts as delivered on a 2xx
answer; only then does the cursor move. Failures keep the data in the journal:

- 429, 5xx, no answer: back off (jittered, at least the server's ``Retry-After``) and send again;
- 401/403, 404: credentials or database/bucket wrong: back off and send again, reported clearly;
- 413: split the batch in halves until it fits;
- other 4xx: bisect to the offending line; that one record is written to the rejection log (and
  counted in the metrics) before the cursor moves past it, never dropped silently.

Schema: ``daq.sinks.lineprotocol`` and docs/sinks.md.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.clock import Clock, MonotonicClock
from daq.config.sinks import InfluxSinkConfig, SecretSource
from daq.errors import JournalError, SinkError
from daq.sinks.backoff import Backoff
from daq.sinks.base import (
    ErrorReporter,
    JournalFeed,
    RateMeter,
    Rejection,
    RejectionLog,
    SinkMetrics,
    cursor_names,
    encode_in_slices,
    error_text,
    iso_ns,
)
from daq.sinks.credentials import client_ssl_context, read_optional_secret, read_secret
from daq.sinks.influx_http import InfluxWriter, Outcome, WriteResult
from daq.sinks.lineprotocol import LineProtocolEncoder
from daq.sinks.replay import JournalReplay, Position

if TYPE_CHECKING:
    import random

    from daq.journal import Journal

log = logging.getLogger(__name__)

RECORD, EVENT = 0, 1
EVENT_BATCH = 1000


class _SendAgain(Exception):
    """A write failed after recent acknowledgements: deliver again from the replay window's floor."""


@dataclass(slots=True)
class _Item:
    """One journal entry on its way: its line (None when it has no field to write) and its origin."""

    stream: int  # RECORD or EVENT
    seq: int
    line: str | None
    t_ns: int
    run_id: str
    source: str  # device (records) or event kind


class InfluxSink:
    """Forwards one bench's journal to one InfluxDB database or bucket. Run ``run()`` as ``sink:<name>``."""

    kind = "influxdb"

    def __init__(
        self,
        config: InfluxSinkConfig,
        *,
        bench_id: str,
        journal_path: str | Path,
        journal: Journal | None = None,
        clock: Clock | None = None,
        where: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Reads credentials and TLS files now: a mistake raises ``ConfigError`` before the bench starts.

        ``journal`` (the bench's writer) makes the sink wake on each commit instead of polling and
        journals a ``sink_rejected`` event for each refused record.
        """
        self.config = config
        self.name = config.name
        self.bench_id = bench_id
        self._where = where or f"sinks({config.name})"
        self._clock = clock or MonotonicClock()
        w = self._where
        self._bucket = self._plain_or_secret(config.bucket, what=f"{w}.bucket")
        self._org = self._plain_or_secret(config.org, what=f"{w}.org")
        token = read_optional_secret(config.token, what=f"{w}.token")
        username = read_optional_secret(config.username, what=f"{w}.username")
        password = read_optional_secret(config.password, what=f"{w}.password")
        tls = client_ssl_context(config.tls, what=w) if config.url.startswith("https://") else None
        self._writer_args: dict[str, Any] = dict(
            url=config.url,
            api=config.api,
            bucket=self._bucket,
            org=self._org,
            token=token,
            database=config.database,
            retention_policy=config.retention_policy,
            username=username,
            password=password,
            ssl_context=tls,
            request_timeout_s=config.request_timeout_s,
        )
        where_to = f"bucket {self._bucket}" if config.api == "v2" else f"database {config.database}"
        self.target = f"{config.url} ({config.api}, {where_to})"
        self._encoder = LineProtocolEncoder(
            bench_id, step_cycle_tags=config.step_cycle_tags, events_measurement=config.events_measurement
        )
        self._cursor_name, self._event_cursor_name = cursor_names(config.name)
        self._feed = JournalFeed(Path(journal_path), writer=journal, live=True)
        self._rejections = RejectionLog(Path(journal_path), writer=journal)
        b = config.backoff
        self._backoff = Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, jitter=b.jitter, rng=rng)
        self._metrics = SinkMetrics(name=config.name, kind=self.kind, target=self.target)
        self._errors = ErrorReporter(self._metrics, log, self._clock)
        self._rate = RateMeter()
        # (seq, t_ns) of records read but not yet acknowledged, oldest first: the backlog's age
        self._pending: deque[tuple[int, int]] = deque()
        self._prepared = False
        self._replay = JournalReplay(config.name, config.replay_window_s, self._feed)
        self._connections_seen = 0  # of the current InfluxWriter

    @staticmethod
    def _plain_or_secret(value: str | SecretSource | None, *, what: str) -> str | None:
        if isinstance(value, SecretSource):
            return read_secret(value, what=what).reveal()
        return value

    @property
    def rejection_log_path(self) -> Path:
        return self._rejections.path

    def writer(self) -> InfluxWriter:
        """A writer to this sink's database with its credentials (``daq sinks verify``)."""
        return InfluxWriter(**self._writer_args)

    @property
    def encoder(self) -> LineProtocolEncoder:
        return self._encoder

    # -- public ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        snapshot = self._metrics.snapshot(
            now_ns=self._clock.wall_ns(), rate=self._rate.rate(), journal_seq=self._feed.newest_committed()
        )
        return {**snapshot, **self._feed.counters(), "replayed_records": self._replay.replayed_records}

    async def run(self) -> None:
        """Forward forever; retry with jittered backoff; cancel to stop."""
        try:
            while True:
                try:
                    await self._prepare()
                    async with InfluxWriter(**self._writer_args) as writer:
                        await self._forward(writer)
                except asyncio.CancelledError:
                    raise
                except _SendAgain:
                    continue  # deliver from the replay floor now (a failed write has backed off already)
                except Exception as exc:
                    self._failed(exc)
                await self._refresh_backlog()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._feed.close()
            self._prepared = False  # a later run() reopens the journal and reloads the cursors

    # -- journal side ----------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if self._prepared:
            return
        reader = await self._feed.open()
        self._metrics.cursor = await self._feed.call(reader.get_cursor, self._cursor_name)
        self._metrics.event_cursor = await self._feed.call(reader.get_cursor, self._event_cursor_name)
        await self._replay.load(Position(self._metrics.cursor, self._metrics.event_cursor))
        self._prepared = True

    def _reconnected(self, writer: InfluxWriter) -> bool:
        """The last write needed a new connection although one had worked: the server may have
        restarted (a crash answers nothing, the next connection simply works) and lost data."""
        seen, self._connections_seen = self._connections_seen, writer.connections_opened
        return (
            seen >= 1
            and writer.connections_opened > seen
            and self._replay.behind(Position(self._metrics.cursor, self._metrics.event_cursor))
        )

    async def _rewind(self) -> None:
        """On every (re)connection: send again what the server may have lost (daq.sinks.replay)."""
        m = self._metrics
        m.cursor, m.event_cursor = await self._replay.rewind(Position(m.cursor, m.event_cursor))
        m.oldest_pending_t_ns = None

    async def _refresh_backlog(self) -> None:
        reader = self._feed.reader
        if reader is None:
            return
        try:
            newest = await self._feed.call(reader.last_record_seq)
            self._metrics.journal_seq = max(self._metrics.journal_seq, newest)
            if newest > self._metrics.cursor and self._metrics.oldest_pending_t_ns is None:
                self._metrics.oldest_pending_t_ns = await self._feed.call(reader.record_t_ns, self._metrics.cursor + 1)
        except Exception as exc:  # the metrics are best effort; the next delivery try reports properly
            log.debug("sink %s: backlog refresh failed: %s", self.name, exc)

    async def _read(self, record_after: int, event_after: int, room: int) -> tuple[list[_Item], int, int, int]:
        """The next records (live ring or journal read-back) and events, as line protocol."""
        reader = self._feed.reader
        assert reader is not None
        enc = self._encoder
        records = await self._feed.next_records(record_after, room)
        items = await encode_in_slices(
            records, lambda r: _Item(RECORD, r.seq, enc.record_line(r), r.t_ns, r.run_id, r.schema.device)
        )
        events = await self._feed.call(reader.events_after, event_after, EVENT_BATCH)
        items += [_Item(EVENT, e.seq, enc.event_line(e), e.t_ns, e.run_id, e.kind) for e in events]
        newest = await self._feed.newest_record_seq()
        return (
            items,
            records[-1].seq if records else record_after,
            events[-1].seq if events else event_after,
            newest,
        )

    async def _forward(self, writer: InfluxWriter) -> None:
        """Deliver batch after batch; the next batch is read and encoded while the current one is
        on the wire (reading and encoding cost about as much as the database's answer)."""
        m = self._metrics
        await self._rewind()
        self._connections_seen = 0
        self._pending.clear()
        upcoming = asyncio.create_task(self._collect(m.cursor, m.event_cursor), name=f"sink:{self.name}:read")
        try:
            while True:
                items, record_after, event_after = await upcoming
                upcoming = asyncio.create_task(self._collect(record_after, event_after), name=f"sink:{self.name}:read")
                await self._deliver(writer, items)
        finally:
            upcoming.cancel()
            await asyncio.wait([upcoming])

    async def _collect(self, record_after: int, event_after: int) -> tuple[list[_Item], int, int]:
        """The batch after the given seqs: full, or what arrived until the first waited ``flush_interval_s``."""
        cfg = self.config
        m = self._metrics
        loop = asyncio.get_running_loop()
        items: list[_Item] = []
        deadline: float | None = None
        while True:
            chunk, record_after, event_after, newest = await self._read(
                record_after, event_after, cfg.batch_max_records - len(items)
            )
            m.journal_seq = max(m.journal_seq, newest)
            items += chunk
            self._pending.extend((i.seq, i.t_ns) for i in chunk if i.stream == RECORD)
            if m.oldest_pending_t_ns is None and self._pending:
                m.oldest_pending_t_ns = self._pending[0][1]
            if len(items) >= cfg.batch_max_records:
                break
            now = loop.time()
            if items:
                if deadline is None:
                    deadline = now + cfg.flush_interval_s
                if now >= deadline:
                    break
                timeout = deadline - now
            else:
                timeout = self._feed.idle_poll_s
            await self._feed.wait_for_records(record_after, min(timeout, self._feed.idle_poll_s))
        return items, record_after, event_after

    def _body(self, items: list[_Item]) -> bytes | None:
        """Worker thread: the request body for ``items`` (None if none of them has a line)."""
        lines = [i.line for i in items if i.line is not None]
        if not lines:
            return None
        body = "\n".join(lines).encode()
        return gzip.compress(body, compresslevel=1) if self.config.gzip else body

    def _acknowledge_sync(self, record_seq: int | None, event_seq: int | None) -> None:
        reader = self._feed.reader
        assert reader is not None
        if record_seq is not None:
            reader.set_cursor(self._cursor_name, record_seq)
        if event_seq is not None:
            reader.set_cursor(self._event_cursor_name, event_seq)

    # -- database side ---------------------------------------------------------------------------

    async def _deliver(self, writer: InfluxWriter, items: list[_Item]) -> None:
        """Until every item is written or recorded as rejected; backs off on failures, never raises
        for the database's problems."""
        pending: deque[list[_Item]] = deque([items])
        while pending:
            chunk = pending[0]
            body = await self._feed.call(self._body, chunk)
            result = (
                WriteResult(Outcome.OK, None, "")
                if body is None
                else await writer.write(body, gzipped=self.config.gzip)
            )
            if result.ok:
                pending.popleft()
                await self._acknowledge(chunk, delivered=True)
                self._errors.recovered()
                self._backoff.reset()
                if self._reconnected(writer):
                    raise _SendAgain
            elif result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED) and len(chunk) > 1:
                # Halve: a body over the server's limit, or a batch with a line it refuses.
                pending.popleft()
                mid = len(chunk) // 2
                pending.appendleft(chunk[mid:])
                pending.appendleft(chunk[:mid])
                log.debug("sink %s: HTTP %s, splitting %d entries", self.name, result.status, len(chunk))
            elif result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED):
                pending.popleft()
                await self._reject(chunk[0], result)
                await self._acknowledge(chunk, delivered=False)
            else:
                self._errors.failed(self._describe(result))
                await asyncio.sleep(self._backoff.next_delay(at_least_s=result.retry_after_s))
                if self._replay.behind(Position(self._metrics.cursor, self._metrics.event_cursor)):
                    raise _SendAgain

    async def _acknowledge(self, chunk: list[_Item], *, delivered: bool) -> None:
        record_seq = max((i.seq for i in chunk if i.stream == RECORD), default=None)
        event_seq = max((i.seq for i in chunk if i.stream == EVENT), default=None)
        await self._feed.call(self._acknowledge_sync, record_seq, event_seq)
        m = self._metrics
        if record_seq is not None:
            m.cursor = record_seq
        if event_seq is not None:
            m.event_cursor = event_seq
        if delivered:
            n_records = sum(1 for i in chunk if i.stream == RECORD)
            m.delivered_records += n_records
            m.delivered_events += len(chunk) - n_records
            m.last_delivery_at = iso_ns(self._clock.wall_ns())
            self._rate.add(n_records)
        pending = self._pending
        while pending and pending[0][0] <= m.cursor:
            pending.popleft()
        m.oldest_pending_t_ns = pending[0][1] if pending else None
        await self._replay.acknowledged(Position(m.cursor, m.event_cursor))

    async def _reject(self, item: _Item, result: WriteResult) -> None:
        """Write the refusal down (log file, journal event, metrics) before the cursor passes it."""
        stream = "record" if item.stream == RECORD else "event"
        rejection = Rejection(
            sink=self.name,
            stream=stream,
            seq=item.seq,
            run_id=item.run_id,
            device=item.source,
            t_ns=item.t_ns,
            status=result.status,
            reason=result.reason,
        )
        await self._feed.call(lambda: self._rejections.record(rejection, now_ns=self._clock.wall_ns()))
        m = self._metrics
        if item.stream == RECORD:
            m.rejected_records += 1
        else:
            m.rejected_events += 1
        m.last_rejection = f"{stream} seq {item.seq} ({item.source}): HTTP {result.status}: {result.reason}"
        log.error(
            "sink %s: %s refused %s seq %d of %s (HTTP %s: %s); written to %s",
            self.name,
            self.target,
            stream,
            item.seq,
            item.source,
            result.status,
            result.reason,
            self._rejections.path,
        )

    # -- errors ----------------------------------------------------------------------------------

    def _describe(self, result: WriteResult) -> str:
        cfg = self.config
        where = f"InfluxDB {cfg.url}"
        if result.outcome is Outcome.AUTH:
            sources = [s.describe() for s in (cfg.token, cfg.username, cfg.password) if s is not None]
            return f"{where} refused the credentials (HTTP {result.status}: {result.reason}); check " + (
                ", ".join(sources) if sources else "the sink's token/username/password: none configured"
            )
        if result.outcome is Outcome.NOT_FOUND:
            if cfg.api == "v1":
                return (
                    f"{where}: database {cfg.database!r} not found (HTTP 404: {result.reason});"
                    f' create it: CREATE DATABASE "{cfg.database}"'
                )
            return f"{where}: bucket {self._bucket!r} or org not found (HTTP 404: {result.reason}); create it"
        if result.outcome is Outcome.RETRY:
            after = f", server asks to wait {result.retry_after_s:g} s" if result.retry_after_s else ""
            return f"{where} answered HTTP {result.status} ({result.reason}){after}"
        return result.reason

    def _failed(self, exc: BaseException) -> None:
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        expected = isinstance(leaf, OSError | JournalError | SinkError | TimeoutError)
        prefix = "journal: " if isinstance(leaf, JournalError) else f"InfluxDB {self.config.url}: "
        self._errors.failed(prefix + error_text(leaf), exc=None if expected else leaf)
