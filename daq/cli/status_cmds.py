"""``daq status``: self-metrics of a running bench (live), or the final figures of a finished run.

Both come from the journal: a running bench refreshes its snapshot every 2 s; a run that ended
cleanly wrote a last one marked ``final`` with its totals (see daq.status).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from daq.cli.journals import add_journal_args, open_run
from daq.errors import DaqError
from daq.journal import RunInfo
from daq.status import STATUS_KEY
from daq.timebase import format_duration, run_times

STALE_AFTER_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="poll rates, errors, sink backlogs and alarms: live for a running bench, final for a finished run",
    )
    p.add_argument("run", nargs="?", default="latest", help="run id (default: the latest run)")
    p.add_argument("--json", action="store_true", help="print the raw status snapshot as JSON")
    add_journal_args(p)
    p.set_defaults(func=cmd_status)


def _line(name: str, fields: dict[str, Any], keys: list[str]) -> str:
    parts = [f"{k}={fields[k]}" for k in keys if k in fields and fields[k] not in ("", None)]
    return f"  {name:<16} " + "  ".join(parts)


def _headline(run: RunInfo, status: dict[str, Any]) -> str:
    """Whether these are live figures of a running bench or the final figures of a finished run."""
    head = f"bench {status['bench']}  run {run.run_id}"
    if run.status == "running":
        age = time.time() - status.get("updated_unix_s", 0)
        if age > STALE_AFTER_S:
            state = f"running? (no update for {age:.0f} s: is the daq process alive?)"
            return f"{head}  {state}  records {status['records']}"
        return f"{head}  running (live, updated {age:.0f} s ago)  records {status['records']}"
    times = run_times(run.started_ns, run.ended_ns, run.metadata)
    ended = _utc(times.wall_ended_ns)
    took = "" if times.wall_s is None else f", took {format_duration(times.wall_s)}"
    bench = f", {times.bench_note()}" if times.bench_note() else ""
    reason = f" ({run.reason})" if run.reason else ""
    if status.get("final"):
        label = "final figures"
    else:  # a run that ended without its final snapshot (killed, or recorded by an older version)
        label = f"last figures written while it ran, at {_utc(int(status.get('updated_unix_s', 0) * 1e9))}"
    return f"{head}  finished: {run.status}{reason} at {ended}{took}{bench}\n{label}: records {status['records']}"


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_status(args: argparse.Namespace) -> int:
    reader, run = open_run(args, args.run)
    with reader:
        status = reader.run_value(run.run_id, STATUS_KEY)
    if status is None:
        raise DaqError(f"run {run.run_id} has no status yet (it is written every 2 s while the bench runs)")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(_headline(run, status))
    if status.get("journal", {}).get("error"):
        print(f"  JOURNAL ERROR: {status['journal']['error']}")
    print("devices:")
    for name, dev in status.get("devices", {}).items():
        print(_line(name, dev, ["quality", "poll_rate_hz", "polls", "timeouts", "errors", "missed", "last_error"]))
    for section in ("sinks", "safety", "runner"):
        if section in status:
            print(f"{section}:")
            value = status[section]
            if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
                for name, fields in value.items():
                    print(_line(name, fields, list(fields)))
            else:
                print(f"  {json.dumps(value)}")
    return 0
