"""``daq check`` (compliance of a recorded run) and ``daq ack`` (acknowledge a latched trip)."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import time
from typing import Any

from pydantic import ValidationError

from daq.cli.journals import add_journal_args, open_run
from daq.errors import ConfigError, DaqError
from daq.journal import JournalEvent, JournalReader, RunInfo
from daq.safety import CheckResult, LimitSet, check_run, format_table, load_limits
from daq.safety.ack import (
    ACK_REQUEST,
    ACK_RESULT,
    ACKNOWLEDGED_KIND,
    AckRequestReader,
    append_events,
    latched_trips,
    request_acknowledge,
)
from daq.safety.events import ACKNOWLEDGED, AlarmEvent
from daq.safety.step_limits import run_switches
from daq.timebase import Timebase

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_NOT_CONFIRMED = 1

# Journal events ``daq check`` lists next to its verdict: what the live monitor saw and did.
_LISTED_KINDS = ("alarm.", "safety.safe_state")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a recorded run against a limit set: pass (exit 0) or every excursion (exit 1)",
        description="Re-evaluate a recorded run with the live monitor's rules and print a verdict.",
    )
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.add_argument("--limits", help="limit-set file (default: the limit set the run was recorded with)")
    p.add_argument("--strict", action="store_true", help="fail on warning-level excursions too")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_journal_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "ack",
        help="acknowledge the latched safety trips of a run (recorded with who, when and a note)",
        description="Release a latched trip. The running bench applies it and answers; this waits for the answer.",
    )
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.add_argument("--who", help="who acknowledges (default: the login name)")
    p.add_argument("--note", default="", help="why it is safe to continue, e.g. 'cell 3 replaced'")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the running bench to answer")
    add_journal_args(p)
    p.set_defaults(func=cmd_ack)


# --- daq check ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    reader, run = open_run(args, args.run)
    with reader:
        events = reader.run_events(run.run_id)
        limits, source = _limits_for(args.limits, events, run)
        switches, notes = run_switches(events, limits, recorded=not args.limits)
        result = check_run(
            reader.iter_run_records(run.run_id),
            limits,
            strict=args.strict,
            step_names=_step_names(reader, run),
            switches=switches,
        )
    if result.records == 0:
        raise DaqError(f"run {run.run_id} has no records; nothing to check")
    listed = [e for e in events if e.kind.startswith(_LISTED_KINDS)]
    if args.json:
        out = {
            "run": run.run_id,
            "status": run.status,
            "reason": run.reason,
            "limits_file": source,
            "notes": notes,
            **result.to_json(),
            "recorded_alarms": [_event_json(e, result) for e in listed],
        }
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        status = run.status + (f" ({run.reason})" if run.reason else "")
        print(f"run {run.run_id}: {status}; limits from {source}")
        for note in notes:
            print(f"note: {note}")
        timebase = Timebase.of_run(run.metadata)
        scale = float(run.metadata.get("time_scale", 1.0))
        wall_start = None if timebase is None else timebase.wall_ns(result.start_ns)
        print(format_table(result, wall_start_ns=wall_start, time_scale=scale))
        print(_alarm_lines(listed, result))
    return EXIT_PASS if result.passed else EXIT_FAIL


def _limits_for(path: str | None, events: list[JournalEvent], run: RunInfo) -> tuple[LimitSet, str]:
    if path:
        return load_limits(path), path
    recorded = [e for e in events if e.kind == "safety.limits"]
    if not recorded:
        raise DaqError(f"run {run.run_id} was recorded without safety limits; pass --limits FILE")
    data = recorded[-1].data
    try:
        return LimitSet.model_validate(data["limits"]), f"the run's journal ({data.get('file', '?')})"
    except (KeyError, ValidationError) as exc:
        raise ConfigError(
            f"run {run.run_id}: the recorded limit set cannot be read ({exc}); pass --limits FILE"
        ) from exc


def _step_names(reader: JournalReader, run: RunInfo) -> dict[int, str] | None:
    """Step number -> profile step name, as the runner stores it in the run's kv (``step_names``)."""
    names = reader.run_value(run.run_id, "step_names")
    if not isinstance(names, dict):
        return None
    return {int(k): str(v) for k, v in names.items()}


def _offset_s(t_ns: int, result: CheckResult) -> float:
    return (t_ns - result.start_ns) / 1e9


def _event_json(event: JournalEvent, result: CheckResult) -> dict[str, Any]:
    data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.data.items()}
    t_s = _offset_s(event.t_ns, result)
    return {"seq": event.seq, "t_ns": event.t_ns, "t_s": t_s, "kind": event.kind, "data": data}


def _alarm_lines(events: list[JournalEvent], result: CheckResult) -> str:
    if not events:
        return "recorded alarm events: none"
    lines = [f"recorded alarm events ({len(events)}):"]
    for e in events:
        d = e.data
        if e.kind == "safety.safe_state":
            text = "safe state: " + ", ".join(f"{name} {c.get('how', '?')}" for name, c in d.get("cyclers", {}).items())
        elif e.kind == ACK_REQUEST:
            text = f"acknowledge requested by {d.get('who', '?')}" + (f": {d['note']}" if d.get("note") else "")
        else:
            text = str(d.get("message", ""))
            if e.kind == ACKNOWLEDGED_KIND and d.get("note"):
                text += f" ({d['note']})"
        lines.append(f"  {_offset_s(e.t_ns, result):>10.3f} s  {e.kind:<26} {text}")
    return "\n".join(lines)


# --- daq ack -----------------------------------------------------------------------------------


def cmd_ack(args: argparse.Namespace) -> int:
    who = args.who if args.who is not None else getpass.getuser()
    if not who.strip():
        raise DaqError("--who must name who acknowledges (it is recorded in the journal)")
    reader, run = open_run(args, args.run)
    with reader:
        events = reader.run_events(run.run_id)
        path = reader.path
    if not any(e.kind == "safety.limits" for e in events):
        print(f"run {run.run_id} was recorded without a safety monitor: nothing to acknowledge")
        return 0
    if run.status == "running":
        return _ack_running(path, run, who, args.note, args.wait)
    return _ack_finished(path, run, events, who, args.note)


def _ack_running(path: Any, run: RunInfo, who: str, note: str, wait_s: float) -> int:
    seq = request_acknowledge(path, run.run_id, who=who, note=note)
    print(f"acknowledgement by {who} recorded for run {run.run_id} (event {seq}); waiting for the bench")
    answers = AckRequestReader(path, run.run_id)
    deadline = time.monotonic() + wait_s
    while (answer := answers.answer(seq)) is None:
        if time.monotonic() > deadline:
            print(
                f"warning: the bench did not answer within {wait_s:g} s; is it running? The request stays in"
                " the journal and is applied when the bench reads it (also after a resume)."
            )
            return EXIT_NOT_CONFIRMED
        time.sleep(0.1)
    if not answer.get("acknowledged"):
        print("nothing was latched: no trip to acknowledge")
    else:
        print(f"acknowledged {answer['acknowledged']} trip(s); the bench may switch outputs on again")
    if answer.get("still_latched"):
        print("warning: a trip is still latched (it tripped again); check the bench before continuing")
    return 0


def _ack_finished(path: Any, run: RunInfo, events: list[JournalEvent], who: str, note: str) -> int:
    """No bench holds the latch of a run that is not running: record the acknowledgement directly."""
    now = time.time_ns()
    latched = latched_trips(events)
    request = {"who": who, "note": note, "requested_ns": now, "run_status": run.status}
    (seq,) = append_events(path, run.run_id, [(now, ACK_REQUEST, request)])
    rows: list[tuple[int, str, dict[str, Any]]] = []
    for trip in latched:
        ack = AlarmEvent(
            t_ns=now,
            kind=ACKNOWLEDGED,
            limit=trip.limit,
            level=trip.level,
            device=trip.device,
            channel=trip.channel,
            value=trip.value,
            threshold=trip.threshold,
            message=f"{trip.limit} trip on {trip.device} {trip.channel} acknowledged by {who} after the run ended",
            who=who,
        )
        rows.append((now, ACKNOWLEDGED_KIND, {**ack.to_dict(), "note": note, "request_seq": seq}))
    answer = {"request_seq": seq, "who": who, "note": note, "acknowledged": len(latched), "still_latched": False}
    rows.append((now, ACK_RESULT, answer))
    append_events(path, run.run_id, rows)
    if latched:
        print(f"run {run.run_id} is {run.status}: acknowledged {len(latched)} trip(s) by {who}")
    else:
        print(f"run {run.run_id} is {run.status}: nothing was latched; acknowledgement by {who} recorded")
    return 0
