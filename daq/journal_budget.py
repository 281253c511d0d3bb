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
import time
from collections.abc import Callable
from typing import Any

from daq.clock import Clock
from daq.errors import JournalError
from daq.journal import Journal, JournalCommands, prune_delivered, used_bytes

__all__ = ["JournalBudget", "prune_delivered", "used_bytes"]  # the two SQL helpers live in daq.journal

log = logging.getLogger(__name__)

class JournalBudget:
    """Checks the journal every ``period_s``; ``sink_names`` says whose cursors must have passed a record."""

    def __init__(
        self,
        journal: Journal,
        *,
        run_id: str,
        clock: Clock,
        sink_names: Callable[[], list[str]],
        max_bytes: int,
        warn_fraction: float = 0.8,
        period_s: float = 10.0,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.clock = clock
        self.sink_names = sink_names
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

    def check_once(self) -> None:
        cursors = [f"sink:{name}" for name in self.sink_names()]
        with JournalCommands(self.journal.path, connect_each_call=True) as journal:
            deleted, self.used = journal.prune_delivered(
                max_bytes=self.max_bytes, cursor_names=cursors, keep_run=self.run_id
            )
        self.pruned_rows += deleted
        if deleted:
            log.info("journal: pruned %d delivered records of finished runs", deleted)

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
                f"journal {self.journal.path} uses {self.used / 1e6:.1f} MB of its {self.max_bytes / 1e6:.1f} MB"
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
                kind = f"journal.size_{self.state}"
                self.journal.append_event(self.run_id, self.clock.wall_ns(), kind, self.status())

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check_once)
            except JournalError as exc:
                log.warning("journal budget check failed: %s", exc)
            self._judge()
            await asyncio.sleep(self.period_s)
