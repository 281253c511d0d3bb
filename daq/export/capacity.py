"""Charge and energy counted from recorded voltage and current (+ = charge), per test, cycle and step.

Each interval between two samples is split in half: the first half runs at the earlier sample's
current, the second at the later one's. The total equals the trapezoid rule, yet a current that
reverses between two polls still lands on the right side (charge or discharge) and in the right
step and cycle. An interval longer than ``max_gap_s`` (the link was down, the bench was paused)
is not counted at all and is listed in ``gaps``: a guess would hide that the data are missing.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field

from daq.totals import Totals


@dataclass(slots=True)
class _Sample:
    t_ns: int
    amps: float
    watts: float
    cycle: int
    step_count: int


@dataclass
class CapacityCounter:
    """Feed samples in time order with ``add``; read ``total``, ``cycle``, ``step``, ``per_cycle``."""

    max_gap_s: float
    total: Totals = field(default_factory=Totals)
    cycle: Totals = field(default_factory=Totals)  # the cycle of the last sample
    step: Totals = field(default_factory=Totals)  # the step of the last sample
    per_cycle: dict[int, Totals] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    _last: _Sample | None = None

    def add(self, t_ns: int, volts: float, amps: float, *, cycle: int, step_count: int) -> None:
        now = _Sample(t_ns, amps, volts * amps, cycle, step_count)
        prev = self._last
        self._last = now
        if prev is None:
            self.per_cycle.setdefault(cycle, self.cycle)
            return
        dt_s = (t_ns - prev.t_ns) / 1e9
        counted = 0.0 <= dt_s <= self.max_gap_s
        if counted:
            self._add(prev, dt_s / 2)
        elif dt_s > self.max_gap_s:
            self.gaps.append((prev.t_ns, t_ns))
        if cycle != prev.cycle:
            self.cycle = self.per_cycle.setdefault(cycle, Totals())
        if step_count != prev.step_count:
            self.step = Totals()
        if counted:
            self._add(now, dt_s / 2)

    def _add(self, s: _Sample, dt_s: float) -> None:
        for totals in (self.total, self.per_cycle[s.cycle], self.step):
            totals.add(s.amps, s.watts, dt_s)


def default_max_gap_s(times_ns: list[int]) -> float:
    """Ten typical sample intervals (at least 1 s): longer silences are gaps, not slow polls."""
    if len(times_ns) < 2:
        return 1.0
    intervals = [(b - a) / 1e9 for a, b in itertools.pairwise(times_ns) if b > a]
    if not intervals:
        return 1.0
    return max(10.0 * statistics.median(intervals), 1.0)
