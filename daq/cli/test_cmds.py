"""``daq test start|pause|resume|abort|status``: run a test profile on a bench and control it.

``start`` runs in the foreground with the live view (plain progress lines when stdout is not a
terminal). Ctrl-C (or SIGTERM, or the end of ``--duration``) pauses the test: the cycler goes to
its safe state (read back), the run is marked ``paused`` and ``daq test resume RUN`` continues it.
Aborting is always explicit (``daq test abort RUN``), so a closed terminal never ends a long test.

``pause``, ``resume`` and ``abort`` from another terminal reach the running process through the
run's journal (``daq.runner.control``) and wait for its answer. ``resume`` of a run whose process
is gone (Ctrl-C, crash, ``kill -9``) continues it in this terminal after confirming the cycler is
safe. Exit codes: 0 completed or paused, 1 aborted, 2 bad input or refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from daq.cli.durations import add_duration_args, duration_wait
from daq.cli.journals import add_journal_args, candidate_journals, open_run
from daq.cli.live import is_interactive, render
from daq.config.loader import LoadedBench, load_bench
from daq.errors import ConfigError, DaqError, JournalError
from daq.journal import JournalReader, RunInfo
from daq.runner.control import JournalControl, current_user
from daq.runner.eta import PlanEta
from daq.runner.integrator import NS
from daq.runner.progress import hms, progress_lines, progress_text
from daq.runner.runner import Outcome
from daq.runner.session import (
    PreparedTest,
    StoredTest,
    TestSession,
    describe_phase,
    mqtt_command_listener,
    open_resume,
    prepare_test,
    read_stored_test,
)
from daq.runner.state import ABORTED, COMPLETED, TEST_KEY
from daq.runner.summary import format_summary_table
from daq.timebase import format_duration, run_times
from daq.web.launch import add_http_arg, start_web, stop_web

if TYPE_CHECKING:
    from daq.runner.mqtt_commands import MqttCommandListener

ACK_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    test = sub.add_parser("test", help="run a test profile on a bench (start, pause, resume, abort, status)")
    tsub = test.add_subparsers(dest="test_command", metavar="ACTION", required=True)

    p = tsub.add_parser("start", help="validate a profile against a bench and run it in the foreground")
    p.add_argument("bench", help="bench file (YAML)")
    p.add_argument("profile", help="test profile (YAML), e.g. configs/profiles/capacity_test.yaml")
    p.add_argument("--operator", default="", help="who runs the test (default: the login name)")
    p.add_argument("--pack-serial", default="", help="serial number of the pack under test")
    p.add_argument("--notes", default="", help="free text stored with the run")
    add_duration_args(p, action="pause the test")
    p.add_argument("--journal", help="journal file (default: from the bench file)")
    p.add_argument("--cycler", help="the cycler to drive, if the bench has several")
    p.add_argument("--series-cells", type=int, help="series cells of the pack (default: profile or simulated pack)")
    p.add_argument("--capacity-ah", type=float, help="pack capacity for C-rates (default: profile or simulated pack)")
    p.add_argument("--quiet", action="store_true", help="no live view or progress lines; the summary at the end")
    _add_mqtt_args(p)
    add_http_arg(p)
    p.set_defaults(func=cmd_start)

    for action, text in (("pause", "pause a running test (cycler to safe state)"), ("abort", "end a test for good")):
        p = tsub.add_parser(action, help=text)
        p.add_argument("run", help="run id, unique prefix, or 'latest'")
        p.add_argument("--reason", default="", help="why (stored with the run)")
        add_journal_args(p)
        p.set_defaults(func=cmd_command, action=action)

    p = tsub.add_parser("resume", help="resume a paused test, or continue one whose process ended or crashed")
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    add_journal_args(p)
    p.add_argument("--profile", help="profile file if it moved since the start (same steps)")
    add_duration_args(p, action="pause again")
    p.add_argument("--quiet", action="store_true")
    _add_mqtt_args(p)
    add_http_arg(p)
    p.set_defaults(func=cmd_resume)

    p = tsub.add_parser("status", help="where a test is: phase, cycle, step, cycle summary")
    p.add_argument("run", nargs="?", default="latest", help="run id, unique prefix, or 'latest' (default)")
    add_journal_args(p)
    p.set_defaults(func=cmd_status)


def _add_mqtt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mqtt-commands",
        metavar="SINK",
        help="also take pause/resume/abort over MQTT, through the bench's MQTT sink SINK (off by default)",
    )
    p.add_argument(
        "--mqtt-allow",
        metavar="USER",
        action="append",
        default=[],
        help="a broker username that may send MQTT commands (repeat for several); needed with --mqtt-commands",
    )


# -- start / resume in the foreground ---------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    loaded = load_bench(args.bench)
    prepared = prepare_test(
        loaded, args.profile, cycler=args.cycler, series_cells=args.series_cells, capacity_ah=args.capacity_ah
    )
    metadata = {
        "operator": args.operator or current_user(),
        "pack_serial": args.pack_serial,
        "notes": args.notes,
        "profile": prepared.profile.name,
    }
    console = Console(soft_wrap=True, highlight=False)
    session = TestSession(
        prepared,
        journal_path=Path(args.journal) if args.journal else None,
        metadata=metadata,
        on_event=_event_printer(console, quiet=args.quiet),
    )
    mqtt = _mqtt(args, loaded)
    return asyncio.run(_foreground(session, console, duration=args, quiet=args.quiet, mqtt=mqtt, http=args.http))


def _mqtt(args: argparse.Namespace, loaded: LoadedBench) -> MqttCommandListener | None:
    if not args.mqtt_commands:
        if args.mqtt_allow:
            raise ConfigError("--mqtt-allow needs --mqtt-commands SINK")
        return None
    if not args.mqtt_allow:
        raise ConfigError("--mqtt-commands needs at least one --mqtt-allow USER (who may control the test)")
    return mqtt_command_listener(loaded, args.mqtt_commands, set(args.mqtt_allow))


def cmd_resume(args: argparse.Namespace) -> int:
    reader, run = _open_test_run(args, args.run)
    with contextlib.closing(reader):
        stored = read_stored_test(reader, run)
        if stored.alive:
            return _send(reader, stored, "resume", reason="")
        if stored.alive is None and stored.state.phase in ("running", "paused"):
            raise DaqError(f"run {run.run_id} was started on host {stored.state.process.get('host')}; resume it there")
        console = Console(soft_wrap=True, highlight=False)
        session = open_resume(
            reader,
            stored,
            bench_path=args.bench,
            profile_path=args.profile,
            on_event=_event_printer(console, quiet=args.quiet),
        )
    mqtt = _mqtt(args, session.prepared.loaded)
    return asyncio.run(_foreground(session, console, duration=args, quiet=args.quiet, mqtt=mqtt, http=args.http))


def planned_duration(prepared: PreparedTest, time_scale: float) -> str:
    """``planned: about 8 h 10 min of bench time (1 h 38 min of wall clock at ×5)`` before a test starts."""
    eta = PlanEta.of_plan(prepared.plan, prepared.target.capacity_ah)
    if eta is None or eta.planned_s is None:
        return (
            "planned: no estimate (a step ends only on a condition whose time cannot be foreseen; see docs/profiles.md)"
        )
    text = f"planned: about {format_duration(eta.planned_s)} of bench time"
    if time_scale != 1.0:
        text += f" ({format_duration(eta.planned_s / time_scale)} of wall clock at ×{time_scale:g})"
    return text


async def _foreground(
    session: TestSession,
    console: Console,
    *,
    duration: argparse.Namespace,
    quiet: bool,
    mqtt: MqttCommandListener | None = None,
    http: str | None = None,
) -> int:
    web = await start_web(session.bench, http, runner_source=lambda: session.runner)
    try:
        run_id = await session.start()
    except BaseException:
        await stop_web(web)
        raise
    runner = session.runner
    assert runner is not None
    if mqtt is not None:
        session.enable_mqtt_commands(mqtt)
    journal = session.bench.journal.path
    if not quiet:
        console.print(
            f"run {run_id}: profile {session.prepared.profile.name} on bench {session.bench.bench_id}, "
            f"journal {journal}\n  from another terminal: daq test pause|resume|abort|status {run_id} "
            f"--journal {journal}",
            highlight=False,
        )
        console.print(planned_duration(session.prepared, session.bench.clock.time_scale), highlight=False)
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(name: str) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            runner.request_exit(f"{name} in the test terminal")
        else:
            print("stopping: waiting for the cycler's safe state to read back", file=sys.stderr, flush=True)

    for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        loop.add_signal_handler(sig, on_signal, name)
    wait, done = duration_wait(duration, session.bench.clock)
    if wait is not None:

        async def stop_after() -> None:
            await wait()
            runner.request_exit(done)

        session.bench.add_task(stop_after(), "test:duration")
    outcome: Outcome | None = None
    try:
        if quiet:
            outcome = await session.run()
        elif is_interactive():
            with Live(render(session.bench), console=console, refresh_per_second=4) as live:

                async def refresh() -> None:
                    while True:
                        live.update(render(session.bench, extra=lambda: progress_lines(runner.progress())))
                        await asyncio.sleep(0.25)

                refresher = asyncio.create_task(refresh(), name="test:live-view")
                try:
                    outcome = await session.run()
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
        else:

            async def progress() -> None:
                while True:
                    await asyncio.sleep(PROGRESS_EVERY_S)
                    print(time.strftime("%H:%M:%S ") + progress_text(runner.progress()), flush=True)

            printer = asyncio.create_task(progress(), name="test:progress")
            try:
                outcome = await session.run()
            finally:
                printer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await printer
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await stop_web(web)
        await session.close(outcome)
    assert outcome is not None
    for line in format_summary_table(runner.summaries):
        console.print(line, highlight=False)
    if outcome.status == COMPLETED:
        console.print(f"run {run_id}: completed", highlight=False)
        return 0
    if outcome.status == ABORTED:
        print(f"run {run_id}: aborted: {outcome.reason}", file=sys.stderr)
        return 1
    console.print(f"run {run_id}: paused ({outcome.reason}); continue with: daq test resume {run_id}", highlight=False)
    return 0


def _event_printer(console: Console, *, quiet: bool) -> Callable[[str, dict[str, Any]], None]:
    def show(kind: str, data: dict[str, Any]) -> None:
        if quiet:
            return
        line = _event_line(kind, data)
        if line:
            console.print(time.strftime("%H:%M:%S ") + line, highlight=False)

    return show


def _event_line(kind: str, d: dict[str, Any]) -> str:
    where = f"cycle {d.get('cycle')} step {d.get('step')} ({d.get('number')} {d.get('label', '')})".rstrip()
    if kind == "runner.step_started":
        return f"{where} started"
    if kind == "runner.step_ended":
        net = d.get("charge_ah", 0.0) - d.get("discharge_ah", 0.0)
        return f"{where} ended on {d.get('reason')} after {hms(d.get('duration_s'))}, {net:+.3f} Ah"
    if kind in ("runner.cycle_completed", "runner.cycle_incomplete"):
        ce = d.get("coulombic_efficiency")
        ce_text = "—" if ce is None else f"{100 * ce:.1f} %"
        done = "completed" if kind == "runner.cycle_completed" else "ended early"
        return (
            f"cycle {d.get('cycle')} {done}: charge {d['charge_ah']:.3f} Ah, discharge {d['discharge_ah']:.3f} Ah, "
            f"coulombic efficiency {ce_text}"
        )
    if kind == "runner.paused":
        safe = "safe state verified" if d.get("safe_state_verified") else "SAFE STATE NOT VERIFIED"
        return f"paused by {d.get('who')}: {d.get('reason')} ({safe})"
    if kind == "runner.resumed":
        return f"resumed by {d.get('who')}"
    if kind == "runner.aborted":
        return f"aborted by {d.get('who')}: {d.get('reason')}"
    if kind == "runner.completed":
        return f"test completed: {d.get('steps')} steps, {d.get('cycles')} cycle summaries"
    return ""


# -- commands to a running test ---------------------------------------------------------------------


def _open_test_run(args: argparse.Namespace, run: str) -> tuple[JournalReader, RunInfo]:
    """Like ``open_run``, but 'latest' means the latest *test* run."""
    if run != "latest":
        return open_run(args, run)
    best: tuple[JournalReader, RunInfo] | None = None
    for path in candidate_journals(args):
        if not path.exists():
            continue
        reader = JournalReader(path)
        tests = [r for r in reader.runs() if reader.run_value(r.run_id, TEST_KEY) is not None]
        if tests and (best is None or tests[-1].started_ns > best[1].started_ns):
            if best is not None:
                best[0].close()
            best = (reader, tests[-1])
        else:
            reader.close()
    if best is None:
        raise JournalError("no test run found; start one with daq test start BENCH PROFILE")
    return best


def cmd_command(args: argparse.Namespace) -> int:
    reader, run = _open_test_run(args, args.run)
    with contextlib.closing(reader):
        stored = read_stored_test(reader, run)
        if stored.alive:
            return _send(reader, stored, args.action, reason=args.reason)
        if args.action == "pause":
            raise DaqError(f"run {run.run_id} is not running ({describe_phase(stored)}); nothing to pause")
        return _abort_offline(reader, stored, reason=args.reason)


def _send(reader: JournalReader, stored: StoredTest, action: str, *, reason: str) -> int:
    run_id = stored.run.run_id
    with JournalControl(reader.path) as control:
        key = control.post(run_id, action, reason=reason, who=current_user())
        ack = control.wait_ack(run_id, key, timeout_s=ACK_TIMEOUT_S)
    if ack is None:
        raise DaqError(
            f"run {run_id}: the test process (pid {stored.state.process.get('pid')}) did not answer within "
            f"{ACK_TIMEOUT_S:g} s; is it hung? The command stays queued for it"
        )
    if not ack.get("ok"):
        raise DaqError(f"run {run_id}: {action} refused: {ack.get('message')}")
    print(f"run {run_id}: {ack.get('message')} (phase {ack.get('phase')})")
    return 0


def _abort_offline(reader: JournalReader, stored: StoredTest, *, reason: str) -> int:
    run_id = stored.run.run_id
    if stored.state.phase in (COMPLETED, ABORTED):
        raise DaqError(f"run {run_id} has already {stored.state.phase}")
    reason = reason or "aborted by operator"
    with JournalControl(reader.path) as control:
        state = dict(reader.run_value(run_id, "runner_state"))
        state.update(phase=ABORTED, reason=reason)
        control.set_value(run_id, "runner_state", state)
        control.end_run_offline(
            run_id,
            status="aborted",
            reason=reason,
            event="runner.aborted",
            data={"reason": reason, "who": current_user(), "safe_state_verified": None, "offline": True},
        )
    print(
        f"run {run_id}: aborted in the journal. Its test process was not running, so the cycler was not "
        "commanded: check that its output is off.",
    )
    return 0


# -- status -------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    reader, run = _open_test_run(args, args.run)
    with contextlib.closing(reader):
        stored = read_stored_test(reader, run)
        for line in status_lines(reader, stored):
            print(line)
    return 0


def status_lines(reader: JournalReader, stored: StoredTest) -> list[str]:
    run, test, state = stored.run, stored.test, stored.state
    times = run_times(run.started_ns, run.ended_ns, run.metadata)  # wall clock, bench time beside it
    started = datetime.fromtimestamp(times.wall_started_ns / NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if note := times.bench_note():
        started += f", {note}"
    who = ", ".join(
        f"{k.replace('_', ' ')} {test[k]}" for k in ("operator", "pack_serial") if test.get(k)
    )  # fmt: skip
    lines = [
        f"run {run.run_id} · bench {run.bench_id} · profile {test.get('profile_name')} · started {started}"
        + (f" ({who})" if who else ""),
        f"state: {describe_phase(stored)}",
    ]
    step = state.step
    if step is not None and not state.position.finished:
        last = _last_cycler_values(reader, run.run_id, test.get("target", {}).get("cycler", ""), step.started_ns)
        elapsed = step.elapsed_before_s
        if step.active_since_ns and last is not None and last[0] > step.active_since_ns:
            elapsed += (last[0] - step.active_since_ns) / NS
        cycles = f"cycle {step.cycle}" + (f" of {state.total_cycles}" if state.total_cycles else "")
        steps = f"step {step.step}" + (f" of {state.total_steps}" if state.total_steps else "")
        lines.append(
            f"progress: {cycles} · {steps} ({step.number} {step.label}) · step time {hms(elapsed)} · "
            f"test time {hms(state.test_time_s + elapsed)}"
        )
        if last is not None:
            when = datetime.fromtimestamp(last[0] / NS, tz=UTC).strftime("%H:%M:%S UTC")
            lines.append(f"latest: {last[1]:.3f} V {last[2]:+.2f} A at {when}")
    lines.append("cycles:")
    lines += ["  " + line for line in format_summary_table(stored.summaries)]
    return lines


def _last_cycler_values(
    reader: JournalReader, run_id: str, cycler: str, since_ns: int
) -> tuple[int, float, float] | None:
    last = None
    for record in reader.iter_run_records(run_id, start_ns=since_ns, devices=[cycler] if cycler else None):
        v, i = record.get("voltage_v"), record.get("current_a")
        if math.isfinite(v) and math.isfinite(i):
            last = (record.t_ns, v, i)
    return last
