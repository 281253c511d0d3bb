"""The small interfaces the bench hands its parts, so no part imports the bench (ADR 0014).

``daq.bench`` is the composition root: it builds the safety monitor, the status reporter and the
journal budget and gives each only what it uses: the journal, the run id, the clock, the cyclers
(the actions interface) and a task spawner. The parts never see the bench, so they cannot depend on
the rest of it, and import-linter's layers contract (pyproject.toml) fails on any import of
``daq.bench`` from below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from daq.clock import Clock
from daq.engine.poller import PollStats
from daq.journal import Journal
from daq.records import Record

RecordHook = Callable[[Record], None]


class TaskSpawner(Protocol):
    """Starts a named task that lives as long as the bench (the bench cancels it on stop)."""

    def __call__(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...


class PolledDevice(Protocol):
    """What the status reporter reads of a device's poller."""

    @property
    def stats(self) -> PollStats: ...

    @property
    def period_s(self) -> float: ...


class StatusSource(Protocol):
    """What the status snapshot is made of (the bench provides it)."""

    @property
    def bench_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def records_seen(self) -> int: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def pollers(self) -> Mapping[str, PolledDevice]: ...

    @property
    def latest(self) -> Mapping[str, Record]: ...

    @property
    def status_providers(self) -> Mapping[str, Callable[[], dict[str, Any]]]: ...
