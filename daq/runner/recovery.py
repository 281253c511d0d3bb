"""Crash resume: what the journal says about the step a dead runner left behind.

The runner state is saved at step transitions; between them the journal's records are the truth.
``replay_step`` integrates the interrupted step's cycler records (trapezoid, as live) and finds
how long it ran, the last cycler reading and the device's own charge counter at that moment, so
``daq test resume`` can continue the step with its time and Ah and book the crash gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from daq.channels import TEMPERATURE_RE
from daq.journal import JournalReader
from daq.runner.integrator import NS, SampleIntegrator, Totals
from daq.runner.state import StepProgress


@dataclass(slots=True)
class ReplayedStep:
    totals: Totals = field(default_factory=Totals)
    elapsed_s: float = 0.0  # step time as of the last record (pauses excluded)
    last_t_ns: int | None = None  # newest record of the run (any device)
    last_voltage_v: float = math.nan
    last_current_a: float = math.nan
    last_charge_counter_ah: float | None = None  # the cycler's own charge_ah at its last record
    last_uptime_s: float | None = None  # the cycler's uptime then (a smaller one later: it restarted)
    output_was_on: bool | None = None
    max_temperature_c: float = math.nan


def replay_step(reader: JournalReader, run_id: str, cycler: str, progress: StepProgress) -> ReplayedStep:
    out = ReplayedStep(max_temperature_c=progress.max_temperature_c)
    out.totals.add_totals(progress.extra)
    integrator = SampleIntegrator(out.totals)
    last_cycler_t: int | None = None
    for record in reader.iter_run_records(run_id, start_ns=progress.started_ns):
        out.last_t_ns = record.t_ns if out.last_t_ns is None else max(out.last_t_ns, record.t_ns)
        if record.step != progress.step or record.cycle != progress.cycle:
            continue
        for i, channel in enumerate(record.schema.channels):
            if TEMPERATURE_RE.match(channel.name) and record.quality[i] == 0 and math.isfinite(record.values[i]):
                value, hottest = record.values[i], out.max_temperature_c
                out.max_temperature_c = value if math.isnan(hottest) else max(hottest, value)
        if record.device != cycler:
            continue
        current, voltage = record.get("current_a"), record.get("voltage_v")
        if math.isfinite(current) and math.isfinite(voltage):
            integrator.sample(record.t_ns, current, voltage)
            out.last_voltage_v, out.last_current_a = voltage, current
            last_cycler_t = record.t_ns
        counter = record.get("charge_ah")
        if math.isfinite(counter):
            out.last_charge_counter_ah = counter
        uptime = record.get("uptime_s")
        if math.isfinite(uptime):
            out.last_uptime_s = uptime
        on = record.get("output_on")
        if math.isfinite(on):
            out.output_was_on = bool(on)
    out.elapsed_s = progress.elapsed_before_s
    if progress.active_since_ns and last_cycler_t is not None and last_cycler_t > progress.active_since_ns:
        out.elapsed_s += (last_cycler_t - progress.active_since_ns) / NS
    return out
