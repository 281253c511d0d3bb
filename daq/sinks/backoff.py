"""Jittered exponential backoff and HTTP ``Retry-After`` parsing. Pure: no clock, no sleeping."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

# A server asking for more than this is capped: a bench should not go quiet for hours on one header.
RETRY_AFTER_CAP_S = 600.0


class Backoff:
    """Delays that grow from ``initial_s`` by ``multiplier`` up to ``max_s``.

    Each delay is shortened by a random fraction of up to ``jitter`` so that many benches cut off
    by the same outage do not all come back in the same instant.
    """

    __slots__ = ("_attempt", "_rng", "initial_s", "jitter", "max_s", "multiplier")

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_s <= max_s or multiplier < 1 or not 0 <= jitter <= 1:
            raise ValueError("need 0 < initial_s <= max_s, multiplier >= 1, 0 <= jitter <= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Failures since the last ``reset``."""
        return self._attempt

    def next_delay(self, *, at_least_s: float | None = None) -> float:
        """The delay before the next try; ``at_least_s`` (e.g. a server's Retry-After) is honoured."""
        base = min(self.max_s, self.initial_s * self.multiplier**self._attempt)
        self._attempt += 1
        delay = base * (1.0 - self.jitter * self._rng.random())
        if at_least_s is not None:
            delay = max(delay, min(at_least_s, RETRY_AFTER_CAP_S))
        return delay

    def reset(self) -> None:
        self._attempt = 0


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now_s
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
