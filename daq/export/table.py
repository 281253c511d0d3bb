"""A recorded run as columns: one row per record, one column per device channel.

Devices poll at their own instants, so a row carries the values of the device that produced it
and leaves the other devices' columns empty. Values whose quality is not good are left empty
and the row's ``quality`` column names them, so a reader never mistakes a timeout for a zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from daq.journal import JournalReader
from daq.records import Quality
from daq.timebase import timebase_of


@dataclass
class RunTable:
    columns: list[str]
    units: list[str]
    data: dict[str, list[object]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.data[self.columns[0]]) if self.columns else 0


TIME_COLUMNS = ["unix_time_s", "test_time_s", "run_id", "step", "cycle", "device", "quality"]


def _quality_note(quality: bytes, names: tuple[str, ...]) -> str:
    if not any(quality):
        return "good"
    if len(set(quality)) == 1:
        return Quality(quality[0]).label
    bad = [f"{names[i]}={Quality(q).label}" for i, q in enumerate(quality) if q]
    return ";".join(bad)


def build_run_table(
    reader: JournalReader,
    run_id: str,
    *,
    devices: list[str] | None = None,
    channels: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> RunTable:
    """Collect a run into columns. ``channels`` filters by channel name (any device)."""
    schemas = [s for s in reader.schemas(run_id) if devices is None or s.device in devices]
    columns = list(TIME_COLUMNS)
    units = ["s", "s", "", "", "", "", ""]
    slots: dict[str, list[tuple[int, str]]] = {}
    for schema in schemas:
        picked = []
        for i, ch in enumerate(schema.channels):
            if channels is not None and ch.name not in channels:
                continue
            col = f"{schema.device}.{ch.name}"
            columns.append(col)
            units.append(ch.unit)
            picked.append((i, col))
        slots[schema.device] = picked
    table = RunTable(columns, units, {c: [] for c in columns})
    data = table.data
    value_cols = columns[len(TIME_COLUMNS) :]
    t0: int | None = None
    timebase = timebase_of(reader.run(run_id).metadata)  # unix_time_s: when it happened; test_time_s: bench
    for rec in reader.iter_run_records(run_id, start_ns=start_ns, end_ns=end_ns, devices=[s.device for s in schemas]):
        if t0 is None:
            t0 = rec.t_ns
        data["unix_time_s"].append(timebase.unix_s(rec.t_ns))
        data["test_time_s"].append((rec.t_ns - t0) / 1e9)
        data["run_id"].append(rec.run_id)
        data["step"].append(rec.step)
        data["cycle"].append(rec.cycle)
        data["device"].append(rec.schema.device)
        data["quality"].append(_quality_note(rec.quality, rec.schema.names))
        mine = slots.get(rec.schema.device, [])
        filled = set()
        for i, col in mine:
            v = rec.values[i]
            data[col].append(v if rec.quality[i] == 0 and not math.isnan(v) else None)
            filled.add(col)
        for col in value_cols:
            if col not in filled:
                data[col].append(None)
    return table
