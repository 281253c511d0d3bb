"""A profile's per-step limits against the bench's limit set, before anything runs.

Every leaf step of the plan gets its active limit set (``daq.safety.step_limits``: the bench's
limits, tightened by ``steps.<category>`` and by the profile's ``limits:`` on its loops and on the
step). ``check_plan_limits`` lists every reason a profile cannot run under them: a step limit looser
than the set below it, step limits on a bench without ``safety:`` (they would protect nothing), or
a step that commands more current than its own active limits allow. ``step_currents`` tightens the
runner's current bounds to a step's active limits, so the commands stay inside them.
"""

from __future__ import annotations

import math
from dataclasses import replace

from daq.errors import ConfigError, DaqError
from daq.profiles import Plan, ResolvedStep
from daq.runner.steps import CurrentLimits, step_category, step_direction, voltage_clamp
from daq.safety.limits import LimitSet, UpperLimit
from daq.safety.step_limits import step_limit_set


class StepLimitError(DaqError):
    """A command would leave the running step's active limits; it was not sent."""


def step_where(source: str, number: str, label: str) -> str:
    return f"{source}: step {number} ({label})"


def check_plan_limits(plan: Plan, limits: LimitSet | None, *, bench: str) -> list[str]:
    """Every problem of the plan's step limits, one line each naming the file, step and limit."""
    source = plan.profile.source_name
    problems: list[str] = []
    for leaf in plan.steps:
        step = leaf.resolved
        where = step_where(source, leaf.number, leaf.description)
        if limits is None:
            if step.limits:
                problems.append(
                    f"{where}: limits: the bench {bench} has no safety: section, so step limits would protect"
                    " nothing; add safety: with a limit set to the bench file"
                )
            continue
        try:
            active = step_limit_set(limits, step_category(step), step.limits, where=where)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        series = plan.scale.series_cells
        problems.extend(f"{where}: {p}" for p in command_problems(step, active, series_cells=series))
    return problems


def require_plan_limits(plan: Plan, limits: LimitSet | None, *, bench: str) -> None:
    problems = check_plan_limits(plan, limits, bench=bench)
    if problems:
        raise ConfigError(problems)


def command_problems(step: ResolvedStep, active: LimitSet, *, series_cells: int) -> list[str]:
    """Setpoints the step itself commands that its active limits would trip on."""
    charge_a, discharge_a = _commanded_extremes(step)
    problems = [p for p in (current_problem(charge_a, active), current_problem(-discharge_a, active)) if p]
    clamp = voltage_clamp(step)
    for voltage, floor in ((step.voltage_v, False), (clamp, step_direction(step) < 0)):
        if voltage:
            problem = voltage_problem(voltage, active, series_cells=series_cells, floor=floor)
            if problem is not None and problem not in problems:
                problems.append(problem)
    return [f"commands {p}; change the step's setpoint or its limits" for p in problems]


def current_problem(current_a: float, active: LimitSet) -> str | None:
    """Why a signed current (+ = charge) may not be commanded under ``active`` (None: it may)."""
    name = "charge_current_max_a" if current_a > 0 else "discharge_current_max_a"
    trip = _trip(getattr(active, name))
    if current_a == 0 or trip is None or abs(current_a) < trip:
        return None
    return f"{abs(current_a):g} A, at or beyond its limits {name}.trip {trip:g} A"


def voltage_problem(voltage_v: float, active: LimitSet, *, series_cells: int, floor: bool = False) -> str | None:
    """Why a voltage setpoint (a ceiling; with ``floor``, a discharge's floor) may not be commanded."""
    names = ("pack_voltage_min_v", "cell_voltage_min_v") if floor else ("pack_voltage_max_v", "cell_voltage_max_v")
    for name in names:
        limit = getattr(active, name)
        trip = None if limit is None else limit.trip
        if trip is None:
            continue
        factor = 1 if name.startswith("pack") else series_cells
        if (voltage_v <= trip * factor) if floor else (voltage_v >= trip * factor):
            per = f" x {series_cells} cells" if factor != 1 else ""
            return f"{voltage_v:g} V, at or beyond its limits {name}.trip {trip:g} V{per}"
    return None


def step_currents(base: CurrentLimits, active: LimitSet) -> CurrentLimits:
    """``base`` tightened to the active limits' current thresholds (warn for a cv hold's limit)."""
    charge = _threshold(active.charge_current_max_a)
    discharge = _threshold(active.discharge_current_max_a)
    cv_charge = _threshold(active.charge_current_max_a, warn=True)
    cv = min(base.cv_limit_a, cv_charge, _threshold(active.discharge_current_max_a, warn=True))
    return replace(
        base,
        max_charge_a=min(base.max_charge_a, charge),
        max_discharge_a=min(base.max_discharge_a, discharge),
        cv_limit_a=cv,
    )


def _commanded_extremes(step: ResolvedStep) -> tuple[float, float]:
    """(largest charge, largest discharge) current magnitude the step sets (0 where none)."""
    values: list[float] = []
    if step.kind == "cv" and step.current_limit_a is not None:
        values.append(abs(step.current_limit_a))  # a voltage hold that follows a charge
    if step.current_a is not None and step.kind in ("cc", "cccv", "pulse"):
        values.append(step.current_a)
    if step.waveform is not None and step.waveform.quantity == "current_a":
        values.extend((step.waveform.min_value, step.waveform.max_value))
    return max((v for v in values if v > 0), default=0.0), max((-v for v in values if v < 0), default=0.0)


def _trip(limit: UpperLimit | None) -> float | None:
    return None if limit is None else limit.trip


def _threshold(limit: UpperLimit | None, *, warn: bool = False) -> float:
    if limit is None:
        return math.inf
    if warn and limit.warn is not None:
        return limit.warn
    return limit.trip if limit.trip is not None else (limit.warn if limit.warn is not None else math.inf)
