"""ETA of the running step and of the whole test, from the end conditions and the measured rate. Pure.

A step ends on the first of its end conditions, so its estimate is the soonest of the ones we
can estimate (all in bench seconds):

- ``time_s``: what is left of it (pulses and time series end there too).
- ``step_capacity_ah`` / ``step_energy_wh``: what is left, at the measured current / power.
- a voltage end of a charge or discharge (cc, cccv, pulse): the charge still to move, at the
  measured current. The charge is the SOC headroom times the capacity when a BMS reports SOC,
  otherwise a full swing (the capacity) minus what the step has already moved. A cccv adds
  its constant-voltage tail (below).
- ``current_below`` of a cv step or the CV phase of a cccv: the taper is fitted as an
  exponential decay between the first tapering sample and the latest, t = tau ln(I / I_end).
  Before a taper is seen, the tail is the time to pass the last ``CV_TAIL_FRACTION`` of the
  capacity at the mean of the CC and end currents.

No estimate (shown as ``—``): a step whose only ends are temperature or a voltage we cannot
reach at a known rate (no capacity: a profile in amps on a bench without ``capacity_ah``; a cp
step without a time limit; a rest without one), and a test with such a step still ahead. The
test ETA is the running step's plus the planned steps after it, each estimated at its setpoint
with a full swing; once a cycle has completed, the measured mean cycle duration is used instead
(see ``progress.estimate_remaining_s``), which also captures the fade of an ageing pack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daq.channels import SOC
from daq.profiles import CycleMetrics, Plan
from daq.profiles.plan import ResolvedStep
from daq.records import Record
from daq.totals import Totals

SECONDS_PER_HOUR = 3600.0
CV_TAIL_FRACTION = 0.05  # of the capacity, passed in the CV phase of a CC-CV charge (typical NMC/LFP)
TAPER_START = 0.95  # a cccv is in its CV phase once the current falls below this share of the CC setpoint
MIN_CURRENT_A = 1e-3  # below this a rate is not measurable


@dataclass(frozen=True, slots=True)
class StepMeasure:
    """What the running step has done so far (bench seconds, + = charge)."""

    elapsed_s: float
    current_a: float
    voltage_v: float
    step_ah: float  # net
    step_wh: float  # net
    soc: float | None = None  # 0..1, from a BMS, if one reports it


class StepEta:
    """The running step's estimate; keeps the first tapering sample for the CV fit."""

    def __init__(self, resolved: ResolvedStep, capacity_ah: float | None) -> None:
        self.resolved = resolved
        self.capacity_ah = capacity_ah
        self._taper0: tuple[float, float] | None = None  # (elapsed_s, |I|) when the taper began
        self._saw_cc = False  # a cccv tapers only after its current has reached the CC setpoint

    def remaining_s(self, m: StepMeasure) -> float | None:
        r = self.resolved
        end = r.end
        amps = abs(m.current_a) if math.isfinite(m.current_a) else math.nan
        candidates: list[float] = []
        if end.time_s is not None:
            candidates.append(end.time_s - m.elapsed_s)
        if end.step_capacity_ah is not None and amps > MIN_CURRENT_A:
            candidates.append((end.step_capacity_ah - abs(m.step_ah)) / amps * SECONDS_PER_HOUR)
        power = abs(m.current_a * m.voltage_v) if math.isfinite(m.voltage_v) else math.nan
        if end.step_energy_wh is not None and power > MIN_CURRENT_A:
            candidates.append((end.step_energy_wh - abs(m.step_wh)) / power * SECONDS_PER_HOUR)
        in_taper = self._in_taper(amps)
        if in_taper and end.current_below_a is not None:
            candidates.append(self._taper_s(m.elapsed_s, amps, end.current_below_a))
        elif (voltage_end := self._voltage_end_s(m, amps)) is not None:
            candidates.append(voltage_end)
        finite = [max(0.0, c) for c in candidates if math.isfinite(c)]
        return min(finite) if finite else None

    def _in_taper(self, amps: float) -> bool:
        r = self.resolved
        if r.kind == "cv":
            tapering = math.isfinite(amps)
        elif r.kind == "cccv" and r.current_a:
            at_cc = math.isfinite(amps) and amps >= TAPER_START * abs(r.current_a)
            self._saw_cc = self._saw_cc or at_cc
            tapering = self._saw_cc and math.isfinite(amps) and not at_cc
        else:
            return False
        return tapering and r.end.current_below_a is not None

    def _taper_s(self, elapsed_s: float, amps: float, end_a: float) -> float:
        if amps <= end_a:
            return 0.0
        if self._taper0 is None or amps > self._taper0[1]:
            self._taper0 = (elapsed_s, amps)
        t0, i0 = self._taper0
        if elapsed_s > t0 and i0 > amps:
            tau = (elapsed_s - t0) / math.log(i0 / amps)
            return tau * math.log(amps / end_a)
        return cv_tail_s(self.capacity_ah, abs(self.resolved.current_a or amps), end_a) or math.nan

    def _voltage_end_s(self, m: StepMeasure, amps: float) -> float | None:
        r = self.resolved
        charging = m.current_a > 0
        reaches = r.end.voltage_above_v is not None if charging else r.end.voltage_below_v is not None
        if r.kind == "cccv":  # its CC phase runs to the step's own voltage, in either direction
            reaches = True
        if not reaches or self.capacity_ah is None or not amps > MIN_CURRENT_A or r.kind not in ("cc", "cccv", "pulse"):
            return None
        if m.soc is not None and 0.0 <= m.soc <= 1.0:
            swing_ah = self.capacity_ah * ((1.0 - m.soc) if charging else m.soc)
        else:
            swing_ah = max(0.0, self.capacity_ah - abs(m.step_ah))
        duty = _duty(r)
        seconds = swing_ah / (amps * duty) * SECONDS_PER_HOUR
        if r.kind == "cccv" and r.end.current_below_a is not None:
            seconds += cv_tail_s(self.capacity_ah, amps, r.end.current_below_a) or 0.0
        return seconds


def _duty(r: ResolvedStep) -> float:
    """Share of the time a pulse step's current flows (1 for steady steps)."""
    w = r.waveform
    if w is None or w.quantity != "current_a" or len(w.time_s) < 2 or w.period_s <= 0:
        return 1.0
    on = sum(b - a for a, b, v in zip(w.time_s, w.time_s[1:], w.values, strict=False) if abs(v) > MIN_CURRENT_A)
    return max(on / w.period_s, 1e-3)


def cv_tail_s(capacity_ah: float | None, cc_current_a: float, end_current_a: float) -> float | None:
    """The constant-voltage tail before a taper is measured (see the module docstring)."""
    if capacity_ah is None:
        return None
    mean_a = (abs(cc_current_a) + abs(end_current_a)) / 2
    if mean_a <= MIN_CURRENT_A:
        return None
    return CV_TAIL_FRACTION * capacity_ah / mean_a * SECONDS_PER_HOUR


def planned_step_s(resolved: ResolvedStep, capacity_ah: float | None) -> float | None:
    """A step not started yet, at its setpoint and with a full swing."""
    current = resolved.current_a
    if resolved.kind == "cv":
        current = resolved.current_limit_a
    measure = StepMeasure(
        elapsed_s=0.0,
        current_a=current if current is not None else math.nan,
        voltage_v=math.nan,
        step_ah=0.0,
        step_wh=0.0,
    )
    eta = StepEta(resolved, capacity_ah)
    if resolved.kind == "cv":  # no CC phase: the whole step is the tail
        tail = None
        if resolved.end.current_below_a is not None and current is not None:
            tail = cv_tail_s(capacity_ah, current, resolved.end.current_below_a)
        times = [t for t in (tail, resolved.end.time_s) if t is not None]
        return min(times) if times else None
    return eta.remaining_s(measure)


class PlanEta:
    """Planned durations of every step of the plan, summed from the end, so a lookup is O(1)."""

    def __init__(self, resolved_steps: Iterable[ResolvedStep], capacity_ah: float | None) -> None:
        planned = [planned_step_s(r, capacity_ah) for r in resolved_steps]
        self._after: list[float | None] = [0.0] * (len(planned) + 1)
        for i in range(len(planned) - 1, -1, -1):
            later, this = self._after[i + 1], planned[i]
            self._after[i] = None if later is None or this is None else later + this
        self.planned_s = self._after[0]  # the whole test before it starts

    def after_step(self, number: int) -> float | None:
        """Planned seconds of the steps after running step ``number`` (1-based)."""
        if number < 0 or number >= len(self._after):
            return None
        return self._after[number]

    @classmethod
    def of_plan(cls, plan: Plan, capacity_ah: float | None, *, max_steps: int = 200_000) -> PlanEta | None:
        """Walk the plan once (loops with ``until`` at their ``repeat``); None for an endless one."""
        resolved: list[ResolvedStep] = []
        for item in plan.cursor(metrics=CycleMetrics):
            resolved.append(item.resolved)
            if len(resolved) > max_steps:
                return None
        return cls(resolved, capacity_ah)


def step_measure(
    elapsed_s: float, current_a: float, voltage_v: float, totals: Totals, latest: Mapping[str, Record]
) -> StepMeasure:
    """The running step's measure from the runner's state and the bench's latest records."""
    return StepMeasure(elapsed_s, current_a, voltage_v, totals.net_ah, totals.net_wh, bms_soc(latest))


def whole_remaining_s(step_left_s: float | None, later_s: float | None) -> float | None:
    """The test's ETA: the running step's plus the planned steps after it; None if either is unknown."""
    if step_left_s is None or later_s is None:
        return None
    return step_left_s + later_s


def bms_soc(latest: Mapping[str, Record]) -> float | None:
    """SOC (0..1) of the first BMS whose latest record has a good ``soc_pct``; None without one."""
    for record in latest.values():
        if record.schema.kind != "bms":
            continue
        i = record.schema.index.get(SOC)
        if i is not None and record.quality[i] == 0 and math.isfinite(record.values[i]):
            return record.values[i] / 100.0
    return None


class EtaTracker:
    """What the runner holds: the plan's durations (built on first use) and the running step's estimate."""

    def __init__(self, plan: Plan, capacity_ah: float | None) -> None:
        self._plan = plan
        self._capacity_ah = capacity_ah
        self._plan_eta: PlanEta | None = None
        self._planned = False
        self._step: tuple[int, StepEta] | None = None

    def estimate(self, number: int, resolved: ResolvedStep, measure: StepMeasure) -> tuple[float | None, float | None]:
        """(the running step's remaining s, the whole test's remaining s)."""
        if not self._planned:
            self._plan_eta = PlanEta.of_plan(self._plan, self._capacity_ah)
            self._planned = True
        if self._step is None or self._step[0] != number or self._step[1].resolved is not resolved:
            self._step = (number, StepEta(resolved, self._capacity_ah))
        step_left = self._step[1].remaining_s(measure)
        later = self._plan_eta.after_step(number) if self._plan_eta is not None else None
        return step_left, whole_remaining_s(step_left, later)
