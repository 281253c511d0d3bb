"""Charge (Ah) and energy (Wh) from the cycler's current and voltage samples (+ = charge).

Between two samples the integral is the trapezoid, split at the zero crossing so charge and
discharge are counted apart (a drive cycle moves both ways within one step). Where the runner
changed the command between two samples (a step transition, a pulse edge, a pause), the trapezoid
would blend two operating points, so ``SampleIntegrator.switch`` cuts the interval there: the old
values hold up to the switch, the commanded current (when the command fixes one) fills the time to
the next switch, and the next sample's values hold back to the last switch. With polls of 10-30 s
of battery time at accelerated time that keeps 10 s pulses and step boundaries honest.

Pure arithmetic: times are record timestamps in ns, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from daq.totals import Totals

NS = 1_000_000_000
_SECONDS_PER_HOUR = 3600.0

__all__ = ["NS", "SampleIntegrator", "Totals"]


@dataclass(slots=True)
class _Sample:
    t_ns: int
    current_a: float
    voltage_v: float


@dataclass(slots=True)
class _Switch:
    t_ns: int
    target: Totals
    commanded_a: float | None  # the current the new command fixes (None: CV, CP, ... decide it)


class SampleIntegrator:
    """Feeds sample intervals into the ``Totals`` of whichever step was running during them."""

    def __init__(self, target: Totals | None = None) -> None:
        self.target = target
        self._last: _Sample | None = None
        self._switches: list[_Switch] = []

    @property
    def last_t_ns(self) -> int | None:
        return None if self._last is None else self._last.t_ns

    def sample(self, t_ns: int, current_a: float, voltage_v: float) -> None:
        """One good sample of the cycler. Samples older than the last one are ignored.

        A sample stamped before the last switch but arriving after it (a poll that started before
        the command and was answered after it) is ignored too: its interval up to the switch is
        booked already, and whether its values are from before or after the command is unknown."""
        last = self._last
        if last is not None and t_ns <= last.t_ns:
            return
        if self._switches and t_ns < self._switches[-1].t_ns:
            return
        if last is not None:
            if not self._switches:
                if self.target is not None:
                    dt = (t_ns - last.t_ns) / NS
                    self.target.add_trapezoid(last.current_a, last.voltage_v, current_a, voltage_v, dt)
            else:
                self._close_switched_interval(last, t_ns, current_a, voltage_v)
        self._last = _Sample(t_ns, current_a, voltage_v)
        self._switches.clear()

    def switch(self, t_ns: int, target: Totals | None, *, commanded_a: float | None = None) -> None:
        """The command changed at ``t_ns``; time from now on belongs to ``target``.

        The interval since the last sample (or the last switch) is booked to the old target at once,
        so the old step's totals are final when this returns."""
        last = self._last
        if last is not None and t_ns > last.t_ns:
            if not self._switches:
                if self.target is not None:
                    self.target.add_constant(last.current_a, last.voltage_v, (t_ns - last.t_ns) / NS)
            else:
                prev = self._switches[-1]
                if t_ns > prev.t_ns and prev.target is not None:
                    amps = prev.commanded_a if prev.commanded_a is not None else last.current_a
                    prev.target.add_constant(amps, last.voltage_v, (t_ns - prev.t_ns) / NS)
            self._switches.append(_Switch(t_ns, target, commanded_a))
        self.target = target

    def _close_switched_interval(self, last: _Sample, t_ns: int, current_a: float, voltage_v: float) -> None:
        """Samples straddle switches: the new sample's values hold back to the last switch."""
        final = self._switches[-1]
        if t_ns > final.t_ns and final.target is not None:
            final.target.add_constant(current_a, voltage_v, (t_ns - final.t_ns) / NS)

    def add_gap(self, target: Totals, ah: float, voltage_v: float) -> None:
        """Charge measured outside the samples (a crash gap, from the device's own counter)."""
        target.add_constant(ah * _SECONDS_PER_HOUR, voltage_v, 1.0)
