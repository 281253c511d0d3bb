"""Live terminal view of a running bench: latest values per device, poll health, run status."""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from daq.bench import Bench
from daq.channels import CELL_VOLTAGE_RE, CURRENT, DEGC, CyclerMode, current_direction
from daq.records import Quality, Record

# Channels worth a glance, in display order; a BMS's cells are summarised as min/max/spread.
HEADLINE = (
    "voltage_v",
    "current_a",
    "power_w",
    "soc_pct",
    "charge_ah",
    "energy_wh",
    "temperature_c",
    "mode",
    "output_on",
)


MODE_NAMES = {m.value: m.name for m in CyclerMode}
CELL_TEMP_RE = re.compile(r"^temp\d+_c$")


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    text = (
        f"{value:.0f}" if unit == "" and value.is_integer() else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    )
    return f"{text} {unit}".strip()


def _device_rows(rec: Record) -> list[tuple[str, str]]:
    schema = rec.schema
    rows: list[tuple[str, str]] = []
    for name in HEADLINE:
        i = schema.index.get(name)
        if i is not None:
            val = rec.values[i] if rec.quality[i] == 0 else math.nan
            if name == "mode" and not math.isnan(val) and int(val) in MODE_NAMES:
                rows.append((name, MODE_NAMES[int(val)]))
            elif name == CURRENT and not math.isnan(val):  # the sign alone is easy to misread
                rows.append((name, f"{_fmt(val, schema.channels[i].unit)} {current_direction(val)}"))
            else:
                rows.append((name, _fmt(val, schema.channels[i].unit)))
    cells = [
        rec.values[i] for i, c in enumerate(schema.channels) if CELL_VOLTAGE_RE.match(c.name) and rec.quality[i] == 0
    ]
    if cells:
        rows.append(
            (
                "cells",
                f"{len(cells)}: {min(cells):.3f}–{max(cells):.3f} V (spread {1000 * (max(cells) - min(cells)):.0f} mV)",
            )
        )
    temps = [rec.values[i] for i, c in enumerate(schema.channels) if CELL_TEMP_RE.match(c.name) and rec.quality[i] == 0]
    if temps:
        rows.append(("temps", f"{min(temps):.1f}–{max(temps):.1f} {DEGC}"))
    return rows


def render(bench: Bench, extra: Callable[[], list[str]] | None = None) -> Group:
    elapsed_s = (bench.clock.wall_ns() - bench.started_ns) / 1e9 if bench.started_ns else 0.0
    scale = bench.clock.time_scale
    wall = f" ({_hms(elapsed_s / scale)} wall) · time ×{scale:g}" if scale != 1 else ""
    title = f"bench {bench.bench_id} · run {bench.run_id} · {_hms(elapsed_s)} bench time{wall}"
    table = Table(title=title, expand=False)
    table.add_column("device")
    table.add_column("status")
    table.add_column("channel")
    table.add_column("value", justify="right")
    for name, poller in bench.pollers.items():
        rec = bench.latest.get(name)
        stats = poller.stats
        if rec is None:
            status = Text("waiting", style="yellow")
            rows: list[tuple[str, str]] = []
        else:
            worst = max(rec.quality) if rec.quality else 0
            status = Text(Quality(worst).label, style="green" if worst == 0 else "red")
            rows = _device_rows(rec)
        health = Text(f"{stats.polls} polls, {stats.timeouts} timeouts, {stats.errors} errors", style="dim")
        rows = rows or [("", "")]
        left = [(Text(name, style="bold"), status), (Text(""), health)]
        for k, (ch, val) in enumerate(rows):
            dev_cell, status_cell = left[k] if k < len(left) else (Text(""), Text(""))
            table.add_row(dev_cell, status_cell, ch, val)
        if len(rows) == 1:
            table.add_row("", health, "", "")
        table.add_section()
    lines = [Text(line) for line in (extra() if extra else [])]
    return Group(table, *lines)


def _hms(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def progress_line(bench: Bench) -> str:
    parts = []
    for name, poller in bench.pollers.items():
        rec = bench.latest.get(name)
        v = rec.get("voltage_v") if rec else math.nan
        i = rec.get("current_a") if rec else math.nan
        direction = "" if math.isnan(i) else f" {current_direction(i)}"
        parts.append(f"{name}: {v:.3f} V {i:+.2f} A{direction} ({poller.stats.polls} polls)")
    return time.strftime("%H:%M:%S ") + " | ".join(parts)


def is_interactive() -> bool:
    return sys.stdout.isatty()
