"""How an operator's acknowledgement reaches a running bench: through the run's journal.

``daq ack`` runs as its own process while the bench runs, so it cannot call the monitor. It
appends an ``alarm.acknowledge_request`` row (who, note, when, from which host) to the journal's
``events`` table. The bench's safety monitor polls that table for requests of its run that it
has not answered yet, releases the latch, and answers every request with a
``safety.ack_result`` event naming the request's ``seq`` (``daq ack`` waits for that answer).

Why the events table and not a flag: it is append-only, so the request, who made it and what the
bench did with it stay in the run's record (exported and forwarded like every event); a request
made while the bench is down is applied when the run resumes; and SQLite's WAL lets the bench's
writer and ``daq ack`` write the same file safely. Every read and write here goes through
``daq.journal.JournalCommands``; no SQL lives outside ``daq.journal``.

Journal event kinds of the latch (all with the run id of the trip):
    alarm.tripped               the evaluator tripped (``AlarmEvent.to_dict``)
    alarm.acknowledge_request   written by ``daq ack``: {who, note, requested_ns, host, pid}
    alarm.acknowledged          one per released trip: AlarmEvent fields + note, request_seq
    safety.ack_result           the answer to one request: {request_seq, who, note, acknowledged, still_latched}
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daq.journal import JournalCommands, JournalEvent
from daq.safety.events import AlarmEvent

ACK_REQUEST = "alarm.acknowledge_request"
ACK_RESULT = "safety.ack_result"
TRIPPED_KIND = "alarm.tripped"
ACKNOWLEDGED_KIND = "alarm.acknowledged"


@dataclass(frozen=True, slots=True)
class AckRequest:
    seq: int
    t_ns: int
    who: str
    note: str


def latched_trips(events: Iterable[JournalEvent]) -> list[AlarmEvent]:
    """The trips of a run still latched after ``events`` (in seq order): tripped minus acknowledged."""
    latched: dict[tuple[str, str, str], AlarmEvent] = {}
    for event in events:
        if event.kind == TRIPPED_KIND:
            trip = AlarmEvent.from_dict(event.data)
            latched.setdefault(trip.key, trip)
        elif event.kind == ACKNOWLEDGED_KIND:
            ack = AlarmEvent.from_dict(event.data)
            latched.pop(ack.key, None)
    return list(latched.values())


def answered_request_seq(events: Iterable[JournalEvent]) -> int:
    """The highest request seq the bench already answered (0 if none)."""
    answered = 0
    for event in events:
        if event.kind == ACK_RESULT:
            answered = max(answered, int(event.data.get("request_seq") or 0))
    return answered


def append_events(path: str | Path, run_id: str, rows: list[tuple[int, str, dict[str, Any]]]) -> list[int]:
    """Append events to a journal another process may be writing; returns their seqs.

    One short transaction through ``JournalCommands`` (the journal's one write API for other
    processes), safe next to the bench's writer thread.
    """
    with JournalCommands(path, connect_each_call=True) as commands:
        return commands.append_events(run_id, rows)


def request_acknowledge(path: str | Path, run_id: str, *, who: str, note: str = "") -> int:
    """Record an operator's acknowledgement request for ``run_id``; returns its event seq."""
    now = time.time_ns()
    data = {"who": who, "note": note, "requested_ns": now, "host": socket.gethostname(), "pid": os.getpid()}
    return append_events(path, run_id, [(now, ACK_REQUEST, data)])[0]


class AckRequestReader:
    """The bench side: new acknowledgement requests of one run.

    Blocking (SQLite); call it from a worker thread. Each call opens and closes its own read-only
    connection, so a cancelled caller never leaves a connection in use. ``after_seq`` moves past
    what ``pending`` returned.
    """

    def __init__(self, path: str | Path, run_id: str, *, after_seq: int = 0) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.after_seq = after_seq

    def _events(self, after_seq: int, kind: str) -> list[JournalEvent]:
        with JournalCommands(self.path, connect_each_call=True) as commands:
            return commands.run_events_after(self.run_id, after_seq, kind)

    def pending(self) -> list[AckRequest]:
        out = []
        for event in self._events(self.after_seq, ACK_REQUEST):
            who, note = str(event.data.get("who") or "unknown"), str(event.data.get("note") or "")
            out.append(AckRequest(event.seq, event.t_ns, who, note))
            self.after_seq = event.seq
        return out

    def answer(self, request_seq: int) -> dict[str, Any] | None:
        """The bench's answer to one request (``daq ack`` waits on this), or None yet."""
        for event in self._events(request_seq, ACK_RESULT):
            if event.data.get("request_seq") == request_seq:
                return event.data
        return None
