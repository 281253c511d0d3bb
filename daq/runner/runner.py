"""The test runner: walks a plan, drives the cycler, ends steps on incoming records.

Two halves:

* ``_on_record`` is a bench hook (``bench.hooks``): synchronous and cheap. It integrates the
  cycler's current and voltage into the running step (``SampleIntegrator``), tracks temperatures,
  evaluates the step's end conditions and, when one is met, wakes the runner task.
* ``run()`` is the task: it applies commands (``CyclerControl``), changes pulse and profile
  setpoints over time, ends steps on time, moves to the next step, stamps ``bench.context`` with
  the running step number and the plan's cycle index, journals events and persists its state
  (``runner_state``) after every transition so a crashed test can resume.

Order of concerns when the task wakes: a safety trip (abort, never re-enable the output), an
operator abort, an exit request (Ctrl-C: pause and stop), a pause, then the step's end.

Commands from other places (``daq test pause`` through the journal, MQTT, Ctrl-C) arrive through
``deliver`` / ``request_exit``; both are plain synchronous calls that only queue and wake.

``TestRunner`` is assembled from parts named by their role (each a module of this package):
``step_execution`` (enter, play and finish steps), ``end_conditions`` (the record hook),
``operator_control`` (pause, resume, stop, abort, complete) and ``resume`` (continuing an
interrupted step). This module keeps the state machine's loop, the bench plumbing and the live
status; ``Outcome`` and ``ResumePoint`` are importable from here as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from daq.bench import Bench
from daq.cycler import CyclerControl
from daq.profiles import Plan
from daq.runner.base import ActiveStep, Outcome, SafetyTripped
from daq.runner.control import OperatorCommand, process_identity
from daq.runner.end_conditions import EndConditions
from daq.runner.eta import EtaTracker, step_measure
from daq.runner.integrator import SampleIntegrator
from daq.runner.operator_control import OperatorControl
from daq.runner.progress import PlanSize, Progress, estimate_remaining_s, plan_size
from daq.runner.resume import Resume, ResumePoint
from daq.runner.state import PAUSED, RUNNING, STATE_KEY, RunnerState
from daq.runner.step_execution import StepExecution
from daq.runner.summary import CycleAccumulator
from daq.runner.target import TestTarget
from daq.safety.limits import LimitSet

__all__ = ["Outcome", "ResumePoint", "TestRunner"]

log = logging.getLogger(__name__)


class TestRunner(StepExecution, EndConditions, OperatorControl, Resume):
    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        bench: Bench,
        plan: Plan,
        target: TestTarget,
        *,
        resume: ResumePoint | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.bench = bench
        self.plan = plan
        self.target = target
        self.control: CyclerControl = bench.cyclers[target.cycler]
        self.clock = bench.clock
        self.on_event = on_event
        self.phase = RUNNING
        self.reason = ""
        self.summaries: list[dict[str, Any]] = list(resume.summaries) if resume else []
        self.size: PlanSize = plan_size(plan)
        self.alarms: list[str] = []
        self._eta = EtaTracker(plan, target.capacity_ah)  # step and test ETA for the live view

        self._resume = resume
        state = resume.state if resume else None
        self._last_discharge_ah: float | None = state.last_discharge_ah if state else None
        self._cursor = plan.cursor(state.position if state else None, metrics=self._metrics)
        self._steps_completed = state.steps_completed if state else 0
        self._test_time_s = state.test_time_s if state else 0.0
        self._cycle: CycleAccumulator | None = state.cycle if state else None
        self._active: ActiveStep | None = None
        self._integrator = SampleIntegrator()
        self._wake = asyncio.Event()
        self._resample = asyncio.Event()  # a new cycler sample: the look-ahead is planned again
        self._commands: deque[OperatorCommand] = deque()
        self._trip_reason: str | None = None
        self._fault: str | None = None
        self._exit_reason: str | None = None
        self._temp_index: dict[int, tuple[int, ...]] = {}
        self._active_limits: dict[int, LimitSet] = {}  # by plan step index
        self._profile_layers: dict[str | None, tuple[Mapping[str, Any], ...]] = {}  # by step kind
        self._identity = process_identity()
        self._paused_at_mono = self.clock.monotonic()
        self._device_min_period_s = next(
            (d.poll_period_s for d in bench.loaded.config.devices if d.name == target.cycler), 1.0
        )

    @property
    def run_id(self) -> str:
        return self.bench.run_id

    # -- the task ----------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        self._install()
        try:
            return await self._main()
        except SafetyTripped:
            return await self._abort(f"safety trip: {self._trip_text()}", who="safety")
        except Exception as exc:
            log.exception("runner failed")
            return await self._abort(f"runner error: {exc}", who="runner")
        finally:
            self._uninstall()

    async def _main(self) -> Outcome:
        item = self._cursor.current
        if item is None:
            return await self._complete()
        resumed = self._resumed_step(item)
        if resumed is not None:
            progress, totals = resumed
            await self._enter(item, progress=progress, totals=totals)
        else:
            await self._enter(item)
        while True:
            if self.phase == PAUSED:
                outcome = await self._while_paused()
            else:
                outcome = await self._run_step_until_woken()
            if outcome is not None:
                return outcome

    async def _run_step_until_woken(self) -> Outcome | None:
        await self._wait_in_step()
        self._wake.clear()
        if self._trip_reason is not None or self._tripped():
            raise SafetyTripped
        if self._fault is not None:
            return await self._abort(self._fault, who="cycler")
        while self._commands:
            command = self._commands.popleft()
            if command.action == "abort":
                return await self._abort(command.reason or "aborted by operator", who=command.who, command=command)
            if command.action == "resume":
                self._ack(command, False, "the test is running, not paused")
            elif command.action == "pause":
                await self._pause(command.reason or "paused by operator", who=command.who, source=command.source)
                self._ack(command, True, "paused")
                return None  # the remaining commands are handled while paused
        if self._exit_reason is not None:
            await self._pause(self._exit_reason, who="terminal", source="terminal")
            return self._stop()
        active = self._active
        if active is not None and active.end is not None:
            return await self._next()
        return None

    # -- steps: step_execution; operator commands: operator_control; the record hook: end_conditions --

    def _on_trip(self, event: Any) -> None:
        self._trip_reason = str(getattr(event, "message", "") or event)
        self._wake.set()

    # -- bench plumbing ------------------------------------------------------------------------------
    def _install(self) -> None:
        self.bench.hooks.append(self._on_record)
        providers = getattr(self.bench, "status_providers", None)
        if isinstance(providers, dict):
            providers["runner"] = self.status
        safety = getattr(self.bench, "safety", None)
        on_trip = getattr(safety, "on_trip", None)
        if isinstance(on_trip, list):
            on_trip.append(self._on_trip)

    def _uninstall(self) -> None:
        with contextlib.suppress(ValueError):
            self.bench.hooks.remove(self._on_record)
        providers = getattr(self.bench, "status_providers", None)
        if isinstance(providers, dict) and providers.get("runner") == self.status:
            del providers["runner"]
        on_trip = getattr(getattr(self.bench, "safety", None), "on_trip", None)
        if isinstance(on_trip, list):
            with contextlib.suppress(ValueError):
                on_trip.remove(self._on_trip)

    def _tripped(self) -> bool:
        return bool(getattr(getattr(self.bench, "safety", None), "tripped", False))

    def _trip_text(self) -> str:
        if self._trip_reason:
            return self._trip_reason
        reasons = getattr(getattr(self.bench, "safety", None), "trip_reasons", None)
        if callable(reasons):
            with contextlib.suppress(Exception):
                messages = [getattr(r, "message", str(r)) for r in reasons()]
                if messages:
                    return "; ".join(messages)
        return "the safety monitor is tripped"










    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self.bench.journal.append_event(self.run_id, self.clock.wall_ns(), kind, data)
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:
                log.exception("runner event observer failed")



    def _persist(self) -> None:
        active = self._active
        state = RunnerState(
            phase=self.phase,
            position=self._cursor.position,
            step=None if active is None else active.progress,
            cycle=self._cycle,
            last_discharge_ah=self._last_discharge_ah,
            steps_completed=self._steps_completed,
            test_time_s=self._test_time_s,
            total_cycles=self.size.cycles,
            total_steps=self.size.steps,
            process=self._identity,
            reason=self.reason,
            saved_ns=self.clock.wall_ns(),
        )
        self.bench.journal.set_run_value(self.run_id, STATE_KEY, state.to_dict())

    # -- for the live view ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``runner`` section of the bench status (``daq status``, MQTT)."""
        p = self.progress()
        return {
            "phase": p.phase,
            "cycle": p.cycle,
            "total_cycles": p.total_cycles,
            "step": p.step,
            "total_steps": p.total_steps,
            "number": p.number,
            "label": p.label,
            "step_elapsed_s": round(p.step_elapsed_s, 1),
            "test_time_s": round(p.test_time_s, 1),
            "eta_s": None if p.eta_s is None else round(p.eta_s),
            "step_eta_s": None if p.step_eta_s is None else round(p.step_eta_s),
            "voltage_v": _finite(p.voltage_v),
            "current_a": _finite(p.current_a),
            "step_ah": p.step_ah,
            "reason": p.reason,
        }

    def step_detail(self) -> dict[str, Any]:
        """The active step's end conditions (pack units) and energy, for the web view."""
        active = self._active
        if active is None:
            return {"ends": {}, "step_wh": 0.0, "kind": ""}
        end = active.item.resolved.end
        ends = {name: getattr(end, name) for name in end.__dataclass_fields__ if getattr(end, name) is not None}
        return {"ends": ends, "step_wh": active.totals.net_wh, "kind": active.item.resolved.kind}

    def progress(self) -> Progress:
        active = self._active
        item = active.item if active is not None else None
        cycle = item.cycle_index if item is not None else (self.summaries[-1]["cycle"] if self.summaries else 0)
        step_elapsed = self._elapsed(active) if active is not None else 0.0
        cycle_elapsed = (self._cycle.duration_s if self._cycle else 0.0) + step_elapsed
        durations = [s["duration_s"] for s in self.summaries if s.get("complete", True)]
        alarms = list(self.alarms)
        active_alarms = getattr(getattr(self.bench, "safety", None), "active_alarms", None)
        if callable(active_alarms):
            with contextlib.suppress(Exception):
                alarms += [getattr(a, "message", str(a)) for a in active_alarms()]
        measured_eta = estimate_remaining_s(
            cycle=cycle, total_cycles=self.size.cycles, cycle_durations_s=durations, cycle_elapsed_s=cycle_elapsed
        )
        step_eta, test_eta = (
            self._eta.estimate(
                active.number,
                active.item.resolved,
                step_measure(step_elapsed, active.current_a, active.voltage_v, active.totals, self.bench.latest),
            )
            if active is not None
            else (None, None)
        )
        return Progress(
            phase=self.phase,
            cycle=cycle,
            total_cycles=self.size.cycles,
            step=active.number if active is not None else self._steps_completed,
            total_steps=self.size.steps,
            number=item.number if item is not None else "",
            label=active.progress.label if active is not None else "",
            step_elapsed_s=step_elapsed,
            test_time_s=self._test_time_s + step_elapsed,
            eta_s=(measured_eta if measured_eta is not None else test_eta) if self.phase in (RUNNING, PAUSED) else 0.0,
            step_eta_s=step_eta if self.phase in (RUNNING, PAUSED) else 0.0,
            time_scale=self.clock.time_scale,
            voltage_v=active.voltage_v if active is not None else math.nan,
            current_a=active.current_a if active is not None else math.nan,
            step_ah=active.totals.net_ah if active is not None else 0.0,
            alarms=alarms,
            reason=self.reason,
        )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value




