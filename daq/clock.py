"""One injectable clock for the whole bench.

Real time in the lab; a scaled clock when every device is simulated, so simulators, polling,
the runner and the limits agree on what time it is and hours of battery time pass in seconds.

``monotonic()`` is in (possibly simulated) seconds and drives schedules; ``wall_ns()`` is the
(possibly simulated) Unix time stamped on records. Network timeouts stay in real seconds: they
are about the wire, not the battery.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    time_scale: float

    def monotonic(self) -> float: ...

    def wall_ns(self) -> int: ...

    async def sleep_until(self, deadline: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """Real time."""

    time_scale = 1.0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """Simulated time running ``time_scale`` times faster than real time.

    Starts at ``start_wall_s`` (Unix seconds, default now) so recorded data has simulated
    timestamps that still look like dates.
    """

    def __init__(self, time_scale: float, *, start_wall_s: float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = float(time_scale)
        self._real0 = time.monotonic()
        self.real_origin_ns = time.time_ns()  # the real Unix time at the clock's origin
        self._wall0_ns = self.real_origin_ns if start_wall_s is None else int(start_wall_s * 1e9)

    @property
    def bench_origin_ns(self) -> int:
        """The bench (simulated) Unix time at the clock's origin; see daq.timebase."""
        return self._wall0_ns

    def monotonic(self) -> float:
        return (time.monotonic() - self._real0) * self.time_scale

    def wall_ns(self) -> int:
        return self._wall0_ns + int((time.monotonic() - self._real0) * self.time_scale * 1e9)

    async def sleep_until(self, deadline: float) -> None:
        delay = (deadline - self.monotonic()) / self.time_scale
        await asyncio.sleep(delay if delay > 0 else 0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.time_scale if seconds > 0 else 0)


class ManualClock:
    """A clock that only moves when told to; for pure unit tests of time-dependent logic."""

    time_scale = 1.0

    def __init__(self, start: float = 0.0, *, wall0_ns: int = 1_700_000_000_000_000_000) -> None:
        self.now = start
        self._wall0_ns = wall0_ns

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return self._wall0_ns + int(self.now * 1e9)

    async def sleep_until(self, deadline: float) -> None:
        if deadline > self.now:
            self.now = deadline
        await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now + seconds)
