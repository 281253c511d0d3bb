"""What the parts of the test runner share: the running step, the outcome, and the runner's state.

``TestRunner`` (``daq.runner.runner``) is one object built from parts named by their role:
``step_execution`` (enter, play, finish steps), ``end_conditions`` (the record hook),
``operator_control`` (pause, resume, stop, abort, complete) and ``resume`` (where a resumed test
continues). ``RunnerBase`` declares the state they share; ``TestRunner.__init__`` sets it.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daq.cycler import CyclerCommand, CyclerControl
from daq.profiles import Plan, PlanCursor, PlanItem
from daq.runner.control import OperatorCommand
from daq.runner.integrator import SampleIntegrator, Totals
from daq.runner.progress import PlanSize
from daq.runner.state import STOPPED, StepProgress
from daq.runner.summary import CycleAccumulator
from daq.runner.target import TestTarget
from daq.safety.limits import LimitSet

if TYPE_CHECKING:
    from daq.bench import Bench
    from daq.clock import Clock
    from daq.runner.resume import ResumePoint


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # completed | aborted | stopped (paused and the process leaves; resumable)
    reason: str = ""

    @property
    def run_status(self) -> str:
        """The journal's run status for this outcome."""
        return "paused" if self.status == STOPPED else self.status


@dataclass(slots=True)
class ActiveStep:
    """The step in progress."""

    item: PlanItem
    progress: StepProgress
    totals: Totals
    active_since_mono: float | None = None  # bench monotonic time it last started running
    end: tuple[str, int] | None = None  # (reason, record t_ns) once an end condition was met
    command: CyclerCommand | None = None
    voltage_v: float = math.nan
    current_a: float = math.nan
    samples: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=2))  # (t_ns, V) of the cycler
    last_look_ns: int = 0
    current_armed: bool = False  # a current end condition counts (see _check_end)

    @property
    def number(self) -> int:
        return self.progress.step


class SafetyTripped(Exception):
    """The safety monitor is tripped: the run must stop without touching the output again."""


class RunnerBase:
    """The runner's shared state (declarations only; ``TestRunner.__init__`` sets every one)."""

    bench: Bench
    plan: Plan
    target: TestTarget
    control: CyclerControl
    clock: Clock
    on_event: Callable[[str, dict[str, Any]], None] | None
    phase: str
    reason: str
    summaries: list[dict[str, Any]]
    size: PlanSize
    alarms: list[str]

    _resume: ResumePoint | None
    _last_discharge_ah: float | None
    _cursor: PlanCursor
    _steps_completed: int
    _test_time_s: float
    _cycle: CycleAccumulator | None
    _active: ActiveStep | None
    _integrator: SampleIntegrator
    _wake: asyncio.Event
    _resample: asyncio.Event
    _commands: deque[OperatorCommand]
    _trip_reason: str | None
    _fault: str | None
    _exit_reason: str | None
    _temp_index: dict[int, tuple[int, ...]]
    _active_limits: dict[int, LimitSet]
    _profile_layers: dict[str | None, tuple[Mapping[str, Any], ...]]
    _identity: dict[str, Any]
    _paused_at_mono: float
    _device_min_period_s: float
