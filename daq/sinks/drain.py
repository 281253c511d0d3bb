"""Drain: let running sinks deliver the journal up to a given point, for a bounded time.

Used by the bench's clean stop (polling has stopped; each sink gets its ``drain_on_stop_s``) and by
``daq sinks flush`` (a stopped journal's backlog, without the bench). Whatever is not delivered in
time stays in the journal, and the caller says so: nothing is dropped, only left for later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daq.sinks.base import Sink

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 0.05


@dataclass(frozen=True, slots=True)
class DrainResult:
    sink: str
    records_left: int
    events_left: int

    @property
    def done(self) -> bool:
        return self.records_left == 0 and self.events_left == 0

    def describe(self) -> str:
        """One line for the operator."""
        if self.done:
            return f"sink {self.sink}: everything delivered"
        events = f" and {self.events_left} events" if self.events_left else ""
        return (
            f"sink {self.sink}: {self.records_left} records{events} not yet delivered;"
            " they stay in the journal (daq sinks flush delivers them)"
        )


def _left(sink: Sink, record_seq: int, event_seq: int) -> DrainResult:
    m = sink.metrics()
    # A sink that forwards no journal events (Sparkplug: records only) has none left to wait for.
    events_left = max(0, event_seq - m["event_cursor"]) if getattr(sink, "forwards_events", True) else 0
    return DrainResult(sink.name, max(0, record_seq - m["cursor"]), events_left)


async def _drain_one(sink: Sink, record_seq: int, event_seq: int, timeout_s: float) -> DrainResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = _left(sink, record_seq, event_seq)
        if result.done or loop.time() >= deadline:
            return result
        await asyncio.sleep(min(_CHECK_EVERY_S, max(0.0, deadline - loop.time())))


async def drain_sinks(
    sinks: Sequence[Sink], *, record_seq: int, event_seq: int, timeout_for: Callable[[Sink], float]
) -> list[DrainResult]:
    """Wait, all sinks at once, until each has delivered up to the given seqs or its time is up.

    The sinks keep running in their own tasks; this only watches their cursors."""
    results = await asyncio.gather(*(_drain_one(s, record_seq, event_seq, timeout_for(s)) for s in sinks))
    for result in results:
        log.info("%s", result.describe())
    return list(results)
