"""What the runner persists with the run (journal kv, key ``runner_state``) so a test can resume.

Saved after every step transition, pause, resume and at the end. With the journal's records it is
enough to continue after a ``kill -9``: the interrupted step's Ah/Wh are recomputed from the
records stamped with its step number (``daq.runner.recovery``), everything before it is here.

``phase``: running | paused (by command, process alive) | stopped (process exited while paused:
Ctrl-C, --duration) | completed | aborted. A run whose phase is running or paused but whose
process is gone crashed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from daq.errors import ConfigError
from daq.profiles import PlanPosition
from daq.runner.integrator import Totals
from daq.runner.summary import CycleAccumulator

STATE_KEY = "runner_state"
SUMMARY_KEY = "cycle_summary"
TEST_KEY = "test"  # what was started: bench, profile, cycler, scale (see daq.cli.test_cmds)
STATE_FORMAT = 1

RUNNING, PAUSED, STOPPED, COMPLETED, ABORTED = "running", "paused", "stopped", "completed", "aborted"
RESUMABLE_PHASES = (RUNNING, PAUSED, STOPPED)


@dataclass(slots=True)
class StepProgress:
    """The step in progress: enough to continue it with its time and charge counted so far."""

    step: int  # running step number (what records are stamped with)
    cycle: int
    number: str
    label: str
    started_ns: int  # record time of the step's first command
    active_since_ns: int  # record time it last (re)started running; 0 while paused
    elapsed_before_s: float  # step time accumulated before active_since_ns
    extra: Totals = field(default_factory=Totals)  # charge booked outside the records (crash gaps)
    max_temperature_c: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "cycle": self.cycle,
            "number": self.number,
            "label": self.label,
            "started_ns": self.started_ns,
            "active_since_ns": self.active_since_ns,
            "elapsed_before_s": self.elapsed_before_s,
            "extra": self.extra.to_dict(),
            "max_temperature_c": None if math.isnan(self.max_temperature_c) else self.max_temperature_c,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepProgress:
        temp = data.get("max_temperature_c")
        return cls(
            step=int(data["step"]),
            cycle=int(data["cycle"]),
            number=str(data["number"]),
            label=str(data.get("label", "")),
            started_ns=int(data["started_ns"]),
            active_since_ns=int(data.get("active_since_ns", 0)),
            elapsed_before_s=float(data.get("elapsed_before_s", 0.0)),
            extra=Totals.from_dict(data.get("extra", {})),
            max_temperature_c=math.nan if temp is None else float(temp),
        )


@dataclass(slots=True)
class RunnerState:
    phase: str
    position: PlanPosition
    step: StepProgress | None
    cycle: CycleAccumulator | None
    last_discharge_ah: float | None = None
    steps_completed: int = 0
    test_time_s: float = 0.0  # step time of finished steps (pauses and gaps excluded)
    total_cycles: int | None = None
    total_steps: int | None = None
    process: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    saved_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "phase": self.phase,
            "position": self.position.to_dict(),
            "step": None if self.step is None else self.step.to_dict(),
            "cycle": None if self.cycle is None else self.cycle.to_dict(),
            "last_discharge_ah": self.last_discharge_ah,
            "steps_completed": self.steps_completed,
            "test_time_s": self.test_time_s,
            "total_cycles": self.total_cycles,
            "total_steps": self.total_steps,
            "process": self.process,
            "reason": self.reason,
            "saved_ns": self.saved_ns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunnerState:
        try:
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {STATE_FORMAT}")
            return cls(
                phase=str(data["phase"]),
                position=PlanPosition.from_dict(data["position"]),
                step=None if data.get("step") is None else StepProgress.from_dict(data["step"]),
                cycle=None if data.get("cycle") is None else CycleAccumulator.from_dict(data["cycle"]),
                last_discharge_ah=data.get("last_discharge_ah"),
                steps_completed=int(data.get("steps_completed", 0)),
                test_time_s=float(data.get("test_time_s", 0.0)),
                total_cycles=data.get("total_cycles"),
                total_steps=data.get("total_steps"),
                process=dict(data.get("process") or {}),
                reason=str(data.get("reason", "")),
                saved_ns=int(data.get("saved_ns", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the run's saved runner state is unreadable ({exc}); the run cannot be resumed, start a new test"
            ) from exc
