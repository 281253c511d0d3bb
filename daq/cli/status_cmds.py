"""``daq status``: self-metrics of a running (or the last) bench, read from its journal."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from daq.cli.journals import add_journal_args, open_run
from daq.errors import DaqError
from daq.status import STATUS_KEY

STALE_AFTER_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show poll rates, errors, sink backlogs and alarms of a running bench")
    p.add_argument("run", nargs="?", default="latest", help="run id (default: the latest run)")
    p.add_argument("--json", action="store_true", help="print the raw status snapshot as JSON")
    add_journal_args(p)
    p.set_defaults(func=cmd_status)


def _line(name: str, fields: dict[str, Any], keys: list[str]) -> str:
    parts = [f"{k}={fields[k]}" for k in keys if k in fields and fields[k] not in ("", None)]
    return f"  {name:<16} " + "  ".join(parts)


def cmd_status(args: argparse.Namespace) -> int:
    reader, run = open_run(args, args.run)
    with reader:
        status = reader.run_value(run.run_id, STATUS_KEY)
    if status is None:
        raise DaqError(f"run {run.run_id} has no status yet (it is written every 2 s while the bench runs)")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    age = time.time() - status.get("updated_unix_s", 0)
    state = run.status
    if state == "running" and age > STALE_AFTER_S:
        state = f"running? (no update for {age:.0f} s: is the daq process alive?)"
    print(f"bench {status['bench']}  run {run.run_id}  {state}  records {status['records']}")
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
