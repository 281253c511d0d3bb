"""Everything a report shows about one run, gathered from the journal in one pass.

Per device: the time of each record (seconds since the run started) and a values matrix with
NaN where a value was not good. Steps and cycles come from the run/step/cycle stamps, per-cycle
numbers from the runner's ``cycle_summary`` when it stored one, else counted here from the
cycler's voltage and current (``daq.export.capacity``), and the verdict from
``daq.safety.compliance.check_run`` when a limit set is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from daq.channels import CELL_VOLTAGE_RE, CURRENT, TEMPERATURE, VOLTAGE
from daq.errors import DaqError
from daq.export.capacity import CapacityCounter, default_max_gap_s
from daq.export.steps import runner_steps
from daq.journal import JournalEvent, JournalReader, RunInfo
from daq.records import DeviceSchema
from daq.safety.compliance import CheckResult, check_run
from daq.safety.limits import LimitSet
from daq.safety.step_limits import run_switches


@dataclass
class DeviceSeries:
    schema: DeviceSchema
    t_s: np.ndarray  # seconds since the run started
    values: np.ndarray  # records x channels, NaN where not good
    cycle: np.ndarray
    step: np.ndarray

    def channel(self, name: str) -> np.ndarray | None:
        i = self.schema.index.get(name)
        return None if i is None else self.values[:, i]

    def cell_columns(self) -> list[int]:
        """Value indexes of cell1_v, cell2_v, ... in cell order."""
        cells = [
            (int(m.group(1)), i) for i, c in enumerate(self.schema.channels) if (m := CELL_VOLTAGE_RE.match(c.name))
        ]
        return [i for _, i in sorted(cells)]

    def temperature_columns(self) -> list[tuple[str, int]]:
        return [
            (c.name, i)
            for i, c in enumerate(self.schema.channels)
            if c.name == TEMPERATURE or (c.name.startswith("temp") and c.name.endswith("_c"))
        ]


@dataclass(frozen=True, slots=True)
class StepSpan:
    cycle: int
    step: int
    name: str
    start_s: float
    end_s: float


@dataclass(slots=True)
class CycleRow:
    cycle: int
    charge_ah: float = math.nan
    discharge_ah: float = math.nan
    charge_wh: float = math.nan
    discharge_wh: float = math.nan
    max_temperature_c: float = math.nan
    end_charge_voltage_v: float = math.nan
    end_discharge_voltage_v: float = math.nan
    coulombic_efficiency_pct: float = math.nan
    energy_efficiency_pct: float = math.nan
    retention_pct: float = math.nan  # capacity relative to the first full cycle
    capacity_ah: float = math.nan  # the runner's capacity (its capacity-measurement step), else discharge Ah


@dataclass(frozen=True, slots=True)
class Span:
    """A highlighted interval: an excursion from the limit check or an alarm from the journal."""

    level: str  # warning | trip
    start_s: float
    end_s: float
    label: str
    device: str
    channel: str


@dataclass
class RunData:
    run: RunInfo
    journal: Path
    t0_ns: int
    duration_s: float
    devices: dict[str, DeviceSeries]
    cycler: str | None
    steps: list[StepSpan]
    cycles: list[CycleRow]
    cycles_source: str
    alarm_events: list[JournalEvent]
    runner_events: list[JournalEvent]
    alarm_spans: list[Span]
    check: CheckResult | None = None
    check_spans: list[Span] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def time_s(self, t_ns: int) -> float:
        return (t_ns - self.t0_ns) / 1e9

    @property
    def bms(self) -> list[DeviceSeries]:
        return [d for d in self.devices.values() if d.cell_columns()]


def check_step_names(reader: JournalReader, run_id: str) -> dict[int, str] | None:
    """Step number -> name for per-step limits, from where ``daq check`` reads it (kv ``step_names``)."""
    raw = reader.run_value(run_id, "step_names")
    if not isinstance(raw, dict):
        return None
    return {int(k): str(v) for k, v in raw.items() if str(k).lstrip("-").isdigit()}


def step_labels(events: list[JournalEvent], fallback: dict[int, str] | None) -> dict[int, str]:
    """Step number -> what the report calls it: the runner's program step and label, if it ran."""
    program = runner_steps(events)
    if program:
        return {n: f"{p.program_number} {p.label}".strip() for n, p in program.items()}
    return dict(fallback or {})


def recorded_limits(events: list[JournalEvent]) -> LimitSet | None:
    """The limit set the run was recorded with (the safety monitor journals it), as ``daq check`` uses."""
    recorded = [e for e in events if e.kind == "safety.limits"]
    if not recorded:
        return None
    try:
        return LimitSet.model_validate(recorded[-1].data["limits"])
    except (KeyError, ValidationError) as exc:
        raise DaqError(f"the limit set recorded with the run cannot be read ({exc}); pass --limits FILE") from exc


def gather(
    reader: JournalReader,
    run: RunInfo,
    *,
    limits: LimitSet | None = None,
    strict: bool = False,
    use_recorded_limits: bool = True,
) -> RunData:
    """Read a run once (twice for the verdict: the check replays the records in time order).

    Without ``limits`` the verdict uses the limit set recorded with the run, if any, as ``daq check`` does.
    """
    schemas = reader.schemas(run.run_id)
    buffers: dict[str, tuple[list[float], list[list[float]], list[int], list[int]]] = {
        s.device: ([], [], [], []) for s in schemas
    }
    first_ns: int | None = None
    last_ns = run.started_ns
    events = reader.run_events(run.run_id)
    check_names = check_step_names(reader, run.run_id)
    names = step_labels(events, check_names)
    t0 = run.started_ns
    for rec in reader.iter_run_records(run.run_id):
        if first_ns is None:
            first_ns = rec.t_ns
            t0 = min(run.started_ns, rec.t_ns)
        last_ns = rec.t_ns
        t = (rec.t_ns - t0) / 1e9
        ts, vals, cycles, stps = buffers[rec.schema.device]
        ts.append(t)
        vals.append([v if q == 0 else math.nan for v, q in zip(rec.values, rec.quality, strict=True)])
        cycles.append(rec.cycle)
        stps.append(rec.step)
    if first_ns is None:
        raise DaqError(f"run {run.run_id} has no records yet; there is nothing to report")
    duration = (last_ns - t0) / 1e9

    devices = {}
    for s in schemas:
        ts, vals, cycles, stps = buffers[s.device]
        if ts:
            devices[s.device] = DeviceSeries(
                s, np.asarray(ts), np.asarray(vals, dtype=float).reshape(len(ts), len(s)), np.asarray(cycles),
                np.asarray(stps),
            )  # fmt: skip
    cycler = next(
        (
            d
            for d, ser in devices.items()
            if ser.schema.kind == "cycler" and {VOLTAGE, CURRENT} <= set(ser.schema.index)
        ),
        None,
    )
    data = RunData(
        run=run,
        journal=reader.path,
        t0_ns=t0,
        duration_s=duration,
        devices=devices,
        cycler=cycler,
        steps=step_spans(
            devices[cycler] if cycler else max(devices.values(), key=lambda d: len(d.t_s)), names, duration
        ),
        cycles=[],
        cycles_source="",
        alarm_events=[e for e in events if e.kind.startswith(("alarm.", "safety.safe_state"))],
        runner_events=[e for e in events if e.kind.startswith("runner.")],
        alarm_spans=[],
    )
    data.alarm_spans = alarm_spans(data)
    data.cycles, data.cycles_source = cycle_rows(reader, data)
    if run.status == "running":
        data.notes.append("the run is still in progress: this report shows what was recorded so far")
    if cycler is None:
        data.notes.append("no cycler was recorded: capacity, efficiency and fade are not available")
    recorded = limits is None and use_recorded_limits
    if recorded:
        limits = recorded_limits(events)
        if limits is not None:
            data.notes.append(f"verdict against the limit set recorded with the run ({limits.name or 'unnamed'})")
    if limits is not None:
        switches, switch_notes = run_switches(events, limits, recorded=recorded)  # as daq check does
        data.notes.extend(switch_notes)
        records = reader.iter_run_records(run.run_id)
        data.check = check_run(records, limits, strict=strict, step_names=check_names, switches=switches)
        data.check_spans = [
            Span(e.level, data.time_s(e.start_ns), data.time_s(e.end_ns), e.limit, e.device, e.channel)
            for e in data.check.excursions
        ]
    return data


def step_spans(series: DeviceSeries, names: dict[int, str], duration_s: float) -> list[StepSpan]:
    """Steps as one device saw them (the cycler: the runner commands it). One device only, because
    a record is stamped when its poll returns, so two devices' records near a step change can
    interleave in time with the old and new stamps."""
    spans: list[StepSpan] = []
    if not len(series.t_s):
        return spans
    change = np.flatnonzero((np.diff(series.cycle) != 0) | (np.diff(series.step) != 0)) + 1
    starts = [0, *change.tolist()]
    for k, i in enumerate(starts):
        end = series.t_s[starts[k + 1]] if k + 1 < len(starts) else duration_s
        cyc, stp = int(series.cycle[i]), int(series.step[i])
        spans.append(StepSpan(cyc, stp, names.get(stp, ""), float(series.t_s[i] if k else 0.0), float(end)))
    return spans


def alarm_spans(data: RunData) -> list[Span]:
    """Intervals during which a journaled alarm was active (raised/tripped until cleared/acknowledged)."""
    open_: dict[tuple[str, str, str], tuple[str, float]] = {}
    spans: list[Span] = []
    for e in data.alarm_events:
        kind = str(e.data.get("kind") or e.kind.split(".", 1)[1])
        key = (str(e.data.get("limit", "")), str(e.data.get("device", "")), str(e.data.get("channel", "")))
        t = data.time_s(e.t_ns)
        if kind in ("raised", "tripped"):
            level = "trip" if kind == "tripped" or e.data.get("level") == "trip" else "warning"
            if key not in open_ or level == "trip":
                open_[key] = (level, open_.get(key, (level, t))[1])
        elif kind in ("cleared", "acknowledged") and key in open_:
            level, start = open_.pop(key)
            spans.append(Span(level, start, t, *key))
    for key, (level, start) in open_.items():
        spans.append(Span(level, start, data.duration_s, *key))
    return sorted(spans, key=lambda s: s.start_s)


# -- per cycle ----------------------------------------------------------------------------------

_SUMMARY_KEYS = {
    "charge_ah": ("charge_ah", "charge_capacity_ah"),
    "discharge_ah": ("discharge_ah", "discharge_capacity_ah"),
    "charge_wh": ("charge_wh", "charge_energy_wh"),
    "discharge_wh": ("discharge_wh", "discharge_energy_wh"),
    "max_temperature_c": ("max_temperature_c", "max_temp_c", "temperature_max_c"),
    "end_charge_voltage_v": ("end_of_charge_v", "end_charge_voltage_v", "end_of_charge_voltage_v"),
    "end_discharge_voltage_v": ("end_of_discharge_v", "end_discharge_voltage_v", "end_of_discharge_voltage_v"),
    "capacity_ah": ("capacity_ah",),
}


def _from_summary(items: list[dict[str, Any]]) -> list[CycleRow]:
    rows = []
    for n, item in enumerate(items):
        row = CycleRow(int(item.get("cycle", item.get("cycle_index", n + 1))))
        for attr, keys in _SUMMARY_KEYS.items():
            for k in keys:
                if isinstance(item.get(k), int | float):
                    setattr(row, attr, float(item[k]))
                    break
        rows.append(row)
    return rows


def _counted(data: RunData) -> list[CycleRow]:
    assert data.cycler is not None
    ser = data.devices[data.cycler]
    v, i = ser.channel(VOLTAGE), ser.channel(CURRENT)
    assert v is not None and i is not None
    good = ~(np.isnan(v) | np.isnan(i))
    t_ns = (ser.t_s[good] * 1e9).astype(np.int64)
    counter = CapacityCounter(max_gap_s=default_max_gap_s(t_ns.tolist()))
    step_count, last = 0, None
    for t, volts, amps, cyc, stp in zip(t_ns, v[good], i[good], ser.cycle[good], ser.step[good], strict=True):
        if (cyc, stp) != last:
            step_count, last = step_count + 1, (cyc, stp)
        counter.add(int(t), float(volts), float(amps), cycle=int(cyc), step_count=step_count)
    rows = []
    for cyc, totals in sorted(counter.per_cycle.items()):
        row = CycleRow(cyc, totals.charge_ah, totals.discharge_ah, totals.charge_wh, totals.discharge_wh)
        in_cycle = good & (ser.cycle == cyc)
        charging, discharging = in_cycle & (i > 0), in_cycle & (i < 0)
        if charging.any():
            row.end_charge_voltage_v = float(v[np.flatnonzero(charging)[-1]])
        if discharging.any():
            row.end_discharge_voltage_v = float(v[np.flatnonzero(discharging)[-1]])
        row.max_temperature_c = _max_temperature(data, cyc)
        rows.append(row)
    return rows


def _max_temperature(data: RunData, cycle: int) -> float:
    peak = math.nan
    for ser in data.devices.values():
        cols = [i for _, i in ser.temperature_columns()]
        mask = ser.cycle == cycle
        if cols and mask.any():
            block = ser.values[np.ix_(mask, cols)]
            if not np.isnan(block).all():
                peak = float(np.nanmax(block)) if math.isnan(peak) else max(peak, float(np.nanmax(block)))
    return peak


def cycle_rows(reader: JournalReader, data: RunData) -> tuple[list[CycleRow], str]:
    """Per-cycle numbers, with efficiencies and retention; and where they came from."""
    summary = reader.run_value(data.run.run_id, "cycle_summary")
    if isinstance(summary, list) and summary and all(isinstance(s, dict) for s in summary):
        rows, source = _from_summary(summary), "the runner's cycle summary"
    elif data.cycler is not None:
        rows, source = _counted(data), f"counted from {data.cycler} voltage and current (no runner summary stored)"
    else:
        return [], "not available (no cycler and no runner summary)"
    biggest = max((max(r.charge_ah, r.discharge_ah) for r in rows if not math.isnan(r.charge_ah)), default=0.0)
    # A cycle that moved almost nothing (the rest before the program) is not a cycle to judge.
    rows = [r for r in rows if not math.isnan(r.charge_ah) and max(r.charge_ah, r.discharge_ah) > 0.02 * biggest]
    reference = math.nan
    for r in rows:
        capacity = r.capacity_ah if not math.isnan(r.capacity_ah) else r.discharge_ah
        if r.charge_ah > 0 and r.discharge_ah > 0:
            r.coulombic_efficiency_pct = 100.0 * r.discharge_ah / r.charge_ah
        if r.charge_wh > 0 and r.discharge_wh > 0:
            r.energy_efficiency_pct = 100.0 * r.discharge_wh / r.charge_wh
        if math.isnan(reference) and capacity > 0 and r.charge_ah > 0:
            reference = capacity
        if not math.isnan(reference) and capacity > 0:
            r.retention_pct = 100.0 * capacity / reference
    return rows, source


def flat_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Run metadata with the test runner's ``test`` section (operator, pack serial, profile) on top."""
    test = metadata.get("test")
    return {**metadata, **test} if isinstance(test, dict) else dict(metadata)
