"""How a test step's limits combine with the bench's limit set (pure: no I/O, no clock).

The limits in force while a step runs are built in three layers, each of which may only tighten
the one before (``limits.tighten`` refuses anything looser):

1. the bench's limit set (``safety.limits``);
2. its ``steps:`` entry for the step's category (``charge``, ``discharge``, ``rest``), if any;
3. the profile's own limits: its profile-wide ``limits:`` (a limit-set file or inline set: its
   limits, then its ``steps:`` entry for the category), then ``limits:`` on the enclosing loops
   (outermost first), then on the step.

The live monitor journals every switch as a ``safety.step_limits`` event carrying the full active
set; ``daq check`` replays those switches by time (``LimitSwitch``), so each record is judged by the
limits that judged it live. With ``daq check --limits OTHER`` the same layers are rebuilt on top
of OTHER from the recorded step name and profile overrides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from daq.errors import ConfigError
from daq.safety.limits import LimitSet, tighten

STEP_LIMITS = "safety.step_limits"  # journal event of a switch of the active limits


def step_limit_set(
    limits: LimitSet,
    step_name: str | None,
    overrides: Sequence[Mapping[str, Any]] = (),
    *,
    where: str = "step",
    layer_names: Sequence[str] | None = None,
) -> LimitSet:
    """The active limits of a step: ``limits`` tightened by ``steps[step_name]``, then by each override.

    Returns ``limits`` itself when nothing tightens it. ConfigError (naming ``where``, the layer and
    the limit) if any layer is looser than the one below it. ``layer_names`` name the overrides in
    messages (default: the last is the step's ``limits``, the others its enclosing loops').
    """
    active = limits if step_name is None else limits.for_step(step_name)
    for i, override in enumerate(overrides):
        if layer_names is not None and i < len(layer_names):
            layer = layer_names[i]
        else:
            layer = "limits" if i == len(overrides) - 1 else f"limits of enclosing loop {i + 1}"
        active = tighten(active, override, source=f"{where}: {layer}")
    return active


@dataclass(frozen=True, slots=True)
class LimitSwitch:
    """From ``t_ns`` on, records were judged by ``limits`` (``label`` says which layers)."""

    t_ns: int
    limits: LimitSet
    label: str


def switch_label(step_name: str | None, overrides: bool, base: LimitSet) -> str:
    """How a report names an active set: 'global', 'steps.charge', 'profile', 'steps.charge+profile'."""
    parts = []
    if step_name is not None and step_name in base.steps:
        parts.append(f"steps.{step_name}")
    if overrides:
        parts.append("profile")
    return "+".join(parts) or "global"


def recorded_switches(events: Iterable[tuple[int, Mapping[str, Any]]], base: LimitSet) -> list[LimitSwitch]:
    """The switches a run recorded (``(t_ns, data)`` of its ``safety.step_limits`` events), as the
    live monitor applied them: the journaled active set, or ``base`` where nothing tightened it."""
    switches = []
    for t_ns, data in events:
        recorded = data.get("limits")
        limits = LimitSet.model_validate(recorded) if recorded is not None else base
        label = switch_label(data.get("step"), bool(data.get("overrides")), base)
        switches.append(LimitSwitch(t_ns, limits, label))
    return switches


def rebuilt_switches(
    events: Iterable[tuple[int, Mapping[str, Any]]], base: LimitSet
) -> tuple[list[LimitSwitch], list[str]]:
    """The recorded switches rebuilt on another limit set ``base`` (``daq check --limits``).

    A profile override looser than ``base`` cannot tighten it: that step is judged by ``base``'s own
    layers, and a note says so (returned as the second item, one line per step)."""
    switches: list[LimitSwitch] = []
    notes: list[str] = []
    for t_ns, data in events:
        name = data.get("step")
        name = name if isinstance(name, str) else None
        overrides = [o for o in data.get("overrides") or [] if isinstance(o, Mapping)]
        label = switch_label(name, bool(overrides), base)
        where = str(data.get("label") or f"step {data.get('step_number', '?')}")
        try:
            limits = step_limit_set(base, name, overrides, where=where)
        except ConfigError as exc:  # the profile's limits are looser than base's
            limits = step_limit_set(base, name)
            why = "; ".join(exc.problems)
            note = f"{where}: its own limits do not tighten {base.name or 'these limits'} ({why}); judged without them"
            if note not in notes:
                notes.append(note)
            label = switch_label(name, False, base)
        switches.append(LimitSwitch(t_ns, limits, label))
    return switches, notes


def run_switches(
    events: Iterable[Any], limits: LimitSet, *, recorded: bool
) -> tuple[list[LimitSwitch] | None, list[str]]:
    """A run's limit switches for ``check_run`` from its journal events (``kind``, ``t_ns``, ``data``),
    and notes: the journaled active sets when ``limits`` is the set recorded with the run, else the
    same layers rebuilt on ``limits``. None for runs recorded before the switches carried the step
    (then ``check_run`` falls back to ``step_names``). ConfigError if a recorded set is unreadable."""
    found = [(e.t_ns, e.data) for e in events if e.kind == STEP_LIMITS]
    if not any("step_number" in data for _, data in found):
        return None, []
    if not recorded:
        return rebuilt_switches(found, limits)
    try:
        return recorded_switches(found, limits), []
    except ValidationError as exc:
        raise ConfigError(f"a recorded step limit set cannot be read ({exc}); pass --limits FILE") from exc
