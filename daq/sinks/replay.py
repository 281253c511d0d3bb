"""The replay window: after a failure or a restart a sink sends again what it had delivered last.

A 2xx or a PUBACK means the server *has* the data, not that it is durable: InfluxDB,
VictoriaMetrics and Mosquitto keep recent writes in memory and flush them every few seconds, so a
server that crashes loses what it acknowledged just before. The sink cannot see that loss, so after
any failure (and at every start, since the server may have crashed while the bench was down) it
moves its cursor back to where it stood ``window_s`` before its latest acknowledgement and delivers
from there again. InfluxDB overwrites a point with the same series and timestamp, so the rewrite
costs only bandwidth; MQTT subscribers see the replayed records flagged ``historical``.

``ReplayWindow`` is the pure bookkeeping; ``JournalReplay`` keeps its floor in the journal's cursor
table under ``sink:<name>:replay`` (and ``...:replay:events``) so a restarted process goes back as
far as the killed one would have (ADR 0009).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from daq.sinks.base import cursor_names

if TYPE_CHECKING:
    from daq.sinks.base import JournalFeed

log = logging.getLogger(__name__)


class Position(NamedTuple):
    """A sink's place in the journal: the last record and event seq confirmed."""

    records: int
    events: int


def replay_cursor_names(sink_name: str) -> tuple[str, str]:
    """Names of the persisted replay floor in the journal's ``cursors`` table (records, events)."""
    return f"sink:{sink_name}:replay", f"sink:{sink_name}:replay:events"


class ReplayWindow:
    """Remembers when the cursor reached each position, to go back ``window_s`` on a failure.

    The window is measured back from the latest acknowledgement, not from when the failure was
    noticed: a server that dies after a quiet minute lost only what it acknowledged shortly before
    dying, and that was acknowledged shortly before the sink's latest success.
    """

    __slots__ = ("_history", "floor", "window_s")

    def __init__(self, window_s: float, floor: Position) -> None:
        self.window_s = window_s
        self.floor = floor  # the position as it stood window_s before the latest acknowledgement
        self._history: deque[tuple[float, Position]] = deque()

    def acknowledged(self, position: Position, now_s: float) -> bool:
        """The destination confirmed up to ``position`` at ``now_s`` (monotonic seconds).

        True if ``floor`` moved (the caller persists it then)."""
        history = self._history
        history.append((now_s, position))
        before = self.floor
        while history and history[0][0] <= now_s - self.window_s:
            self.floor = history.popleft()[1]
        return self.floor != before

    def rewind(self) -> Position:
        """Where to deliver from again: the floor. What came after it is forgotten (sent again)."""
        self._history.clear()
        return self.floor


class JournalReplay:
    """A sink's replay window kept in its journal: the floor survives a ``kill -9`` of the bench.

    The sink calls ``load`` once it has its cursors, ``rewind`` whenever it (re)connects or a write
    failed, and ``acknowledged`` after each cursor move. All journal access goes through the sink's
    ``JournalFeed`` worker thread.
    """

    def __init__(self, sink_name: str, window_s: float, feed: JournalFeed) -> None:
        self.sink_name = sink_name
        self._feed = feed
        self._cursor_names = cursor_names(sink_name)
        self._floor_names = replay_cursor_names(sink_name)
        self._window = ReplayWindow(window_s, Position(0, 0))
        self.replayed_records = 0  # sent again after rewinds since this sink started
        self._floor_saved = False  # the journal has a floor row (else the next ack writes one)

    @property
    def floor(self) -> Position:
        return self._window.floor

    async def load(self, cursor: Position) -> None:
        """The persisted floor, or ``cursor`` itself for a journal written before the window existed."""
        reader = await self._feed.open()
        saved = await self._feed.call(reader.cursors)
        records_name, events_name = self._floor_names
        floor = Position(
            min(saved.get(records_name, cursor.records), cursor.records),
            min(saved.get(events_name, cursor.events), cursor.events),
        )
        self._window = ReplayWindow(self._window.window_s, floor)
        self._floor_saved = records_name in saved and events_name in saved

    async def rewind(self, current: Position) -> Position:
        """Where to deliver from now; persisted as the sink's cursor when it goes back."""
        floor = self._window.rewind()
        if floor == current:
            return current
        reader = await self._feed.open()
        records_name, events_name = self._cursor_names

        def persist() -> None:
            reader.set_cursor(records_name, floor.records)
            reader.set_cursor(events_name, floor.events)

        await self._feed.call(persist)
        replayed = current.records - floor.records
        self.replayed_records += replayed
        log.info(
            "sink %s: sending again the %d records and %d events acknowledged in the last %g s"
            " (the server may have lost them)",
            self.sink_name,
            replayed,
            current.events - floor.events,
            self._window.window_s,
        )
        return floor

    def behind(self, current: Position) -> bool:
        """True if a rewind would go back (something was acknowledged within the window)."""
        return self._window.floor != current

    async def acknowledged(self, position: Position) -> None:
        if not self._window.acknowledged(position, time.monotonic()) and self._floor_saved:
            return
        self._floor_saved = True
        floor = self._window.floor
        reader = await self._feed.open()
        records_name, events_name = self._floor_names

        def persist() -> None:
            reader.set_cursor(records_name, floor.records)
            reader.set_cursor(events_name, floor.events)

        await self._feed.call(persist)
