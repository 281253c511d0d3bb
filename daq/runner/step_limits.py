"""A profile's per-step limits against the bench's limit set, before anything runs.

Every leaf step of the plan gets its active limit set (``daq.safety.step_limits``: the bench's
limits, tightened by ``steps.<category>``, by the profile-wide ``limits:`` and by ``limits:`` on
its loops and on the step). ``check_plan_limits`` lists every reason a profile cannot run under
them: a limit looser than the layer below it, profile limits on a bench without ``safety:`` (they
would protect nothing), or a step whose own setpoints reach its active trips. ``step_currents``
tightens the runner's current bounds to a step's active limits, so the commands stay inside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from daq.errors import ConfigError, DaqError
from daq.profiles import Plan, PlanStep, Profile, ResolvedStep
from daq.runner.steps import CurrentLimits, step_category, step_direction, voltage_clamp
from daq.safety.limits import LimitSet, UpperLimit, load_limits
from daq.safety.step_limits import step_limit_set

_NOT_A_LAYER = {"name", "description", "steps", "counters_device_kind"}


class StepLimitError(DaqError):
    """A command would leave the running step's active limits; it was not sent."""


def step_where(source: str, number: str, label: str) -> str:
    return f"{source}: step {number} ({label})"


def profile_limit_layers(profile: Profile, category: str | None) -> tuple[Mapping[str, Any], ...]:
    """The profile-wide ``limits:`` as override layers of a step of ``category``: the limits the
    set gives, then its ``steps:`` entry for the category. ConfigError if the set cannot be read."""
    if profile.limits is None:
        return ()
    path = profile.limits_path()
    if path is not None:
        limit_set = load_limits(path)
    else:
        try:
            limit_set = LimitSet.model_validate(profile.limits)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise ConfigError(f"{profile.source_name}: limits: {message}; fix the inline limit set") from exc
    layers: list[Mapping[str, Any]] = []
    given = limit_set.model_dump(mode="json", exclude_unset=True, exclude=_NOT_A_LAYER)
    if given:
        layers.append(given)
    if category is not None and category in limit_set.steps:
        layers.append(dict(limit_set.steps[category]))
    return tuple(layers)


def step_overrides(profile_layers: tuple[Mapping[str, Any], ...], step: ResolvedStep) -> tuple[Mapping[str, Any], ...]:
    """Every override layer of a step, outermost first: the profile-wide ones, loops', the step's."""
    return (*profile_layers, *step.limits)


def _layer_names(profile: Profile, profile_layers: int, leaf: PlanStep) -> list[str]:
    names = ["the profile's limits"]
    if profile_layers > 1:
        names.append(f"the profile's limits, steps.{step_category(leaf.resolved)}")
    names = names[:profile_layers]
    own = 1 if leaf.step.limits else 0
    loops = len(leaf.resolved.limits) - own
    names += [f"limits of enclosing loop {i + 1}" for i in range(loops)]
    return names + ["limits"] * own


def check_plan_limits(plan: Plan, limits: LimitSet | None, *, bench: str) -> list[str]:
    """Every problem of the plan's step limits, one line each naming the file, step and limit."""
    profile = plan.profile
    source = profile.source_name
    no_safety = (
        f"the bench {bench} has no safety: section, so they would protect nothing; add safety: with a limit"
        " set to the bench file"
    )
    problems: list[str] = []
    if limits is None and profile.limits is not None:
        problems.append(f"{source}: limits: {no_safety}")
    layers_by_category: dict[str | None, tuple[Mapping[str, Any], ...]] = {}
    for leaf in plan.steps:
        step = leaf.resolved
        where = step_where(source, leaf.number, leaf.description)
        if limits is None:
            if step.limits:
                problems.append(f"{where}: limits: {no_safety}")
            continue
        category = step_category(step)
        if category not in layers_by_category:
            layers_by_category[category] = profile_limit_layers(profile, category)
        layers = layers_by_category[category]
        names = _layer_names(profile, len(layers), leaf)
        try:
            active = step_limit_set(limits, category, step_overrides(layers, step), where=where, layer_names=names)
        except ConfigError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
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
