"""Fault plans shared by the simulators (plain data, no I/O, no clock of their own).

Two shapes cover (wire faults live with the protocol servers: ``simulators.modbus_faults``) what a test wants to break:

- ``Countdown``: "misbehave on the next N occasions" (ignore the next output-off command,
  drop the next 3 replies).
- ``FaultPlan``: faults that start (or stop) at a simulated time, e.g. "at t = 600 s cell 3
  starts heating at 1 degC/s". Whoever owns simulated time (``SimPack``) applies them exactly
  at their time, so results do not depend on how often somebody polls.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Countdown:
    """Fires on the next ``remaining`` occasions, then never again until re-armed."""

    remaining: int = 0

    def arm(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"fault count must be >= 0, got {count}")
        self.remaining = count

    def take(self) -> bool:
        """True (and one occasion used up) while armed."""
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    @property
    def armed(self) -> bool:
        return self.remaining > 0


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    at_s: float  # simulated monotonic seconds
    name: str  # for logs and test messages
    apply: Callable[[], None]


class FaultPlan:
    """Faults ordered by time; ``apply_due`` runs those whose time has come, once each."""

    def __init__(self, faults: Iterable[ScheduledFault] = ()) -> None:
        self._pending: list[ScheduledFault] = []
        self.applied: list[ScheduledFault] = []
        for fault in faults:
            self.add(fault)

    def add(self, fault: ScheduledFault) -> None:
        bisect.insort(self._pending, fault, key=lambda f: f.at_s)

    def at(self, at_s: float, name: str, apply: Callable[[], None]) -> None:
        self.add(ScheduledFault(at_s, name, apply))

    @property
    def next_at_s(self) -> float:
        return self._pending[0].at_s if self._pending else math.inf

    @property
    def pending(self) -> tuple[ScheduledFault, ...]:
        return tuple(self._pending)

    def apply_due(self, now_s: float) -> list[ScheduledFault]:
        due: list[ScheduledFault] = []
        while self._pending and self._pending[0].at_s <= now_s:
            fault = self._pending.pop(0)
            fault.apply()
            self.applied.append(fault)
            due.append(fault)
        return due
