"""End conditions, judged on every record: the runner's bench hook integrates the cycler's current
and voltage into the running step, tracks temperatures and, when an end condition is met (or the
cycler faults), wakes the runner task. Synchronous and cheap: it runs on the bench's record path.
Part of ``TestRunner`` (``daq.runner.runner``).
"""

from __future__ import annotations

import math

from daq.channels import TEMPERATURE_RE, CyclerMode
from daq.records import Record
from daq.runner.base import ActiveStep, RunnerBase
from daq.runner.integrator import NS
from daq.runner.state import (
    RUNNING,
)
from daq.runner.steps import (
    StepReadings,
    end_reason,
)


class EndConditions(RunnerBase):
    """The record hook: the running step's readings and its end conditions."""

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

    def _cycler_sample(self, active: ActiveStep, t_ns: int, current: float, voltage: float) -> None:
        self._integrator.sample(t_ns, current, voltage)
        if active.end is not None or (active.samples and t_ns <= active.samples[-1][0]):
            return  # the step's end values stay those it ended on
        if t_ns < active.progress.active_since_ns:
            return  # polled before the step's command was in: not the step's values
        active.voltage_v, active.current_a = voltage, current
        active.samples.append((t_ns, voltage))
        self._resample.set()

    def _judging(self, active: ActiveStep, t_ns: int) -> bool:
        """Whether readings at ``t_ns`` count for the step's end: it runs, and they are from its time."""
        since = active.progress.active_since_ns
        return self.phase == RUNNING and active.end is None and since != 0 and t_ns >= since

    def _check_end(self, active: ActiveStep, t_ns: int, voltage: float, current: float, temperature: float) -> None:
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
