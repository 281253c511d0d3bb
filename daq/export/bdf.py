"""A recorded run in the Battery Data Format (Battery Data Alliance): ``*.bdf.csv`` / ``*.bdf.parquet``.

One row per good poll of the cycler (the device with role ``cycler``): its voltage and current
(+ = charge, as BDF wants) are the measurement that counts for capacity. Other devices are
joined "as of" that row: the last good value each one reported at or before the row's time,
left empty when older than ``aux_max_age_s`` or when its last reading was bad (an open
thermistor stays visible as a gap instead of a frozen number).

Columns and their meaning here (labels as the ``batterydf`` package spells them):

- ``Test Time / s``: seconds since the run started; ``Unix Time / s``: the poll's time.
- ``Cycle Count / 1``: the cycle the runner stamped (0 before the program's first loop).
- ``Step Count / 1``: the runner's running step number (1, 2, 3, ... in the order the steps ran;
  0 before the first); ``Step Index / 1``: the program step that was running (1-based position
  in the profile, so every cycle's charge step has the same index; the sidecar's ``steps`` maps
  each running number to the program step, e.g. "4.2", and its label). A run recorded without
  the runner has only the stamps: then ``Step Index`` is the stamped step and ``Step Count``
  counts changes of (cycle, step) from 1.
- ``Charging/Discharging Capacity / Ah`` and ``... Energy / Wh``: charge and discharge moved
  since the current cycle began (magnitudes, reset at each new cycle); ``Net ...``: their
  difference in that cycle; ``Step ...``: signed net since the current step began;
  ``Cumulative ...``: signed net since the run began. See ``daq.export.capacity`` for how.
- ``Power / W``: the cycler's own power reading if it has one, else voltage x current.
- ``Surface Temperature T1..T5 / degC``: BMS sensors ``temp1_c``.. first, then the cycler's
  probe, then any other device's ``temp<n>_c`` (the sidecar names each column's source).
- ``Ambient Temperature / degC``: a channel named ``ambient_c`` or ``ambient_temperature_c``
  on any device; the column is absent when nothing measured it.

The metadata sidecar (``<file>.metadata.json``, the ``batterydf`` naming) carries the run, its
devices and channels, units, software version, config hash and data-quality notes.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daq import __version__
from daq.channels import CURRENT, POWER, TEMPERATURE, VOLTAGE
from daq.errors import DaqError
from daq.export.capacity import CapacityCounter, default_max_gap_s
from daq.export.steps import RunnerStep, runner_steps
from daq.export.table import RunTable
from daq.export.writers import ExportError, atomic_path
from daq.journal import JournalReader, RunInfo
from daq.records import DeviceSchema, Record
from daq.timebase import time_description, timebase_of

TEST_TIME = "Test Time / s"
VOLTAGE_COL = "Voltage / V"
CURRENT_COL = "Current / A"
UNIX_TIME = "Unix Time / s"
CYCLE_COUNT = "Cycle Count / 1"
STEP_COUNT = "Step Count / 1"
STEP_INDEX = "Step Index / 1"
POWER_COL = "Power / W"
AMBIENT = "Ambient Temperature / degC"
CAPACITY_COLUMNS = [
    "Charging Capacity / Ah",
    "Discharging Capacity / Ah",
    "Net Capacity / Ah",
    "Step Capacity / Ah",
    "Cumulative Capacity / Ah",
    "Charging Energy / Wh",
    "Discharging Energy / Wh",
    "Net Energy / Wh",
    "Step Energy / Wh",
    "Cumulative Energy / Wh",
]
MAX_TEMPERATURES = 5  # BDF has T1..T5
AMBIENT_CHANNELS = ("ambient_c", "ambient_temperature_c")
SIGN_CONVENTION = "current, power, net, step and cumulative capacity and energy: positive = charging the battery"


def temperature_label(n: int) -> str:
    return f"Surface Temperature T{n} / degC"


def unit_of(label: str) -> str:
    return label.rsplit(" / ", 1)[1]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a joined column comes from."""

    label: str
    device: str
    channel: str


@dataclass
class BdfExport:
    table: RunTable
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def pick_cycler(schemas: list[DeviceSchema], run_id: str, name: str | None = None) -> DeviceSchema:
    """The device whose voltage and current the BDF rows carry."""
    if name is not None:
        for s in schemas:
            if s.device == name:
                missing = [c for c in (VOLTAGE, CURRENT) if c not in s.index]
                if missing:
                    raise DaqError(f"device {name} in run {run_id} has no {' or '.join(missing)} channel")
                return s
        raise DaqError(f"run {run_id} has no device {name!r}; its devices: {', '.join(s.device for s in schemas)}")
    cyclers = [s for s in schemas if s.kind == "cycler" and VOLTAGE in s.index and CURRENT in s.index]
    if len(cyclers) == 1:
        return cyclers[0]
    if not cyclers:
        raise DaqError(
            f"run {run_id} recorded no cycler (a device with role cycler and voltage_v, current_a); "
            "pass --device NAME to take voltage and current from another device"
        )
    names = ", ".join(s.device for s in cyclers)
    raise DaqError(f"run {run_id} has several cyclers ({names}); choose one with --device NAME")


def _temperature_order(schema: DeviceSchema, cycler: str) -> int:
    if schema.kind == "bms":
        return 0
    return 1 if schema.device == cycler else 2


def temperature_sources(schemas: list[DeviceSchema], cycler: str) -> list[Source]:
    """Every temperature channel in BDF order: BMS sensors, then the cycler's probe, then the rest."""
    found: list[tuple[int, int, int, str, str]] = []
    for order, schema in enumerate(schemas):
        for ch in schema.channels:
            if ch.name == TEMPERATURE:
                number = 0
            elif ch.name.startswith("temp") and ch.name.endswith("_c") and ch.name[4:-2].isdigit():
                number = int(ch.name[4:-2])
            else:
                continue
            found.append((_temperature_order(schema, cycler), order, number, schema.device, ch.name))
    found.sort()
    return [Source(temperature_label(i + 1), dev, ch) for i, (*_, dev, ch) in enumerate(found)]


def ambient_source(schemas: list[DeviceSchema]) -> Source | None:
    for schema in schemas:
        for name in AMBIENT_CHANNELS:
            if name in schema.index:
                return Source(AMBIENT, schema.device, name)
    return None


class _AsOf:
    """The last good value of each (device, channel) with its time; bad readings clear it."""

    def __init__(self, sources: list[Source]) -> None:
        self.wanted: dict[str, list[str]] = {}
        for src in sources:
            self.wanted.setdefault(src.device, []).append(src.channel)
        self.values: dict[tuple[str, str], tuple[int, float | None]] = {}
        self.times: dict[str, list[int]] = {d: [] for d in self.wanted}

    def update(self, rec: Record) -> None:
        channels = self.wanted.get(rec.schema.device)
        if channels is None:
            return
        self.times[rec.schema.device].append(rec.t_ns)
        for channel in channels:
            i = rec.schema.index[channel]
            v = rec.values[i]
            good = rec.quality[i] == 0 and not math.isnan(v)
            self.values[(rec.schema.device, channel)] = (rec.t_ns, v if good else None)

    def get(self, src: Source) -> tuple[int, float | None]:
        return self.values.get((src.device, src.channel), (0, None))

    def max_age_ns(self, device: str, fixed_s: float | None) -> int:
        """``fixed_s``, or three of the device's typical poll intervals (a missed poll or two is fine)."""
        if fixed_s is not None:
            return int(fixed_s * 1e9)
        return int(3 * default_max_gap_s(self.times[device]) / 10 * 1e9)


@dataclass(slots=True)
class _Row:
    t_ns: int
    volts: float
    amps: float
    watts: float | None
    cycle: int
    step: int
    joined: list[tuple[int, float | None]]  # (time of the value, value)


def iso_utc(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_description(run: RunInfo, schemas: list[DeviceSchema], journal: Path) -> dict[str, Any]:
    """Run and device metadata shared by every export's sidecar."""
    times = time_description(run.started_ns, run.ended_ns, run.metadata)
    return {
        "run": {
            "run_id": run.run_id,
            "bench_id": run.bench_id,
            "status": run.status,
            "reason": run.reason,
            # wall clock; for a simulated bench the bench time and time scale are in "time"
            "started_utc": iso_utc(times["started_wall_ns"]),
            "ended_utc": iso_utc(times["ended_wall_ns"]),
            "time": times,
            "config_hash": run.config_hash,
            "metadata": run.metadata,
        },
        "software": {"name": "daq", "version": __version__},
        "journal": str(journal),
        "devices": [
            {
                "device": s.device,
                "kind": s.kind,
                "channels": [{"name": c.name, "unit": c.unit} for c in s.channels],
            }
            for s in schemas
        ],
    }


def build_bdf_table(
    reader: JournalReader,
    run: RunInfo,
    *,
    cycler: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    aux_max_age_s: float | None = None,
) -> BdfExport:
    """Collect a run as BDF columns. Raises DaqError when the run has no usable cycler data.

    ``aux_max_age_s``: how old another device's value may be and still join a cycler row;
    None: three of that device's typical poll intervals.
    """
    schemas = reader.schemas(run.run_id)
    main = pick_cycler(schemas, run.run_id, cycler)
    temps = temperature_sources(schemas, main.device)
    ambient = ambient_source(schemas)
    joined = temps[:MAX_TEMPERATURES] + ([ambient] if ambient else [])
    asof = _AsOf(joined)
    vi, ii = main.index[VOLTAGE], main.index[CURRENT]
    pi = main.index.get(POWER)
    devices = sorted({main.device, *(s.device for s in joined)})

    rows: list[_Row] = []
    dropped = 0
    first_ns: int | None = None
    for rec in reader.iter_run_records(run.run_id, start_ns=start_ns, end_ns=end_ns, devices=devices):
        if rec.schema.device != main.device:
            asof.update(rec)
            continue
        first_ns = rec.t_ns if first_ns is None else first_ns
        asof.update(rec)  # the cycler's own temperature probe
        v, i = rec.values[vi], rec.values[ii]
        if rec.quality[vi] or rec.quality[ii] or math.isnan(v) or math.isnan(i):
            dropped += 1
            continue
        watts = None
        if pi is not None and rec.quality[pi] == 0 and not math.isnan(rec.values[pi]):
            watts = rec.values[pi]
        values = [asof.get(src) for src in joined]
        rows.append(_Row(rec.t_ns, v, i, watts, rec.cycle, rec.step, values))
    if not rows:
        where = "in the selected time range" if start_ns is not None or end_ns is not None else "yet"
        raise DaqError(
            f"run {run.run_id} has no good voltage and current readings from {main.device} {where}; nothing was written"
        )

    t0 = min(run.started_ns, rows[0].t_ns)
    timebase = timebase_of(run.metadata)  # Unix Time: when it happened; Test Time: bench seconds
    max_age = [asof.max_age_ns(src.device, aux_max_age_s) for src in joined]
    columns = [TEST_TIME, UNIX_TIME, VOLTAGE_COL, CURRENT_COL, POWER_COL, CYCLE_COUNT, STEP_INDEX, STEP_COUNT]
    columns += CAPACITY_COLUMNS + [src.label for src in joined]
    table = RunTable(columns, [unit_of(c) for c in columns], {c: [] for c in columns})
    d = table.data
    counter = CapacityCounter(max_gap_s=default_max_gap_s([r.t_ns for r in rows]))
    program = runner_steps(reader.run_events(run.run_id))
    step_count = 0
    last_key: tuple[int, int] | None = None
    for r in rows:
        if (r.cycle, r.step) != last_key:
            step_count += 1
            last_key = (r.cycle, r.step)
        counter.add(r.t_ns, r.volts, r.amps, cycle=r.cycle, step_count=step_count)
        if program:
            count, index = r.step, program[r.step].program_index if r.step in program else 0
        else:
            count, index = step_count, r.step
        cyc, stp, tot = counter.cycle, counter.step, counter.total
        d[TEST_TIME].append((r.t_ns - t0) / 1e9)
        d[UNIX_TIME].append(timebase.unix_s(r.t_ns))
        d[VOLTAGE_COL].append(r.volts)
        d[CURRENT_COL].append(r.amps)
        d[POWER_COL].append(r.watts if r.watts is not None else r.volts * r.amps)
        d[CYCLE_COUNT].append(r.cycle)
        d[STEP_INDEX].append(index)
        d[STEP_COUNT].append(count)
        for label, value in zip(
            CAPACITY_COLUMNS,
            (cyc.charge_ah, cyc.discharge_ah, cyc.net_ah, stp.net_ah, tot.net_ah,
             cyc.charge_wh, cyc.discharge_wh, cyc.net_wh, stp.net_wh, tot.net_wh),
            strict=True,
        ):  # fmt: skip
            d[label].append(value)
        for src, (t_value, value), age in zip(joined, r.joined, max_age, strict=True):
            d[src.label].append(value if r.t_ns - t_value <= age else None)

    notes: list[str] = []
    if run.status == "running":
        notes.append("run still in progress: exported what is recorded so far")
    if dropped:
        notes.append(f"{dropped} cycler poll(s) without good voltage and current were left out")
    if counter.gaps:
        longest = max(b - a for a, b in counter.gaps) / 1e9
        notes.append(
            f"{len(counter.gaps)} gap(s) in the cycler data (longest {longest:.1f} s) were not counted in capacity"
        )
    if len(temps) > MAX_TEMPERATURES:
        notes.append(
            f"{len(temps)} temperature channels, BDF has T1..T{MAX_TEMPERATURES}: the rest are in the cells export"
        )
    metadata = run_description(run, schemas, reader.path)
    metadata.update(
        {
            "format": "Battery Data Format (Battery Data Alliance), human-readable column labels",
            "sign_convention": SIGN_CONVENTION,
            "selection": {"from_utc": iso_utc(start_ns), "to_utc": iso_utc(end_ns)},
            "test_time_zero_utc": iso_utc(t0),
            "columns": _column_docs(columns, main, joined, pi is not None, runner=bool(program)),
            "steps": {str(n): _step_doc(p) for n, p in sorted(program.items())},
            "per_cycle": {
                str(c): {
                    "charge_ah": t.charge_ah,
                    "discharge_ah": t.discharge_ah,
                    "charge_wh": t.charge_wh,
                    "discharge_wh": t.discharge_wh,
                }
                for c, t in counter.per_cycle.items()
            },
            "quality": {
                "rows": len(rows),
                "cycler_polls_left_out": dropped,
                "capacity_max_gap_s": counter.max_gap_s,
                "capacity_gaps_utc": [[iso_utc(a), iso_utc(b)] for a, b in counter.gaps],
                "joined_max_age_s": {src.label: age / 1e9 for src, age in zip(joined, max_age, strict=True)},
            },
            "counter_check": _counter_check(reader, run, main, counter.total.net_ah, start_ns, end_ns),
            "notes": notes,
        }
    )
    return BdfExport(table, metadata, notes)


def _step_doc(step: RunnerStep) -> dict[str, object]:
    return {
        "program_step": step.program_number,
        "step_index": step.program_index,
        "label": step.label,
        "kind": step.kind,
        "cycle": step.cycle,
    }


def _column_docs(
    columns: list[str], main: DeviceSchema, joined: list[Source], has_power: bool, *, runner: bool
) -> list[dict[str, str]]:
    sources = {
        VOLTAGE_COL: f"{main.device}.{VOLTAGE}",
        CURRENT_COL: f"{main.device}.{CURRENT}",
        POWER_COL: f"{main.device}.{POWER}" if has_power else f"{main.device}.{VOLTAGE} x {main.device}.{CURRENT}",
        CYCLE_COUNT: "cycle stamped on the records",
        STEP_INDEX: "program step of the runner's step_started events" if runner else "step stamped on the records",
        STEP_COUNT: "running step number stamped by the runner" if runner else "counts changes of (cycle, step)",
        **{c: f"counted from {main.device} voltage and current" for c in CAPACITY_COLUMNS},
        **{s.label: f"{s.device}.{s.channel}" for s in joined},
    }
    return [{"label": c, "unit": unit_of(c), "source": sources.get(c, "time of the cycler poll")} for c in columns]


def _counter_check(
    reader: JournalReader, run: RunInfo, main: DeviceSchema, counted_ah: float, start_ns: int | None, end_ns: int | None
) -> dict[str, float] | None:
    """The cycler's own net Ah counter over the same span, when it has one, next to ours."""
    idx = main.index.get("charge_ah")
    if idx is None:
        return None
    first = last = None
    for rec in reader.iter_run_records(run.run_id, start_ns=start_ns, end_ns=end_ns, devices=[main.device]):
        if rec.quality[idx] == 0 and not math.isnan(rec.values[idx]):
            first = rec.values[idx] if first is None else first
            last = rec.values[idx]
    if first is None or last is None:
        return None
    return {"counted_net_ah": counted_ah, "cycler_counter_net_ah": last - first}


# -- writing ------------------------------------------------------------------------------------

FORMATS = {"bdf-csv": ".bdf.csv", "bdf-parquet": ".bdf.parquet"}


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".metadata.json")


def check_out_name(out: Path, fmt: str) -> None:
    suffix = FORMATS[fmt]
    if not out.name.endswith(suffix):
        raise ExportError(f"--out {out}: a {fmt} file must be named *{suffix} (the Battery Data Format's convention)")


def write_table_csv(table: RunTable, path: Path) -> None:
    """Plain CSV: the column labels as the one header row, empty cells for missing values."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.columns)
        for row in zip(*(table.data[c] for c in table.columns), strict=True):
            writer.writerow(["" if v is None else format(v, ".15g") if isinstance(v, float) else v for v in row])


def write_table_parquet(table: RunTable, path: Path, metadata: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(table.data[c], type=_arrow_type(table.data[c])) for c in table.columns]
    fields = [
        pa.field(c, a.type, metadata={"unit": u}) for c, a, u in zip(table.columns, arrays, table.units, strict=True)
    ]
    schema = pa.schema(fields, metadata={"daq.metadata": json.dumps(metadata)})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def _arrow_type(values: list[object]) -> Any:
    """int64 for counters (empty cells stay null), float64 for measurements, else inferred."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) for v in present):
        return pa.float64()
    return None


def write_bdf(export: BdfExport, out: Path, fmt: str) -> Path:
    """Write the data file and its metadata sidecar; returns the sidecar's path."""
    out = Path(out)
    check_out_name(out, fmt)
    meta = dict(export.metadata, bdf_file=out.name)
    # Sidecar inside the data file's scope: a failure on either leaves neither under its name.
    with atomic_path(out) as data_tmp:
        if fmt == "bdf-csv":
            write_table_csv(export.table, data_tmp)
        else:
            write_table_parquet(export.table, data_tmp, meta)
        write_sidecar(meta, sidecar_path(out))
    return sidecar_path(out)


def write_sidecar(metadata: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
