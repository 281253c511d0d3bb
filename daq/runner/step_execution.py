"""Step execution, the runner's main part: enter a step (command it, switch the safety limits, stamp
the records), play time-varying setpoints, look ahead at voltage ends, end on time, finish a step
and close its cycle. Part of ``TestRunner`` (``daq.runner.runner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from daq.channels import CyclerMode
from daq.cycler import CyclerCommand
from daq.errors import DriverError
from daq.profiles import CycleMetrics, PlanItem, describe_step
from daq.runner.base import ActiveStep, Outcome, RunnerBase, SafetyTripped
from daq.runner.integrator import NS, Totals
from daq.runner.state import (
    RUNNING,
    SUMMARY_KEY,
    StepProgress,
)
from daq.runner.step_limits import (
    StepLimitError,
    current_problem,
    profile_limit_layers,
    step_currents,
    step_overrides,
    voltage_problem,
)
from daq.runner.steps import (
    CurrentLimits,
    command_at,
    commanded_current,
    next_change_s,
    setpoint_channel,
    step_category,
)
from daq.runner.summary import CycleAccumulator, StepResult
from daq.safety.limits import LimitSet
from daq.safety.step_limits import step_limit_set

log = logging.getLogger(__name__)


LOOKS_PER_POLL = 8  # at most this many look-ahead reads per poll period
LOOK_HORIZON_POLLS = 3.0  # look ahead at voltage ends predicted within this many poll periods


class StepExecution(RunnerBase):
    """Entering, running and finishing steps (see the module docstring)."""

    def _metrics(self) -> CycleMetrics:
        return CycleMetrics(last_discharge_capacity_ah=self._last_discharge_ah)

    async def _enter(
        self,
        item: PlanItem,
        *,
        progress: StepProgress | None = None,
        totals: Totals | None = None,
        previous: tuple[ActiveStep, str] | None = None,
    ) -> None:
        """Command ``item`` and make it the running step; finish ``previous`` (step, reason) at the switch."""
        if self._tripped():
            raise SafetyTripped
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
        active = ActiveStep(item, progress, totals or Totals())
        self._set_record_period(item)
        self._set_step_limits(None)  # the global limits while the current changes over
        command = command_at(step, progress.elapsed_before_s, self._currents(item))
        previous_elapsed = self._elapsed(previous[0]) if previous is not None else 0.0
        t_sent = self.clock.wall_ns()
        try:
            await self._apply(command, item)
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
        self._set_step_limits(item)
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
        active: ActiveStep,
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

    def _look_ahead_at(self, active: ActiveStep) -> float | None:
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

    async def _look(self, active: ActiveStep) -> None:
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

    async def _play(self, active: ActiveStep, at_s: float) -> None:
        """Move a time-varying step's setpoint to its value at ``at_s`` (step time)."""
        step = active.item.resolved
        channel = setpoint_channel(step)
        if channel is None:
            return
        value = step.setpoint_at(at_s + 1e-9)
        if channel == "current_setpoint_a":
            self._check_setpoints(active.item, current_a=value)
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

    def _elapsed(self, active: ActiveStep) -> float:
        if active.active_since_mono is None:
            return active.progress.elapsed_before_s
        return active.progress.elapsed_before_s + (self.clock.monotonic() - active.active_since_mono)

    def _set_step_limits(self, item: PlanItem | None) -> None:
        """Make ``item``'s limits the active ones (its category's and its own ``limits:``), or
        the global ones (None: between steps, paused, ended)."""
        safety = getattr(self.bench, "safety", None)
        setter = getattr(safety, "set_step_limits", None)
        if not callable(setter):
            return
        if item is None:
            setter(None, step=self._active.number if self._active is not None else None)
            return
        step = item.resolved
        label = f"step {item.number} ({describe_step(item.step)})"
        setter(step_category(step), self._overrides(item), step=item.step_count + 1, label=label)

    def _overrides(self, item: PlanItem) -> tuple[Mapping[str, Any], ...]:
        """``item``'s override layers: the profile-wide limits (read once per step kind), loops', its own."""
        category = step_category(item.resolved)
        layers = self._profile_layers.get(category)
        if layers is None:
            layers = self._profile_layers[category] = profile_limit_layers(self.plan.profile, category)
        return step_overrides(layers, item.resolved)

    def _step_active_limits(self, item: PlanItem) -> LimitSet | None:
        """The limits that will be active while ``item`` runs (None: the bench has no safety)."""
        limits = getattr(getattr(self.bench, "safety", None), "limits", None)
        if not isinstance(limits, LimitSet):
            return None
        active = self._active_limits.get(item.step_index)
        if active is None:
            step = item.resolved
            where = f"step {item.number}"
            active = step_limit_set(limits, step_category(step), self._overrides(item), where=where)
            self._active_limits[item.step_index] = active
        return active

    def _currents(self, item: PlanItem) -> CurrentLimits:
        """The current bounds of ``item``: the bench's, tightened by the step's active limits."""
        active = self._step_active_limits(item)
        return self.target.currents if active is None else step_currents(self.target.currents, active)

    def _check_setpoints(
        self, item: PlanItem, *, current_a: float | None = None, voltage_v: float | None = None, floor: bool = False
    ) -> None:
        """Refuse to send a setpoint the step's active limits would trip on (profiles are checked
        before they start; this guards the command path itself). ``floor``: the voltage is a
        discharge's lower clamp."""
        active = self._step_active_limits(item)
        if active is None:
            return
        problems = []
        if current_a is not None:
            problems.append(current_problem(current_a, active))
        if voltage_v:
            series = self.target.series_cells
            problems.append(voltage_problem(voltage_v, active, series_cells=series, floor=floor))
        problem = next((p for p in problems if p is not None), None)
        if problem is not None:
            raise StepLimitError(f"step {item.number}: {problem}; not sent")

    def _poll_period_for(self, item: PlanItem) -> float:
        step = item.resolved
        if step.record_on_delta_v is not None or step.record_on_delta_a is not None:
            return self._device_min_period_s  # record on change: poll as fast as the bench allows
        return max(self._device_min_period_s, step.record_period_s)

    def _set_record_period(self, item: PlanItem) -> None:
        poller = self.bench.pollers.get(self.target.cycler)
        if poller is not None:
            poller.period_s = self._poll_period_for(item)

    def _stamp(self, active: ActiveStep) -> None:
        self.bench.context.step = active.number
        self.bench.context.cycle = active.item.cycle_index

    async def _apply(self, command: CyclerCommand, item: PlanItem) -> None:
        if self._tripped():
            raise SafetyTripped
        discharging = command.current_a < 0 if command.mode != CyclerMode.CP else command.power_w < 0
        self._check_setpoints(
            item,
            current_a=None if command.mode == CyclerMode.CP else command.current_a,
            voltage_v=command.voltage_v,
            floor=discharging,
        )
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

    def _where(self) -> dict[str, Any]:
        active = self._active
        if active is None:
            return {}
        return {"step": active.number, "number": active.item.number, "cycle": active.item.cycle_index}


def _is_discharge_step(active: ActiveStep) -> bool:
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
