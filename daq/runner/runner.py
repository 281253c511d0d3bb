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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daq.bench import Bench
from daq.channels import TEMPERATURE_RE, CyclerMode
from daq.cycler import CyclerCommand, CyclerControl
from daq.errors import DriverError
from daq.profiles import CycleMetrics, Plan, PlanItem, describe_step
from daq.records import Record
from daq.runner.control import ACK_KEY, OperatorCommand, process_identity
from daq.runner.eta import EtaTracker, step_measure
from daq.runner.integrator import NS, SampleIntegrator, Totals
from daq.runner.progress import PlanSize, Progress, estimate_remaining_s, plan_size
from daq.runner.state import (
    ABORTED,
    COMPLETED,
    PAUSED,
    RUNNING,
    STATE_KEY,
    STOPPED,
    SUMMARY_KEY,
    RunnerState,
    StepProgress,
)
from daq.runner.steps import (
    StepReadings,
    command_at,
    commanded_current,
    end_reason,
    next_change_s,
    setpoint_channel,
    step_category,
)
from daq.runner.summary import CycleAccumulator, StepResult
from daq.runner.target import TestTarget

log = logging.getLogger(__name__)

LOOKS_PER_POLL = 8  # at most this many look-ahead reads per poll period
LOOK_HORIZON_POLLS = 3.0  # look ahead at voltage ends predicted within this many poll periods


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # completed | aborted | stopped (paused and the process leaves; resumable)
    reason: str = ""

    @property
    def run_status(self) -> str:
        """The journal's run status for this outcome."""
        return "paused" if self.status == STOPPED else self.status


@dataclass(slots=True)
class ResumePoint:
    """Where a resumed test continues (``daq test resume``)."""

    state: RunnerState
    summaries: list[dict[str, Any]]
    step_totals: Totals | None = None  # of the interrupted step so far (journal replay + gap)
    step_elapsed_s: float | None = None
    max_temperature_c: float = math.nan


@dataclass(slots=True)
class _Active:
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


class _Trip(Exception):
    """The safety monitor is tripped: the run must stop without touching the output again."""


class TestRunner:
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
        self._active: _Active | None = None
        self._integrator = SampleIntegrator()
        self._wake = asyncio.Event()
        self._resample = asyncio.Event()  # a new cycler sample: the look-ahead is planned again
        self._commands: deque[OperatorCommand] = deque()
        self._trip_reason: str | None = None
        self._fault: str | None = None
        self._exit_reason: str | None = None
        self._temp_index: dict[int, tuple[int, ...]] = {}
        self._identity = process_identity()
        self._paused_at_mono = self.clock.monotonic()
        self._device_min_period_s = next(
            (d.poll_period_s for d in bench.loaded.config.devices if d.name == target.cycler), 1.0
        )

    # -- inputs from other tasks (synchronous: queue and wake) ---------------------------------------
    def deliver(self, command: OperatorCommand) -> None:
        self._commands.append(command)
        self._wake.set()

    def request_exit(self, reason: str) -> None:
        """Ctrl-C / end of --duration: pause (safe state) and let ``run()`` return, resumable."""
        self._exit_reason = reason
        self._wake.set()

    @property
    def run_id(self) -> str:
        return self.bench.run_id

    # -- the task ----------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        self._install()
        try:
            return await self._main()
        except _Trip:
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
        resume = self._resume
        if resume is not None and resume.state.step is not None and resume.state.step.step == item.step_count + 1:
            progress = resume.state.step
            totals = resume.step_totals or Totals()
            progress.elapsed_before_s = resume.step_elapsed_s or progress.elapsed_before_s
            progress.max_temperature_c = resume.max_temperature_c
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
            raise _Trip
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

    # -- steps -------------------------------------------------------------------------------------
    def _metrics(self) -> CycleMetrics:
        return CycleMetrics(last_discharge_capacity_ah=self._last_discharge_ah)

    async def _enter(
        self,
        item: PlanItem,
        *,
        progress: StepProgress | None = None,
        totals: Totals | None = None,
        previous: tuple[_Active, str] | None = None,
    ) -> None:
        """Command ``item`` and make it the running step; finish ``previous`` (step, reason) at the switch."""
        if self._tripped():
            raise _Trip
        step = item.resolved
        number = item.step_count + 1
        if progress is None:
            progress = StepProgress(
                step=number,
                cycle=item.cycle_index,
                number=item.number,
                label=describe_step(item.step),
                started_ns=0,
                active_since_ns=0,
                elapsed_before_s=0.0,
            )
        active = _Active(item, progress, totals or Totals())
        self._set_record_period(item)
        self._set_step_limits(None)  # the global limits while the current changes over
        command = command_at(step, progress.elapsed_before_s, self.target.currents)
        previous_elapsed = self._elapsed(previous[0]) if previous is not None else 0.0
        t_sent = self.clock.wall_ns()
        try:
            await self._apply(command)
        except DriverError as exc:
            # The cycler did not take the step: make it safe and wait for the operator.
            self._integrator.switch(t_sent, active.totals, commanded_a=0.0)
            if previous is not None:
                self._finish(previous[0], previous[1], t_sent, next_item=item, elapsed_s=previous_elapsed)
            verified = await self._make_safe()
            self._active = active
            self._stamp(active)
            self._to_paused(f"cycler {self.target.cycler} did not take the step: {exc}", "runner", verified)
            return
        t_ns = self.clock.wall_ns()  # end conditions judge readings from here: the command is in
        # The operating point changed somewhere while the command was being written (several
        # registers, milliseconds that are seconds of battery time at high time scales): the
        # middle of that window is the best estimate, and it splits the two steps' Ah and Wh.
        t_switch = (t_sent + t_ns) // 2
        self._integrator.switch(t_switch, active.totals, commanded_a=commanded_current(command))
        if previous is not None:  # its journal and state writes wait until the new command is in
            self._finish(previous[0], previous[1], t_switch, next_item=item, elapsed_s=previous_elapsed)
        self._set_step_limits(step_category(step))
        if progress.started_ns == 0:
            progress.started_ns = t_ns
        progress.active_since_ns = t_ns
        active.active_since_mono = self.clock.monotonic()
        active.command = command
        self._active = active
        self.phase = RUNNING
        self._stamp(active)
        self._event(
            "runner.step_started",
            {
                "step": number,
                "number": item.number,
                "label": progress.label,
                "kind": step.kind,
                "cycle": item.cycle_index,
                "loop_counters": list(item.loop_counters),
                "command": _command_dict(command),
                "record_period_s": self._poll_period_for(item),
                "resumed_at_s": progress.elapsed_before_s or None,
            },
        )
        self._persist()

    async def _next(self) -> Outcome | None:
        active = self._active
        assert active is not None and active.end is not None
        reason = active.end[0]
        if _is_discharge_step(active):
            self._last_discharge_ah = active.totals.discharge_ah
        item = self._cursor.advance()
        if item is None:
            t_ns = self.clock.wall_ns()
            self._integrator.switch(t_ns, None, commanded_a=0.0)
            self._finish(active, reason, t_ns, next_item=None)
            self._active = None
            verified = await self._make_safe()
            if not verified:
                log.error("cycler %s: output did not read back off at the end of the test", self.target.cycler)
            return await self._complete(safe_verified=verified)
        await self._enter(item, previous=(active, reason))
        return None

    def _finish(
        self,
        active: _Active,
        reason: str,
        t_ns: int,
        *,
        next_item: PlanItem | None,
        elapsed_s: float | None = None,
        aborting: bool = False,
    ) -> StepResult:
        """Close a step at ``t_ns`` (its totals are final: the integrator booked up to the switch)."""
        elapsed = self._elapsed(active) if elapsed_s is None else elapsed_s
        result = StepResult(
            step=active.number,
            number=active.item.number,
            label=active.progress.label,
            kind=active.item.resolved.kind,
            cycle=active.item.cycle_index,
            reason=reason,
            started_ns=active.progress.started_ns,
            ended_ns=t_ns,
            duration_s=elapsed,
            totals=active.totals,
            end_voltage_v=active.voltage_v,
            end_current_a=active.current_a,
            max_temperature_c=active.progress.max_temperature_c,
            tags=active.item.resolved.tags,
        )
        self._steps_completed += 1
        self._test_time_s += elapsed
        if self._cycle is None or self._cycle.cycle != result.cycle:
            self._cycle = CycleAccumulator(result.cycle)
        self._cycle.add(result)
        self._event("runner.step_ended", result.to_dict())
        if next_item is None or next_item.cycle_index != result.cycle:
            self._close_cycle(complete=not aborting)
        return result

    def _close_cycle(self, *, complete: bool) -> None:
        cycle = self._cycle
        if cycle is None or cycle.steps == 0:
            return
        summary = cycle.summary()
        summary["complete"] = complete
        self.summaries.append(summary)
        self.bench.journal.set_run_value(self.run_id, SUMMARY_KEY, self.summaries)
        self._event("runner.cycle_completed" if complete else "runner.cycle_incomplete", summary)
        self._cycle = None

    async def _wait_in_step(self) -> None:
        """Until woken: end the step on time, play pulse/profile setpoints, look ahead at voltage ends."""
        while not self._wake.is_set():
            active = self._active
            if active is None or active.active_since_mono is None or self.phase != RUNNING:
                await self._wake.wait()
                return
            step = active.item.resolved
            elapsed = self._elapsed(active)
            targets: list[tuple[float, str]] = []  # (bench monotonic deadline, what)
            to_mono = active.active_since_mono - active.progress.elapsed_before_s
            if step.end.time_s is not None:
                targets.append((to_mono + step.end.time_s, "time"))
            change = None
            if step.waveform is not None:
                change = next_change_s(step.waveform, elapsed, self._poll_period_for(active.item))
                if change is not None:
                    targets.append((to_mono + change, "change"))
            look = self._look_ahead_at(active)
            if look is not None:
                targets.append((look, "look"))
            self._resample.clear()
            if not targets:
                if await self._sleep_or_wake(None) != "deadline":
                    if self._wake.is_set():
                        return
                continue
            deadline, what = min(targets)
            woke = await self._sleep_or_wake(deadline)
            if woke == "wake":
                return
            if woke == "resample":
                continue  # a new cycler sample: plan the look-ahead again
            if what == "time":
                active.end = ("time", self.clock.wall_ns())
                self._wake.set()
                return
            if what == "change":
                await self._play(active, change if change is not None else elapsed)
            else:
                await self._look(active)

    def _look_ahead_at(self, active: _Active) -> float | None:
        """When a voltage end will be crossed before the next poll sees it: the bench monotonic time
        to read the voltage directly (the runner's own read, so step ends do not wait for a slow poll
        at long record periods or at accelerated time). None: the next poll is soon enough."""
        end = active.item.resolved.end
        if (end.voltage_above_v is None and end.voltage_below_v is None) or len(active.samples) < 2:
            return None
        (t1, v1), (t2, v2) = active.samples
        if t2 <= t1:
            return None
        slope = (v2 - v1) / ((t2 - t1) / NS)
        period = self._poll_period_for(active.item)
        crossings = []
        for threshold, sign in ((end.voltage_above_v, 1.0), (end.voltage_below_v, -1.0)):
            if threshold is None or slope * sign <= 0:
                continue
            remaining = (threshold - v2) * sign
            if remaining > 0:
                crossings.append(remaining / (slope * sign))
        if not crossings:
            return None
        ahead_s = min(crossings)
        if ahead_s >= LOOK_HORIZON_POLLS * period:
            return None  # far off: the polls will come closer first
        # Look half way to the predicted crossing and predict again from there: a linear guess is
        # late on a knee (the voltage falls ever faster at the end of a discharge), halving is not.
        at_ns = max(t2 + int(ahead_s / 2 * NS), active.last_look_ns + int(period / LOOKS_PER_POLL * NS))
        return at_ns / NS + (self.clock.monotonic() - self.clock.wall_ns() / NS)

    async def _look(self, active: _Active) -> None:
        driver = self.control.driver
        t0 = self.clock.wall_ns()
        try:
            voltage = await driver.read_channel("voltage_v")
            current = await driver.read_channel("current_a")
        except DriverError as exc:
            log.debug("look-ahead read failed: %s", exc)
            active.last_look_ns = t0
            return
        t_ns = (t0 + self.clock.wall_ns()) // 2
        active.last_look_ns = t_ns
        if self._active is active and self.phase == RUNNING:
            self._cycler_sample(active, t_ns, current, voltage)
            self._check_end(active, t_ns, voltage, current, math.nan)

    async def _play(self, active: _Active, at_s: float) -> None:
        """Move a time-varying step's setpoint to its value at ``at_s`` (step time)."""
        step = active.item.resolved
        channel = setpoint_channel(step)
        if channel is None:
            return
        value = step.setpoint_at(at_s + 1e-9)
        try:
            await self.control.driver.write(channel, value)
        except DriverError as exc:
            self._fault = f"cycler {self.target.cycler} did not take a setpoint change: {exc}"
            self._wake.set()
            return
        self._integrator.switch(
            self.clock.wall_ns(), active.totals, commanded_a=value if channel == "current_setpoint_a" else None
        )

    async def _sleep_or_wake(self, deadline: float | None) -> str:
        """Sleep until ``deadline`` (bench monotonic; None: no deadline). Returns what ended the
        sleep: "wake" (the runner must act), "resample" (a new cycler sample) or "deadline"."""
        waiter = asyncio.ensure_future(self._wake.wait())
        resample = asyncio.ensure_future(self._resample.wait())
        tasks = {waiter, resample}
        if deadline is not None:
            tasks.add(asyncio.ensure_future(self.clock.sleep_until(deadline)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if waiter.done() and not waiter.cancelled():
            return "wake"
        if resample.done() and not resample.cancelled():
            return "resample"
        return "deadline"

    def _elapsed(self, active: _Active) -> float:
        if active.active_since_mono is None:
            return active.progress.elapsed_before_s
        return active.progress.elapsed_before_s + (self.clock.monotonic() - active.active_since_mono)

    # -- pause, resume, stop, abort, complete --------------------------------------------------------
    async def _pause(self, reason: str, *, who: str, source: str) -> None:
        active = self._active
        if self.phase != RUNNING:
            return
        if active is not None:
            self._integrator.switch(self.clock.wall_ns(), active.totals, commanded_a=0.0)
        verified = await self._make_safe()
        self._to_paused(reason, who, verified, source=source)

    def _to_paused(self, reason: str, who: str, verified: bool, *, source: str = "runner") -> None:
        active = self._active
        if active is not None and active.active_since_mono is not None:
            active.progress.elapsed_before_s = self._elapsed(active)
            active.active_since_mono = None
            active.progress.active_since_ns = 0
        self.phase = PAUSED
        self.reason = reason
        self._paused_at_mono = self.clock.monotonic()
        self._set_step_limits(None)
        self._event(
            "runner.paused",
            {
                "reason": reason,
                "who": who,
                "source": source,
                "safe_state_verified": verified,
                **self._where(),
            },
        )
        self._persist()

    async def _while_paused(self) -> Outcome | None:
        """Wait for resume, abort, exit or a trip. None: resumed, go on with the step."""
        while True:
            if self._trip_reason is not None:
                raise _Trip
            while self._commands:
                command = self._commands.popleft()
                if command.action == "abort":
                    return await self._abort(command.reason or "aborted by operator", who=command.who, command=command)
                if command.action == "pause":
                    self._ack(command, True, "already paused")
                    continue
                if self._tripped():
                    self._ack(command, False, "the safety monitor is tripped; acknowledge the alarm first")
                    continue
                if await self._resume_step(command.who):
                    self._ack(command, True, "resumed")
                    return None
                self._ack(command, False, f"could not resume: {self.reason}")
            if self._exit_reason is not None:
                return self._stop()
            await self._wake.wait()
            self._wake.clear()

    async def _resume_step(self, who: str) -> bool:
        active = self._active
        if active is None:
            return False
        paused_s = self.clock.monotonic() - self._paused_at_mono
        self._set_record_period(active.item)
        command = command_at(active.item.resolved, active.progress.elapsed_before_s, self.target.currents)
        t_sent = self.clock.wall_ns()
        try:
            await self._apply(command)
        except DriverError as exc:
            await self._make_safe()
            self.reason = f"cycler {self.target.cycler} did not take the step: {exc}"
            return False
        self._set_step_limits(step_category(active.item.resolved))
        t_ns = self.clock.wall_ns()
        self._integrator.switch((t_sent + t_ns) // 2, active.totals, commanded_a=commanded_current(command))
        if active.progress.started_ns == 0:
            active.progress.started_ns = t_ns
        active.progress.active_since_ns = t_ns
        active.active_since_mono = self.clock.monotonic()
        active.command = command
        active.end = None
        self.phase = RUNNING
        self.reason = ""
        self._event("runner.resumed", {"who": who, "paused_s": paused_s, **self._where()})
        self._persist()
        return True

    def _stop(self) -> Outcome:
        """The process leaves while paused: the run stays resumable."""
        reason = self._exit_reason or "stopped"
        self.phase = STOPPED
        self.reason = reason
        self._persist()
        return Outcome(STOPPED, reason)

    async def _abort(self, reason: str, *, who: str, command: OperatorCommand | None = None) -> Outcome:
        t_ns = self.clock.wall_ns()
        active = self._active
        if active is not None:
            self._integrator.switch(t_ns, None, commanded_a=0.0)
            # a step that had met its end (the abort came as the next one was starting) keeps its reason
            step_reason = active.end[0] if active.end is not None else "aborted"
            self._finish(active, step_reason, t_ns, next_item=None, aborting=True)
            self._active = None
        verified = await self._make_safe()
        self._set_step_limits(None)
        self.phase = ABORTED
        self.reason = reason
        self._event("runner.aborted", {"reason": reason, "who": who, "safe_state_verified": verified})
        self._persist()
        if command is not None:
            self._ack(command, True, "aborted")
        self._drain_commands("the test was aborted")
        return Outcome(ABORTED, reason)

    async def _complete(self, *, safe_verified: bool | None = None) -> Outcome:
        if safe_verified is None:
            safe_verified = await self._make_safe()
        self._set_step_limits(None)
        self.phase = COMPLETED
        self.reason = ""
        self._event(
            "runner.completed",
            {"cycles": len(self.summaries), "steps": self._steps_completed, "safe_state_verified": safe_verified},
        )
        self._persist()
        self._drain_commands("the test has completed")
        return Outcome(COMPLETED)

    def _drain_commands(self, why: str) -> None:
        while self._commands:
            self._ack(self._commands.popleft(), False, why)

    # -- the hook (synchronous, on every record) -----------------------------------------------------
    def _on_record(self, record: Record) -> None:
        active = self._active
        if active is None:
            return
        is_cycler = record.schema.device == self.target.cycler
        voltage = current = math.nan
        if is_cycler:
            current, voltage = record.get("current_a"), record.get("voltage_v")
            if math.isfinite(current) and math.isfinite(voltage):
                self._cycler_sample(active, record.t_ns, current, voltage)
        temperature = self._max_temperature(record)
        if not math.isnan(temperature):
            prev = active.progress.max_temperature_c
            active.progress.max_temperature_c = temperature if math.isnan(prev) else max(prev, temperature)
        if not self._judging(active, record.t_ns):
            return
        if is_cycler and active.command is not None and active.command.mode != CyclerMode.REST:
            if record.get("alarm") == 1:
                code = record.get("alarm_code")
                self._fault = f"cycler {self.target.cycler} reports an alarm (code {code:g})"
                self._wake.set()
                return
            if record.get("output_on") == 0:
                self._fault = f"cycler {self.target.cycler} turned its output off by itself (watchdog or device limit?)"
                self._wake.set()
                return
        self._check_end(active, record.t_ns, voltage, current, temperature)

    def _cycler_sample(self, active: _Active, t_ns: int, current: float, voltage: float) -> None:
        self._integrator.sample(t_ns, current, voltage)
        if active.end is not None or (active.samples and t_ns <= active.samples[-1][0]):
            return  # the step's end values stay those it ended on
        if t_ns < active.progress.active_since_ns:
            return  # polled before the step's command was in: not the step's values
        active.voltage_v, active.current_a = voltage, current
        active.samples.append((t_ns, voltage))
        self._resample.set()

    def _judging(self, active: _Active, t_ns: int) -> bool:
        """Whether readings at ``t_ns`` count for the step's end: it runs, and they are from its time."""
        since = active.progress.active_since_ns
        return self.phase == RUNNING and active.end is None and since != 0 and t_ns >= since

    def _check_end(self, active: _Active, t_ns: int, voltage: float, current: float, temperature: float) -> None:
        if not self._judging(active, t_ns):
            return
        elapsed = active.progress.elapsed_before_s + (t_ns - active.progress.active_since_ns) / NS
        below = active.item.resolved.end.current_below_a
        if below is not None and not active.current_armed and math.isfinite(current):
            # A reading taken while the cycler still ramps to the new command must not end a
            # taper step: current ends count once the current was above them, or after a poll period.
            active.current_armed = abs(current) > below or elapsed >= self._poll_period_for(active.item)
        readings = StepReadings(
            elapsed_s=elapsed,
            voltage_v=voltage,
            current_a=current if below is None or active.current_armed else math.nan,
            step_ah=active.totals.net_ah,
            step_wh=active.totals.net_wh,
            temperature_c=temperature,
        )
        reason = end_reason(active.item.resolved, readings)
        if reason is not None:
            active.end = (reason, t_ns)
            self._wake.set()

    def _max_temperature(self, record: Record) -> float:
        schema = record.schema
        indices = self._temp_index.get(id(schema))
        if indices is None:
            indices = tuple(i for i, c in enumerate(schema.channels) if TEMPERATURE_RE.match(c.name))
            self._temp_index[id(schema)] = indices
        hottest = math.nan
        values, quality = record.values, record.quality
        for i in indices:
            if quality[i] == 0:
                value = values[i]
                if math.isfinite(value) and not (value <= hottest):
                    hottest = value
        return hottest

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

    def _set_step_limits(self, name: str | None) -> None:
        safety = getattr(self.bench, "safety", None)
        setter = getattr(safety, "set_step_limits", None)
        if callable(setter):
            setter(name)

    def _poll_period_for(self, item: PlanItem) -> float:
        step = item.resolved
        if step.record_on_delta_v is not None or step.record_on_delta_a is not None:
            return self._device_min_period_s  # record on change: poll as fast as the bench allows
        return max(self._device_min_period_s, step.record_period_s)

    def _set_record_period(self, item: PlanItem) -> None:
        poller = self.bench.pollers.get(self.target.cycler)
        if poller is not None:
            poller.period_s = self._poll_period_for(item)

    def _stamp(self, active: _Active) -> None:
        self.bench.context.step = active.number
        self.bench.context.cycle = active.item.cycle_index

    async def _apply(self, command: CyclerCommand) -> None:
        if self._tripped():
            raise _Trip
        # CyclerControl.apply skips a zero voltage and CP's clamp; a stale clamp from the previous
        # step would hold the current at zero, so the clamp is always written here.
        if command.mode != CyclerMode.REST and self.control.has("voltage_setpoint_v"):
            if command.voltage_v == 0 or command.mode == CyclerMode.CP:
                await self.control.driver.write("voltage_setpoint_v", command.voltage_v)
        await self.control.apply(command)

    async def _make_safe(self) -> bool:
        try:
            return await self.control.safe_state()
        except DriverError as exc:  # safe_state handles driver errors itself; belt and braces
            log.error("cycler %s: safe state failed: %s", self.target.cycler, exc)
            return False

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self.bench.journal.append_event(self.run_id, self.clock.wall_ns(), kind, data)
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:
                log.exception("runner event observer failed")

    def _ack(self, command: OperatorCommand, ok: bool, message: str) -> None:
        if command.source == "terminal":
            return
        self.bench.journal.set_run_value(
            self.run_id, ACK_KEY, {"key": command.key, "ok": ok, "message": message, "phase": self.phase}
        )

    def _where(self) -> dict[str, Any]:
        active = self._active
        if active is None:
            return {}
        return {"step": active.number, "number": active.item.number, "cycle": active.item.cycle_index}

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


def _is_discharge_step(active: _Active) -> bool:
    direction = getattr(active.item.step, "direction", None)
    if direction is not None:
        return direction == "discharge"
    t = active.totals
    return active.item.resolved.waveform is not None and t.discharge_ah > t.charge_ah


def _command_dict(command: CyclerCommand) -> dict[str, Any]:
    return {
        "mode": command.mode.name,
        "current_a": command.current_a,
        "voltage_v": command.voltage_v,
        "power_w": command.power_w,
    }
