"""``daq runs`` and ``daq export``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from daq.cli.journals import add_journal_args, candidate_journals, open_run
from daq.errors import DaqError
from daq.export import bdf, cells
from daq.export.table import build_run_table
from daq.export.writers import WRITERS, ExportError
from daq.journal import JournalReader, RunInfo
from daq.timebase import format_duration, run_times, timebase_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list recorded runs")
    add_journal_args(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("export", help="export a run to CSV, Parquet, Battery Data Format or a cell table")
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.add_argument(
        "--format",
        choices=[*sorted(WRITERS), *bdf.FORMATS, *cells.FORMATS],
        default="csv",
        help="csv/parquet: every channel; bdf-csv/bdf-parquet: Battery Data Format (*.bdf.csv, *.bdf.parquet)"
        " with a metadata sidecar; cells-csv/cells-parquet: one row per cell per BMS poll",
    )
    p.add_argument("--out", required=True, help="output file")
    p.add_argument(
        "--device", action="append", help="only this device (repeatable); for bdf-*: the cycler to take V and I from"
    )
    p.add_argument("--channel", action="append", help="only this channel name (repeatable; csv and parquet)")
    p.add_argument(
        "--from", dest="start", help="start, wall-clock time in ISO 8601 (e.g. 2026-11-25T10:00:00Z), as in Unix Time"
    )
    p.add_argument("--to", dest="end", help="end, wall-clock time in ISO 8601")
    add_journal_args(p)
    p.set_defaults(func=cmd_export)


def _fmt_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_runs(args: argparse.Namespace) -> int:
    for path in candidate_journals(args):
        with JournalReader(path) as reader:
            runs = reader.runs()
        print(f"{path}: {len(runs)} run(s)")
        if runs:
            print(
                f"  {'run id':<34} {'started (UTC)':<20} {'ended (UTC)':<20} {'took':<14} {'status':<12}"
                f" {'records':>8}  bench time"
            )
        for r in runs:
            times = run_times(r.started_ns, r.ended_ns, r.metadata)
            took = "-" if times.wall_s is None else format_duration(times.wall_s)
            print(
                f"  {r.run_id:<34} {_fmt_time(times.wall_started_ns):<20} {_fmt_time(times.wall_ended_ns):<20}"
                f" {took:<14} {r.status:<12} {r.records:>8}  {times.bench_note() or 'real time'}"
            )
    return 0


def parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DaqError(f"time {text!r} is not ISO 8601; use e.g. 2026-11-25T10:00:00Z") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def _bench_ns(run: RunInfo, wall_ns: int | None) -> int | None:
    """--from/--to are wall-clock times (the exports' Unix Time); records are stamped in bench time."""
    return None if wall_ns is None else timebase_of(run.metadata).bench_ns(wall_ns)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format in bdf.FORMATS or args.format in cells.FORMATS:
        return _export_bdf_or_cells(args)
    reader, run = open_run(args, args.run)
    with reader:
        table = build_run_table(
            reader,
            run.run_id,
            devices=args.device,
            channels=args.channel,
            start_ns=_bench_ns(run, parse_time(args.start)),
            end_ns=_bench_ns(run, parse_time(args.end)),
        )
    if table.rows == 0:
        raise DaqError(f"run {run.run_id} has no records in the selection; nothing was written")
    WRITERS[args.format](table, Path(args.out))
    note = " (run still in progress: exported what is recorded so far)" if run.status == "running" else ""
    print(f"wrote {table.rows} rows, {len(table.columns)} columns of run {run.run_id} to {args.out}{note}")
    return 0


def _export_bdf_or_cells(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.channel:
        raise DaqError(f"--channel applies to csv and parquet; {args.format} has a fixed set of columns")
    if args.format in bdf.FORMATS:
        bdf.check_out_name(out, args.format)
        if args.device and len(args.device) > 1:
            raise DaqError(f"{args.format} takes voltage and current from one device; give --device once")
    start, end = parse_time(args.start), parse_time(args.end)
    reader, run = open_run(args, args.run)
    start, end = _bench_ns(run, start), _bench_ns(run, end)
    with reader:
        if args.format in bdf.FORMATS:
            cycler = args.device[0] if args.device else None
            export = bdf.build_bdf_table(reader, run, cycler=cycler, start_ns=start, end_ns=end)
        else:
            export = cells.build_cell_table(reader, run, devices=args.device, start_ns=start, end_ns=end)
    try:
        if args.format in bdf.FORMATS:
            sidecar = bdf.write_bdf(export, out, args.format)
        else:
            sidecar = cells.write_cells(export, out, args.format)
    except OSError as exc:  # the temporary file itself could not be created (disk full, read-only)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}; nothing was left under that name") from exc
    table = export.table
    print(f"wrote {table.rows} rows, {len(table.columns)} columns of run {run.run_id} to {out} (metadata: {sidecar})")
    for note in export.notes:
        print(f"note: {note}")
    return 0
