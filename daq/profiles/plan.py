"""An executable plan: a profile resolved for one bench, walked one step at a time, resumable.

``Plan(profile, series_cells=14, capacity_ah=27)`` resolves every step once into pack-level,
signed SI setpoints (``ResolvedStep``: + = charge, pack volts, amps from C-rates). A ``PlanCursor``
then walks the step tree lazily: loops are never unrolled, so a 1000-cycle profile costs nothing.

Loops end after ``repeat`` iterations or, when they have ``until``, as soon as the cycle condition
holds after an iteration; the cursor asks the runner's ``metrics`` callback for that.

Cycle index: 0 for steps before any loop; it goes up by one each time the walk starts a loop
iteration or leaves a loop (several at one step boundary count once). So in "rest; loop 3 {charge;
discharge}; rest" the steps get cycles 0, 1 1, 2 2, 3 3, 4.

Resume: ``cursor.position`` names the step the cursor is on (the one running). Save
``position.to_dict()`` (JSON-safe) with the run; ``plan.cursor(PlanPosition.from_dict(saved))``
continues at that same step, cycle and loop counters, so the runner re-runs the interrupted step.
The position holds a fingerprint of the profile's shape (step kinds, directions, nesting): setpoints
and end conditions may be edited between pause and resume, the structure may not.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daq.errors import ConfigError
from daq.profiles.model import (
    Basis,
    CccvStep,
    CcStep,
    CpStep,
    CurrentProfileStep,
    CvStep,
    CycleConditions,
    LeafStep,
    LoopStep,
    PowerProfileStep,
    Profile,
    PulseStep,
    Step,
    TimeSeries,
    describe_step,
    direction_sign,
)

POSITION_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Scale:
    """How profile numbers become pack-level SI numbers on one bench."""

    series_cells: int
    capacity_ah: float | None
    voltage_basis: Basis = "cell"
    power_basis: Basis = "pack"

    @classmethod
    def for_profile(cls, profile: Profile, *, series_cells: int, capacity_ah: float | None) -> Scale:
        """The profile's own ``capacity_ah`` wins over the bench's."""
        if series_cells < 1:
            raise ValueError(f"series_cells must be >= 1, got {series_cells}")
        return cls(
            series_cells=series_cells,
            capacity_ah=profile.capacity_ah if profile.capacity_ah is not None else capacity_ah,
            voltage_basis=profile.voltage_basis,
            power_basis=profile.power_basis,
        )

    def volts(self, value: float) -> float:
        return value * self.series_cells if self.voltage_basis == "cell" else value

    def watts(self, value: float) -> float:
        return value * self.series_cells if self.power_basis == "cell" else value

    def amps_from_c_rate(self, c_rate: float) -> float:
        if self.capacity_ah is None:
            raise ConfigError(
                "a step uses a C-rate but no capacity is known; set capacity_ah in the profile "
                "or give the bench pack's capacity"
            )
        return c_rate * self.capacity_ah


@dataclass(frozen=True, slots=True)
class EndLimits:
    """Resolved end conditions in pack units; any one met ends the step."""

    voltage_above_v: float | None = None
    voltage_below_v: float | None = None
    current_below_a: float | None = None  # magnitude
    time_s: float | None = None  # includes the natural end of pulse and time-series steps
    step_capacity_ah: float | None = None
    step_energy_wh: float | None = None
    temperature_above_c: float | None = None


@dataclass(frozen=True, slots=True)
class Waveform:
    """A time-varying setpoint: ``values`` at ``time_s`` (from 0), played ``repeat`` times (None: forever)."""

    quantity: Literal["current_a", "power_w"]
    time_s: tuple[float, ...]
    values: tuple[float, ...]
    interpolation: Literal["linear", "step"]
    repeat: int | None

    @property
    def period_s(self) -> float:
        return self.time_s[-1]

    def value_at(self, t_s: float) -> float:
        if t_s <= 0:
            return self.values[0]
        if self.repeat is not None and t_s >= self.period_s * self.repeat:
            return self.values[-1]
        tau = t_s % self.period_s
        index = bisect.bisect_right(self.time_s, tau) - 1
        if self.interpolation == "step" or index >= len(self.time_s) - 1:
            return self.values[index]
        t0, t1 = self.time_s[index], self.time_s[index + 1]
        v0, v1 = self.values[index], self.values[index + 1]
        return v0 + (v1 - v0) * (tau - t0) / (t1 - t0)

    @property
    def max_value(self) -> float:
        return max(self.values)

    @property
    def min_value(self) -> float:
        return min(self.values)


@dataclass(frozen=True, slots=True)
class ResolvedStep:
    """What the runner commands: pack-level, signed (+ = charge) SI setpoints for one step."""

    kind: str
    current_a: float | None  # cc, cccv; pulse amplitude (signed)
    current_limit_a: float | None  # cv: magnitude limit (None: the cycler / limit set maximum)
    voltage_v: float | None  # cv, cccv (pack)
    power_w: float | None  # cp (signed)
    waveform: Waveform | None  # pulse, current_profile, power_profile
    end: EndLimits
    record_period_s: float
    record_on_delta_v: float | None  # pack
    record_on_delta_a: float | None
    tags: tuple[str, ...]
    limits: tuple[Mapping[str, Any], ...]  # per-step limit dicts, outermost loop first, step last

    def setpoint_at(self, t_s: float) -> float:
        """Signed current (A) or, for cp / power_profile, power (W) ``t_s`` seconds into the step."""
        if self.waveform is not None:
            return self.waveform.value_at(t_s)
        if self.power_w is not None:
            return self.power_w
        return self.current_a if self.current_a is not None else 0.0


def resolve_step(
    step: LeafStep,
    scale: Scale,
    *,
    record_period_s: float,
    tags: tuple[str, ...] = (),
    limits: tuple[Mapping[str, Any], ...] = (),
) -> ResolvedStep:
    """Resolve one leaf step; ``record_period_s`` is the inherited default if the step sets none."""
    current_a = current_limit_a = voltage_v = power_w = None
    waveform: Waveform | None = None
    natural_end_s: float | None = None
    if isinstance(step, CcStep | CccvStep | PulseStep):
        magnitude = step.current_a if step.current_a is not None else scale.amps_from_c_rate(step.c_rate or 0)
        current_a = direction_sign(step.direction) * magnitude
    if isinstance(step, CvStep):
        if step.current_a is not None or step.c_rate is not None:
            current_limit_a = step.current_a or scale.amps_from_c_rate(step.c_rate or 0)
    if isinstance(step, CvStep | CccvStep):
        voltage_v = scale.volts(step.voltage_v)
    if isinstance(step, CpStep):
        power_w = direction_sign(step.direction) * scale.watts(step.power_w)
    if isinstance(step, PulseStep):
        waveform = _pulse_waveform(step, current_a or 0.0)
        natural_end_s = step.total_duration_s
    if isinstance(step, CurrentProfileStep | PowerProfileStep):
        waveform = _series_waveform(step, scale)
        natural_end_s = step.total_duration_s

    until = step.until
    time_limits = [t for t in (step.time_limit_s, natural_end_s) if t is not None]
    current_below_a = until.current_below_a
    if until.current_below_c_rate is not None:
        current_below_a = scale.amps_from_c_rate(until.current_below_c_rate)
    end = EndLimits(
        voltage_above_v=None if until.voltage_above_v is None else scale.volts(until.voltage_above_v),
        voltage_below_v=None if until.voltage_below_v is None else scale.volts(until.voltage_below_v),
        current_below_a=current_below_a,
        time_s=min(time_limits) if time_limits else None,
        step_capacity_ah=until.step_capacity_ah,
        step_energy_wh=until.step_energy_wh,
        temperature_above_c=until.temperature_above_c,
    )
    return ResolvedStep(
        kind=step.kind,
        current_a=current_a,
        current_limit_a=current_limit_a,
        voltage_v=voltage_v,
        power_w=power_w,
        waveform=waveform,
        end=end,
        record_period_s=step.record_period_s or record_period_s,
        record_on_delta_v=None if step.record_on_delta_v is None else scale.volts(step.record_on_delta_v),
        record_on_delta_a=step.record_on_delta_a,
        tags=tags,
        limits=(*limits, step.limits) if step.limits else limits,
    )


def _pulse_waveform(step: PulseStep, current_a: float) -> Waveform:
    if step.rest_duration_s > 0:
        times = (0.0, step.pulse_duration_s, step.pulse_duration_s + step.rest_duration_s)
        values = (current_a, 0.0, 0.0)
    else:
        times, values = (0.0, step.pulse_duration_s), (current_a, current_a)
    return Waveform("current_a", times, values, "step", step.count)


def _series_waveform(step: CurrentProfileStep | PowerProfileStep, scale: Scale) -> Waveform:
    series: TimeSeries = step.series
    t0 = series.time_s[0]
    times = tuple(t - t0 for t in series.time_s)
    if series.quantity == "current_a":
        values = series.values
    elif series.quantity == "c_rate":
        values = tuple(scale.amps_from_c_rate(v) for v in series.values)
    elif series.quantity == "power_w":
        values = tuple(scale.watts(v) for v in series.values)
    else:  # power_pct of the step's peak power
        peak_w = scale.watts(getattr(step, "peak_power_w", None) or 0.0)
        values = tuple(v / 100.0 * peak_w for v in series.values)
    quantity: Literal["current_a", "power_w"] = "current_a" if series.quantity in ("current_a", "c_rate") else "power_w"
    repeat = None if step.repeat == "forever" else step.repeat
    return Waveform(quantity, times, values, step.interpolation, repeat)


@dataclass(frozen=True, slots=True)
class CycleMetrics:
    """What the runner reports for loop ``until`` conditions."""

    last_discharge_capacity_ah: float | None = None  # Ah of the most recent discharge step


def cycle_condition_met(until: CycleConditions, metrics: CycleMetrics, capacity_ah: float | None) -> bool:
    capacity = metrics.last_discharge_capacity_ah
    if capacity is None:
        return False
    if until.discharge_capacity_below_ah is not None and capacity < until.discharge_capacity_below_ah:
        return True
    if until.discharge_capacity_below_pct is not None:
        if capacity_ah is None:
            raise ConfigError(
                "a loop ends on discharge_capacity_below_pct but no capacity is known; "
                "set capacity_ah in the profile or give the bench pack's capacity"
            )
        return capacity < until.discharge_capacity_below_pct / 100.0 * capacity_ah
    return False


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One leaf of the program, resolved. ``number`` is '3.2' for the 2nd step inside step 3."""

    step_index: int  # depth-first leaf number, 0-based, stable across loop iterations
    number: str
    step: LeafStep
    resolved: ResolvedStep

    @property
    def description(self) -> str:
        return describe_step(self.step)


@dataclass(frozen=True, slots=True)
class PlanPosition:
    """Where a cursor is; JSON-safe through ``to_dict`` / ``from_dict``."""

    path: tuple[int, ...]  # index within each nesting level, outermost first
    loop_counters: tuple[int, ...]  # 0-based iteration of each enclosing loop
    cycle_index: int
    step_count: int  # steps started before this one in the run
    fingerprint: str
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": POSITION_FORMAT,
            "path": list(self.path),
            "loop_counters": list(self.loop_counters),
            "cycle_index": self.cycle_index,
            "step_count": self.step_count,
            "fingerprint": self.fingerprint,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanPosition:
        try:
            if data["format"] != POSITION_FORMAT:
                raise ValueError(f"format {data['format']!r}")
            position = cls(
                path=tuple(int(i) for i in data["path"]),
                loop_counters=tuple(int(i) for i in data["loop_counters"]),
                cycle_index=int(data["cycle_index"]),
                step_count=int(data["step_count"]),
                fingerprint=str(data["fingerprint"]),
                finished=bool(data["finished"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"saved plan position is malformed ({exc}); start the profile afresh or restore the run state"
            ) from exc
        return position


class Plan:
    """A profile resolved for one bench. Iterate it, or take a ``cursor()`` to walk and resume."""

    def __init__(self, profile: Profile, *, series_cells: int, capacity_ah: float | None = None) -> None:
        self.profile = profile
        self.scale = Scale.for_profile(profile, series_cells=series_cells, capacity_ah=capacity_ah)
        self.fingerprint = _shape_fingerprint(profile.steps)
        self._leaves: dict[tuple[int, ...], PlanStep] = {}
        self._loops_with_leaves: set[tuple[int, ...]] = set()
        self._index(profile.steps, (), "", profile.record_period_s, (), ())

    def _index(
        self,
        steps: tuple[Step, ...],
        path: tuple[int, ...],
        prefix: str,
        record_period_s: float,
        tags: tuple[str, ...],
        limits: tuple[Mapping[str, Any], ...],
    ) -> bool:
        """Resolve every leaf under ``steps``; return whether there is any."""
        any_leaf = False
        for i, step in enumerate(steps):
            here = (*path, i)
            number = f"{prefix}{i + 1}"
            step_tags = tags + tuple(t for t in step.tags if t not in tags)
            if isinstance(step, LoopStep):
                has_leaf = self._index(
                    step.steps,
                    here,
                    f"{number}.",
                    step.record_period_s or record_period_s,
                    step_tags,
                    (*limits, step.limits) if step.limits else limits,
                )
                if has_leaf:
                    self._loops_with_leaves.add(here)
                any_leaf |= has_leaf
                continue
            try:
                resolved = resolve_step(
                    step, self.scale, record_period_s=record_period_s, tags=step_tags, limits=limits
                )
            except ConfigError as exc:
                where = f"{self.profile.source_name}: step {number} ({describe_step(step)})"
                raise ConfigError(f"{where}: {exc}") from exc
            self._leaves[here] = PlanStep(len(self._leaves), number, step, resolved)
            any_leaf = True
        return any_leaf

    @property
    def steps(self) -> tuple[PlanStep, ...]:
        """The program's leaf steps in depth-first order (each once, loops not unrolled)."""
        return tuple(self._leaves.values())

    def max_step_count(self) -> int | None:
        """Steps a full run executes if no ``until`` stops a loop early; None if a loop is unbounded."""
        return _count(self.profile.steps)

    def cursor(
        self, position: PlanPosition | None = None, *, metrics: Callable[[], CycleMetrics] | None = None
    ) -> PlanCursor:
        return PlanCursor(self, position, metrics=metrics)

    def __iter__(self) -> Iterator[PlanItem]:
        return self.cursor()

    def _step_at(self, path: tuple[int, ...]) -> Step:
        body = self.profile.steps
        node: Step | None = None
        for i in path:
            node = body[i]
            body = node.steps if isinstance(node, LoopStep) else ()
        assert node is not None
        return node


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One step to run: which program step, in which cycle and loop iterations, resolved."""

    step_index: int
    cycle_index: int
    step: LeafStep
    resolved: ResolvedStep
    number: str
    loop_counters: tuple[int, ...]
    step_count: int
    position: PlanPosition


class PlanCursor:
    """Walks a plan. ``current`` is the step to run; ``advance()`` moves on when it has ended.

    As an iterator, the first ``next()`` returns the current step and each later one advances first,
    so during a step ``cursor.position`` is that step's position.
    """

    def __init__(
        self,
        plan: Plan,
        position: PlanPosition | None = None,
        *,
        metrics: Callable[[], CycleMetrics] | None = None,
    ) -> None:
        self._plan = plan
        self._metrics = metrics
        self._started = False
        if position is None:
            self._path, self._counters = [0], []
            self._cycle = 1 if self._settle() else 0
            self._count = 0
        else:
            self._restore(position)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def position(self) -> PlanPosition:
        return PlanPosition(
            path=tuple(self._path),
            loop_counters=tuple(self._counters),
            cycle_index=self._cycle,
            step_count=self._count,
            fingerprint=self._plan.fingerprint,
            finished=self._finished,
        )

    @property
    def current(self) -> PlanItem | None:
        if self._finished:
            return None
        leaf = self._plan._leaves[tuple(self._path)]
        return PlanItem(
            step_index=leaf.step_index,
            cycle_index=self._cycle,
            step=leaf.step,
            resolved=leaf.resolved,
            number=leaf.number,
            loop_counters=tuple(self._counters),
            step_count=self._count,
            position=self.position,
        )

    def advance(self) -> PlanItem | None:
        """Move past the current step; return the next one, or None when the plan is done."""
        if self._finished:
            return None
        self._path[-1] += 1
        if self._settle():
            self._cycle += 1
        self._count += 1
        return self.current

    def __iter__(self) -> PlanCursor:
        return self

    def __next__(self) -> PlanItem:
        item = self.advance() if self._started else self.current
        self._started = True
        if item is None:
            raise StopIteration
        return item

    def _settle(self) -> bool:
        """From a path that may point at a loop or past the end of a body, move to the next leaf.

        Returns whether a loop iteration started or a loop was left on the way (a cycle boundary)."""
        self._finished = False
        boundary = False
        while True:
            body = self._body(len(self._path) - 1)
            index = self._path[-1]
            if index < len(body):
                node = body[index]
                if not isinstance(node, LoopStep):
                    return boundary
                if tuple(self._path) not in self._plan._loops_with_leaves:
                    self._path[-1] += 1  # an empty loop is skipped (validation reports it)
                    continue
                self._path.append(0)
                self._counters.append(0)
                boundary = True
                continue
            if len(self._path) == 1:
                self._finished = True
                return boundary
            loop_path = tuple(self._path[:-1])
            if self._repeats(loop_path, self._counters[-1]):
                self._counters[-1] += 1
                self._path[-1] = 0
            else:
                self._path.pop()
                self._counters.pop()
                self._path[-1] += 1
            boundary = True

    def _body(self, depth: int) -> tuple[Step, ...]:
        body = self._plan.profile.steps
        for i in self._path[:depth]:
            node = body[i]
            assert isinstance(node, LoopStep)
            body = node.steps
        return body

    def _repeats(self, loop_path: tuple[int, ...], iteration: int) -> bool:
        loop = self._plan._step_at(loop_path)
        assert isinstance(loop, LoopStep)
        if loop.repeat is not None and iteration + 1 >= loop.repeat:
            return False
        if loop.until is None:
            return loop.repeat is not None  # neither repeat nor until: run once (validation reports it)
        if self._metrics is None:
            number = ".".join(str(i + 1) for i in loop_path)
            raise RuntimeError(
                f"loop at step {number} ends on a cycle condition; pass metrics= to Plan.cursor() "
                "so the plan can ask for the last discharge capacity"
            )
        return not cycle_condition_met(loop.until, self._metrics(), self._plan.scale.capacity_ah)

    def _restore(self, position: PlanPosition) -> None:
        source = self._plan.profile.source_name
        fix = "start the profile afresh, or resume with the profile version the run started with"
        if position.fingerprint != self._plan.fingerprint:
            raise ConfigError(
                f"{source}: the saved plan position belongs to a profile with different steps "
                f"(fingerprint {position.fingerprint} vs {self._plan.fingerprint}); {fix}"
            )
        self._cycle, self._count = position.cycle_index, position.step_count
        self._path, self._counters = list(position.path), list(position.loop_counters)
        self._finished = position.finished
        if self._finished:
            return
        if tuple(self._path) not in self._plan._leaves or len(self._counters) != len(self._path) - 1:
            raise ConfigError(f"{source}: the saved plan position {position.path} is not a step; {fix}")
        for depth, counter in enumerate(self._counters):
            loop = self._plan._step_at(tuple(self._path[: depth + 1]))
            if not isinstance(loop, LoopStep) or counter < 0 or (loop.repeat and counter >= loop.repeat):
                raise ConfigError(
                    f"{source}: the saved loop counter {counter} does not fit the loop at step "
                    f"{'.'.join(str(i + 1) for i in self._path[: depth + 1])}; {fix}"
                )
        self._started = False


def _shape(steps: tuple[Step, ...]) -> list[Any]:
    shape: list[Any] = []
    for step in steps:
        if isinstance(step, LoopStep):
            shape.append(["loop", _shape(step.steps)])
        else:
            shape.append([step.kind, getattr(step, "direction", None)])
    return shape


def _shape_fingerprint(steps: tuple[Step, ...]) -> str:
    blob = json.dumps(_shape(steps), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _count(steps: tuple[Step, ...]) -> int | None:
    total = 0
    for step in steps:
        if isinstance(step, LoopStep):
            inner = _count(step.steps)
            if inner == 0:
                continue
            if inner is None or (step.repeat is None and step.until is not None):
                return None
            total += (step.repeat or 1) * inner  # neither repeat nor until: the cursor runs it once
        else:
            total += 1
    return total


__all__ = [
    "CycleMetrics",
    "EndLimits",
    "Plan",
    "PlanCursor",
    "PlanItem",
    "PlanPosition",
    "PlanStep",
    "ResolvedStep",
    "Scale",
    "Waveform",
    "resolve_step",
]
