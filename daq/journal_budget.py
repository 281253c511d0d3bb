"""Keep the journal inside its disk budget without ever losing a reading.

Policy (documented in docs/sinks.md):
- used size = SQLite pages in use (freed pages are reused, so a pruned journal stops growing);
- above ``warn_fraction`` of the budget: a warning in the log, the status and the journal (once per
  crossing);
- above the budget: delete the oldest records of *finished* runs that *every* sink has already
  delivered, in chunks, until back under the budget;
- records that some sink has not delivered, and the records of the running run, are never deleted.
  If that is not enough (a sink down for days, or no sinks at all: then the journal is the only
  copy), the bench keeps recording above the budget and says so loudly every minute.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000


def used_bytes(conn: sqlite3.Connection) -> int:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def prune_delivered(conn: sqlite3.Connection, *, max_bytes: int, delivered_seq: int, keep_run: str) -> tuple[int, int]:
    """Delete delivered records of finished runs, oldest first, until under ``max_bytes``.

    Returns (rows deleted, used bytes after).
    """
    deleted = 0
    used = used_bytes(conn)
    while used > max_bytes:
        cur = conn.execute(
            "DELETE FROM records WHERE seq IN (SELECT r.seq FROM records r JOIN devices d USING (device_id)"
            " JOIN runs USING (run_id) WHERE r.seq <= ? AND d.run_id != ? AND runs.status != 'running'"
            " ORDER BY r.seq LIMIT ?)",
            (delivered_seq, keep_run, CHUNK_ROWS),
        )
        if cur.rowcount <= 0:
            break
        deleted += cur.rowcount
        used = used_bytes(conn)
    return deleted, used


class JournalBudget:
    def __init__(self, bench: Bench, *, max_bytes: int, warn_fraction: float = 0.8, period_s: float = 10.0) -> None:
        self.bench = bench
        self.max_bytes = max_bytes
        self.warn_fraction = warn_fraction
        self.period_s = period_s
        self.used = 0
        self.pruned_rows = 0
        self.state = "ok"  # ok | warning | over
        self._last_shout = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "used_mb": round(self.used / 1e6, 3),
            "max_mb": round(self.max_bytes / 1e6, 3),
            "state": self.state,
            "pruned_rows": self.pruned_rows,
        }

    def _delivered_seq(self, conn: sqlite3.Connection) -> int:
        names = [f"sink:{s.name}" for s in self.bench.sinks]
        if not names:
            return 0  # no sink: the journal is the only copy, nothing may go
        marks = ",".join("?" * len(names))
        rows = conn.execute(f"SELECT name, seq FROM cursors WHERE name IN ({marks})", names).fetchall()
        if len(rows) < len(names):
            return 0  # a sink that never delivered anything
        # and never what a sink may still send again after a server crash (daq.sinks.replay)
        floors = [f"sink:{s.name}:replay" for s in self.bench.sinks]
        kept = conn.execute(f"SELECT seq FROM cursors WHERE name IN ({marks})", floors).fetchall()
        return min([seq for _, seq in rows] + [seq for (seq,) in kept])

    def check_once(self) -> None:
        conn = sqlite3.connect(self.bench.journal.path, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            self.used = used_bytes(conn)
            if self.used > self.max_bytes:
                deleted, self.used = prune_delivered(
                    conn,
                    max_bytes=self.max_bytes,
                    delivered_seq=self._delivered_seq(conn),
                    keep_run=self.bench.run_id,
                )
                self.pruned_rows += deleted
                if deleted:
                    log.info("journal: pruned %d delivered records of finished runs", deleted)
        finally:
            conn.close()

    def _judge(self) -> None:
        previous = self.state
        if self.used > self.max_bytes:
            self.state = "over"
        elif self.used > self.warn_fraction * self.max_bytes:
            self.state = "warning"
        else:
            self.state = "ok"
        now = time.monotonic()
        if self.state != "ok" and (self.state != previous or now - self._last_shout > 60):
            self._last_shout = now
            message = (
                f"journal {self.bench.journal.path} uses {self.used / 1e6:.1f} MB of its {self.max_bytes / 1e6:.1f} MB"
                " budget"
                + (
                    "; still recording above it because the rest is not delivered to every sink yet"
                    " (check the sinks, or raise journal.max_size_mb)"
                    if self.state == "over"
                    else ""
                )
            )
            log.warning("%s", message)
            if self.state != previous:
                self.bench.journal.append_event(
                    self.bench.run_id, self.bench.clock.wall_ns(), f"journal.size_{self.state}", self.status()
                )

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check_once)
            except sqlite3.Error as exc:
                log.warning("journal budget check failed: %s", exc)
            self._judge()
            await asyncio.sleep(self.period_s)
