"""Poll engine: one asyncio task per device, scheduled on deadlines of the bench clock.

Deadlines advance by exactly one period from the previous deadline (not from when the poll
finished), so periods never drift. The first poll runs at once; after it each device's schedule
is shifted by a phase within one period, fixed per device name, so many devices on the same
period do not all wake in the same instant and queue behind each other (at 200 devices that
queue was the poll-start jitter: see docs/benchmarks.md). A poll that overruns skips the missed slots and counts them.
The phase shortens the first gap rather than lengthening it, so no gap exceeds one period (a
device polled every 5 s with a 5 s data-age limit must not see a 9 s gap after its first poll).
A device that fails is marked in its records (quality per value), retried, and reconnected with
jittered exponential backoff; it never delays another device because each has its own task.
While a device is unreachable the engine still emits one record per period with quality
``COMM_LOST``, so gaps are visible in the data and stale-data limits can act on them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from daq.clock import Clock
from daq.errors import ConnectError, DriverError, ResponseTimeoutError, TransportError
from daq.records import Quality, Record
from drivers.base import PollingDriver

log = logging.getLogger(__name__)

RecordHandler = Callable[[Record], None]


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff in real seconds (reconnects are about the wire, not the battery)."""

    initial_s: float = 0.2
    max_s: float = 10.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self.attempt)
        self.attempt += 1
        return base * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class SampleWindow:
    """The last ``size`` float samples, oldest first, in a flat ``array`` ring.

    Not a ``deque`` of floats: with 200 devices that was two million objects the garbage
    collector's full passes walked (100+ ms pauses, so missed polls; docs/benchmarks.md).
    """

    __slots__ = ("_buf", "_count", "_next", "size")

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._buf = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def append(self, value: float) -> None:
        self._buf[self._next] = value
        self._next = (self._next + 1) % self.size
        if self._count < self.size:
            self._count += 1

    def clear(self) -> None:
        self._next = self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[float]:
        start = (self._next - self._count) % self.size
        if start + self._count <= self.size:
            return iter(self._buf[start : start + self._count])
        return iter(self._buf[start:] + self._buf[: self._next])


@dataclass(slots=True)
class PollStats:
    polls: int = 0
    good_polls: int = 0
    timeouts: int = 0
    errors: int = 0
    missed: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str = ""
    last_poll_ns: int = 0
    lateness_s: SampleWindow = field(default_factory=SampleWindow)  # poll start - deadline, last 10,000

    def as_dict(self) -> dict[str, object]:
        return {
            "polls": self.polls,
            "good_polls": self.good_polls,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "missed": self.missed,
            "reconnects": self.reconnects,
            "connected": self.connected,
            "last_error": self.last_error,
        }


class DevicePoller:
    def __init__(
        self,
        driver: PollingDriver,
        *,
        period_s: float,
        clock: Clock,
        on_record: RecordHandler,
        timeout_s: float = 1.0,
        retries: int = 1,
        backoff: Backoff | None = None,
        phase_s: float | None = None,
    ) -> None:
        """``phase_s``: offset of this device's deadlines within the period after the first poll;
        default: derived from the device name (stable across runs, spread over the period)."""
        self.driver = driver
        self.period_s = period_s
        self.clock = clock
        self.on_record = on_record
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.stats = PollStats()
        if phase_s is None:
            phase_s = zlib.crc32(driver.name.encode()) / 2**32 * period_s
        self.phase_s = phase_s
        self._next_connect_real = 0.0
        self._needs_connect = True
        self._timeout_streak = 0  # consecutive polls without an answer

    @property
    def name(self) -> str:
        return self.driver.name

    async def run(self) -> None:
        clock = self.clock
        schema = self.driver.schema
        n = len(schema.channels)
        period = self.period_s
        deadline = clock.monotonic()
        phase = self.phase_s  # applied once, after the first poll
        stats = self.stats
        try:
            while True:
                await clock.sleep_until(deadline)
                start = clock.monotonic()
                stats.lateness_s.append(start - deadline)
                t_ns = clock.wall_ns()
                values = [math.nan] * n
                quality = bytearray(n)
                await self._poll_once(values, quality)
                stats.polls += 1
                stats.last_poll_ns = t_ns
                if not any(quality):
                    stats.good_polls += 1
                self.on_record(Record(schema, t_ns, values, bytes(quality)))
                period = self.period_s  # re-read: the runner sets each step's record period
                if phase > 0:
                    # The phase moves the second poll earlier, never later: no gap between two
                    # polls exceeds the period, so the data-age limit sees at most one period.
                    # (If the first poll outlasted the phase, the second one starts at once.)
                    deadline += phase
                    phase = 0.0
                    continue
                deadline += period
                now = clock.monotonic()
                if now > deadline:
                    skipped = math.ceil((now - deadline) / period)
                    stats.missed += skipped
                    deadline += skipped * period
        finally:
            try:
                await self.driver.close()
            except DriverError:
                pass

    async def _poll_once(self, values: list[float], quality: bytearray) -> None:
        stats = self.stats
        if self._needs_connect:
            if time.monotonic() < self._next_connect_real or not await self._connect():
                quality[:] = bytes([Quality.COMM_LOST]) * len(quality)
                return
        for attempt in range(self.retries + 1):
            try:
                async with asyncio.timeout(self.timeout_s * 4):  # a hung driver must not stall the schedule
                    await self.driver.read(values, quality)
                self._timeout_streak = 0
                return
            except (ResponseTimeoutError, TimeoutError) as exc:
                stats.timeouts += 1
                stats.last_error = str(exc) or f"{self.name}: no answer"
                quality[:] = bytes([Quality.TIMEOUT]) * len(quality)
                if attempt == self.retries:
                    # Several silent polls in a row: drop the link so the next poll reconnects.
                    self._timeout_streak += 1
                    if self._timeout_streak >= 3:
                        self._lost(exc)
                    return
            except TransportError as exc:
                stats.errors += 1
                quality[:] = bytes([Quality.COMM_LOST]) * len(quality)
                self._lost(exc)
                return
            except DriverError as exc:
                stats.errors += 1
                stats.last_error = str(exc)
                return

    async def _connect(self) -> bool:
        stats = self.stats
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                await self.driver.connect()
        except (ConnectError, TransportError, TimeoutError, DriverError) as exc:
            delay = self.backoff.next_delay()
            self._next_connect_real = time.monotonic() + delay
            message = str(exc) or f"{self.name}: connect timed out"
            if message != stats.last_error:
                log.warning("%s: %s; retrying in %.1f s", self.name, message, delay)
            stats.last_error = message
            stats.connected = False
            return False
        if stats.polls:  # a reconnect, not the first connect
            log.info("%s: connected again", self.name)
            stats.reconnects += 1
        stats.connected = True
        self._needs_connect = False
        self._timeout_streak = 0
        self.backoff.reset()
        return True

    def _lost(self, exc: Exception) -> None:
        stats = self.stats
        if stats.connected:
            log.warning("%s: link lost: %s", self.name, exc)
        stats.last_error = str(exc)
        stats.connected = False
        self._needs_connect = True
        self._timeout_streak = 0
        self._next_connect_real = time.monotonic() + self.backoff.next_delay()
