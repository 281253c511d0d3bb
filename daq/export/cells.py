"""Cell-level side table: what BDF has no columns for (each cell's voltage and temperature, flags).

Layout: long ("tidy"), one row per cell per poll of a device that reports cells (``cell<n>_v``,
usually the BMS). Long rather than wide because packs differ (14 to 200+ cells, several BMS in
one run) and a long table has the same columns for all of them; pivot it for a wide view:
``df.pivot_table(index="Test Time / s", columns="Cell / 1", values="Voltage / V")``.

Columns: ``Test Time / s`` (since the run started), ``Unix Time / s``, ``Cycle Count / 1``,
``Step Index / 1``, ``Device``, ``Cell / 1`` (1-based, as the channels), ``Voltage / V``,
``Temperature / degC`` (sensor ``temp<n>_c`` of the same device, by position; empty where the
device has fewer sensors than cells), ``Balancing / 1`` (bit n-1 of ``balance_mask``, empty if
the device has no mask), ``Alarm / 1`` (0 none, 1 warning, 2 trip: a safety alarm active on
this cell's voltage or temperature at that time, from the journal's ``alarm.*`` events),
``BMS Alarm Level / 1`` (the device's own ``alarm_level``: 0 ok, 1 warning, 2 alarm).
A value whose quality was not good is left empty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daq.channels import ALARM_LEVEL, CELL_VOLTAGE_RE
from daq.errors import DaqError
from daq.export.bdf import (
    iso_utc,
    run_description,
    sidecar_path,
    write_sidecar,
    write_table_csv,
    write_table_parquet,
)
from daq.export.table import RunTable
from daq.export.writers import atomic_path
from daq.journal import JournalEvent, JournalReader, RunInfo
from daq.records import DeviceSchema, Record
from daq.timebase import timebase_of

COLUMNS = [
    ("Test Time / s", "s"),
    ("Unix Time / s", "s"),
    ("Cycle Count / 1", "1"),
    ("Step Index / 1", "1"),
    ("Device", ""),
    ("Cell / 1", "1"),
    ("Voltage / V", "V"),
    ("Temperature / degC", "degC"),
    ("Balancing / 1", "1"),
    ("Alarm / 1", "1"),
    ("BMS Alarm Level / 1", "1"),
]
FORMATS = {"cells-csv": ".csv", "cells-parquet": ".parquet"}
_TEMP_RE = re.compile(r"^temp(\d+)_c$")
_LEVELS = {"warning": 1, "trip": 2}


@dataclass
class CellExport:
    table: RunTable
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each cell's values sit in one device's records."""

    cells: int
    voltage: dict[int, int]  # cell -> value index
    temperature: dict[int, int]
    balance: int | None
    alarm_level: int | None


def cell_number(channel: str) -> int | None:
    """The cell a channel belongs to: ``cell5_v`` and ``temp5_c`` -> 5."""
    m = CELL_VOLTAGE_RE.match(channel) or _TEMP_RE.match(channel)
    return int(m.group(1)) if m else None


def _layout(schema: DeviceSchema) -> _Layout | None:
    volts = {int(m.group(1)): i for i, c in enumerate(schema.channels) if (m := CELL_VOLTAGE_RE.match(c.name))}
    if not volts:
        return None
    temps = {int(m.group(1)): i for i, c in enumerate(schema.channels) if (m := _TEMP_RE.match(c.name))}
    return _Layout(
        cells=max(max(volts), max(temps, default=0)),
        voltage=volts,
        temperature=temps,
        balance=schema.index.get("balance_mask"),
        alarm_level=schema.index.get(ALARM_LEVEL),
    )


class AlarmState:
    """Replays ``alarm.*`` journal events: which (device, channel) is in alarm at a given time."""

    def __init__(self, events: list[JournalEvent]) -> None:
        self._events = sorted((e for e in events if e.kind.startswith("alarm.")), key=lambda e: (e.t_ns, e.seq))
        self._next = 0
        self.active: dict[tuple[str, str, str], int] = {}  # (limit, device, channel) -> level

    def advance(self, t_ns: int) -> None:
        while self._next < len(self._events) and self._events[self._next].t_ns <= t_ns:
            e = self._events[self._next]
            self._next += 1
            kind = str(e.data.get("kind") or e.kind.split(".", 1)[1])
            key = (str(e.data.get("limit", "")), str(e.data.get("device", "")), str(e.data.get("channel", "")))
            if kind in ("raised", "tripped"):
                self.active[key] = max(self.active.get(key, 0), _LEVELS.get(str(e.data.get("level")), 1))
            elif kind in ("cleared", "acknowledged"):
                self.active.pop(key, None)

    def cell_levels(self, device: str) -> dict[int, int]:
        levels: dict[int, int] = {}
        for (_, dev, channel), level in self.active.items():
            n = cell_number(channel) if dev == device else None
            if n is not None:
                levels[n] = max(levels.get(n, 0), level)
        return levels


def _good(rec: Record, i: int | None) -> float | None:
    if i is None or rec.quality[i] != 0 or math.isnan(rec.values[i]):
        return None
    return rec.values[i]


def build_cell_table(
    reader: JournalReader,
    run: RunInfo,
    *,
    devices: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> CellExport:
    schemas = reader.schemas(run.run_id)
    layouts = {
        s.device: lay for s in schemas if (devices is None or s.device in devices) and (lay := _layout(s)) is not None
    }
    if not layouts:
        raise DaqError(
            f"run {run.run_id} recorded no cell voltages (channels cell<n>_v, usually from a BMS); "
            "there is no cell table to export"
        )
    alarms = AlarmState(reader.run_events(run.run_id))
    table = RunTable([c for c, _ in COLUMNS], [u for _, u in COLUMNS], {c: [] for c, _ in COLUMNS})
    cols = [table.data[c] for c, _ in COLUMNS]
    t0: int | None = None
    timebase = timebase_of(run.metadata)  # Unix Time: when it happened; Test Time: bench seconds
    polls = 0
    for rec in reader.iter_run_records(run.run_id, start_ns=start_ns, end_ns=end_ns, devices=list(layouts)):
        lay = layouts[rec.schema.device]
        t0 = min(run.started_ns, rec.t_ns) if t0 is None else t0
        polls += 1
        alarms.advance(rec.t_ns)
        cell_alarms = alarms.cell_levels(rec.schema.device)
        mask = _good(rec, lay.balance)
        level = _good(rec, lay.alarm_level)
        head = ((rec.t_ns - t0) / 1e9, timebase.unix_s(rec.t_ns), rec.cycle, rec.step, rec.schema.device)
        for n in range(1, lay.cells + 1):
            balancing = None if mask is None or n > 32 else (int(mask) >> (n - 1)) & 1
            row = (
                *head,
                n,
                _good(rec, lay.voltage.get(n)),
                _good(rec, lay.temperature.get(n)),
                balancing,
                cell_alarms.get(n, 0),
                None if level is None else int(level),
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
    if not polls:
        raise DaqError(f"run {run.run_id} has no cell readings in the selection; nothing was written")
    notes = ["run still in progress: exported what is recorded so far"] if run.status == "running" else []
    metadata = run_description(run, schemas, reader.path)
    metadata.update(
        {
            "format": "cell-level side table to the BDF export: long layout, one row per cell per poll",
            "layout": "long",
            "columns": [{"label": c, "unit": u} for c, u in COLUMNS],
            "cells_per_device": {d: lay.cells for d, lay in layouts.items()},
            "selection": {"from_utc": iso_utc(start_ns), "to_utc": iso_utc(end_ns)},
            "notes": notes,
        }
    )
    return CellExport(table, metadata, notes)


def write_cells(export: CellExport, out: Path, fmt: str) -> Path:
    """Write the cell table (CSV or Parquet) and its metadata sidecar; returns the sidecar's path."""
    out = Path(out)
    meta = dict(export.metadata, file=out.name)
    with atomic_path(out) as data_tmp:
        if fmt == "cells-csv":
            write_table_csv(export.table, data_tmp)
        else:
            write_table_parquet(export.table, data_tmp, meta)
        write_sidecar(meta, sidecar_path(out))
    return sidecar_path(out)
