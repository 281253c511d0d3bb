"""How far a test is: cycle n of N, step, times and an ETA, for the live view and ``daq test status``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from daq.channels import current_direction
from daq.profiles import CycleMetrics, Plan

_MAX_WALK_STEPS = 200_000


@dataclass(frozen=True, slots=True)
class PlanSize:
    """Steps and the last cycle index of a full run (loops with ``until`` counted at their ``repeat``)."""

    steps: int | None
    cycles: int | None


def plan_size(plan: Plan) -> PlanSize:
    """Walk the plan once (loops are cheap to walk: nothing is unrolled in memory)."""
    cursor = plan.cursor(metrics=CycleMetrics)
    steps, last_cycle = 0, 0
    for item in cursor:
        steps += 1
        last_cycle = item.cycle_index
        if steps > _MAX_WALK_STEPS:
            return PlanSize(None, None)
    return PlanSize(steps, last_cycle)


@dataclass(slots=True)
class Progress:
    phase: str
    cycle: int
    total_cycles: int | None
    step: int  # running step number, 1-based
    total_steps: int | None
    number: str  # program step, e.g. "1.3"
    label: str
    step_elapsed_s: float
    test_time_s: float  # step time of the whole test so far (pauses excluded)
    eta_s: float | None
    voltage_v: float = math.nan
    current_a: float = math.nan
    step_ah: float = 0.0
    alarms: list[str] = field(default_factory=list)
    reason: str = ""
    step_eta_s: float | None = None  # what is left of the running step (daq.runner.eta)
    time_scale: float = 1.0  # of the bench clock: a simulated bench shows the test ETA on the wall clock too


def estimate_remaining_s(
    *, cycle: int, total_cycles: int | None, cycle_durations_s: list[float], cycle_elapsed_s: float
) -> float | None:
    """Mean duration of the completed cycles times the cycles left (None until one completed)."""
    if total_cycles is None or not cycle_durations_s or total_cycles < 1:
        return None
    recent = cycle_durations_s[-10:]  # cycles slow down as the pack ages; weigh the recent ones
    mean = sum(recent) / len(recent)
    return max(0.0, mean - cycle_elapsed_s) + mean * max(0, total_cycles - cycle)


def _test_eta(p: Progress) -> str:
    """Bench time; on a simulated bench also the wall-clock time it will take (``00:04:20 = 52 s wall``)."""
    text = hms(p.eta_s)
    if p.time_scale != 1.0 and p.eta_s is not None and math.isfinite(p.eta_s):
        text += f" = {hms(p.eta_s / p.time_scale)} wall"
    return text


def _direction(current_a: float) -> str:
    return current_direction(current_a) if math.isfinite(current_a) else ""


def hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def progress_lines(p: Progress) -> list[str]:
    """The same as ``progress_text``, in short lines for the live view (a terminal crops long ones)."""
    cycle = f"cycle {p.cycle} of {p.total_cycles}" if p.total_cycles else f"cycle {p.cycle}"
    steps = f"step {p.step}" + (f" of {p.total_steps}" if p.total_steps else "")
    lines = [
        f"{p.phase.upper()} · {cycle} · {steps}: {p.number} {p.label}",
        f"step {hms(p.step_elapsed_s)}, ETA {hms(p.step_eta_s)} · test {hms(p.test_time_s)}, ETA {_test_eta(p)}",
    ]
    if math.isfinite(p.voltage_v):
        lines.append(f"{p.voltage_v:.3f} V {p.current_a:+.2f} A {_direction(p.current_a)} · step {p.step_ah:+.3f} Ah")
    if p.reason:
        lines.append(p.reason)
    lines += [f"ALARM: {alarm}" for alarm in p.alarms]
    return lines


def progress_text(p: Progress) -> str:
    """One line: phase, cycle n of N, step, times, ETA, latest values, alarms."""
    cycle = f"cycle {p.cycle} of {p.total_cycles}" if p.total_cycles else f"cycle {p.cycle}"
    steps = f"step {p.step}" + (f" of {p.total_steps}" if p.total_steps else "")
    parts = [
        p.phase,
        cycle,
        f"{steps} ({p.number} {p.label})",
        f"step time {hms(p.step_elapsed_s)}",
        f"step ETA {hms(p.step_eta_s)}",
        f"test time {hms(p.test_time_s)}",
        f"ETA {_test_eta(p)}",
    ]
    if math.isfinite(p.voltage_v):
        parts.append(f"{p.voltage_v:.3f} V {p.current_a:+.2f} A {_direction(p.current_a)} {p.step_ah:+.3f} Ah")
    line = " · ".join(parts)
    if p.reason:
        line += f" · {p.reason}"
    if p.alarms:
        line += " · ALARMS: " + "; ".join(p.alarms)
    return line
