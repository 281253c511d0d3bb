"""``daq sinks flush``: deliver a stopped journal's backlog to the bench file's sinks, without polling."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from daq.cli.journals import add_journal_args, open_run
from daq.config.loader import LoadedBench, load_bench
from daq.config.sinks import InfluxSinkConfig
from daq.errors import DaqError, JournalError
from daq.journal import DatabaseError, JournalReader
from daq.status import STATUS_KEY

RUNNING_IF_UPDATED_WITHIN_S = 10.0  # the bench writes its status every 2 s
EXIT_NOT_ALL_DELIVERED = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sinks", help="work with a bench's sinks without running the bench")
    actions = p.add_subparsers(dest="sinks_command", metavar="ACTION", required=True)
    f = actions.add_parser("flush", help="deliver what a stopped bench left in its journal to its sinks")
    f.add_argument("target", help="bench file (YAML), or a journal file (its latest run names the bench file)")
    f.add_argument("--journal", help="journal file (default: the bench file's)")
    f.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    f.set_defaults(func=cmd_flush)

    v = actions.add_parser("verify", help="check that every record of a run is in an InfluxDB sink's database")
    v.add_argument("run", nargs="?", default="latest", help="run id, unique prefix or 'latest' (default)")
    v.add_argument("--sink", required=True, help="name of an influxdb sink of the bench file")
    v.add_argument("--resend", action="store_true", help="write the missing records again, then check again")
    add_journal_args(v)
    v.set_defaults(func=cmd_verify)


def _is_journal(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _bench_and_journal(args: argparse.Namespace) -> tuple[LoadedBench, Path]:
    target = Path(args.target)
    if _is_journal(target):
        with JournalReader(target) as reader:
            runs = reader.runs()
        if not runs:
            raise JournalError(f"journal {target} holds no runs, so nothing names its bench file; pass the bench file")
        bench_file = runs[-1].metadata.get("bench_file")
        if not bench_file:
            raise JournalError(f"journal {target}: its latest run does not name a bench file; pass the bench file")
        return load_bench(bench_file), Path(args.journal or target)
    loaded = load_bench(target)
    return loaded, Path(args.journal) if args.journal else loaded.journal_path


def _refuse_if_running(reader: JournalReader) -> None:
    """Two processes forwarding one journal would fight over the cursors and the MQTT client id."""
    runs = reader.runs()
    if not runs or runs[-1].status != "running":
        return
    status = reader.run_value(runs[-1].run_id, STATUS_KEY) or {}
    age = time.time() - status.get("updated_unix_s", 0)
    if age < RUNNING_IF_UPDATED_WITHIN_S:
        raise DaqError(
            f"bench {runs[-1].bench_id} is running (run {runs[-1].run_id}, status {age:.0f} s old): its own sinks"
            " deliver the backlog; stop it first"
        )


async def flush(loaded: LoadedBench, journal_path: Path, *, timeout_s: float) -> list:
    """Run the bench file's sinks on the journal until everything in it is delivered or time is up."""
    from daq.sinks import build_sink
    from daq.sinks.drain import drain_sinks

    cfg = loaded.config
    try:
        with JournalReader(journal_path) as reader:
            _refuse_if_running(reader)
            record_seq, event_seq = reader.last_record_seq(), reader.last_event_seq()
    except DatabaseError as exc:
        raise JournalError(f"cannot read journal {journal_path}: {exc}") from exc
    sinks = [
        build_sink(s, bench_id=cfg.bench.id, journal_path=journal_path, where=f"{loaded.path}: sinks[{i}]({s.name})")
        for i, s in enumerate(cfg.sinks)
    ]
    tasks = [asyncio.create_task(s.run(), name=f"sink:{s.name}") for s in sinks]
    try:
        return await drain_sinks(sinks, record_seq=record_seq, event_seq=event_seq, timeout_for=lambda _: timeout_s)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def cmd_flush(args: argparse.Namespace) -> int:
    loaded, journal_path = _bench_and_journal(args)
    if not loaded.config.sinks:
        raise DaqError(f"{loaded.path}: has no sinks: section, so there is nothing to deliver to")
    if not journal_path.exists():
        raise JournalError(f"no journal at {journal_path}; pass --journal FILE")
    results = asyncio.run(flush(loaded, journal_path, timeout_s=args.timeout))
    for result in results:
        print(result.describe())
    return 0 if all(r.done for r in results) else EXIT_NOT_ALL_DELIVERED


def cmd_verify(args: argparse.Namespace) -> int:
    from daq.sinks import build_sink
    from daq.sinks.verify import verify_run

    reader, run = open_run(args, args.run)
    with reader:
        bench_file = args.bench or run.metadata.get("bench_file")
        if not bench_file:
            raise DaqError(f"run {run.run_id} does not name its bench file; pass --bench BENCH")
        loaded = load_bench(bench_file)
        configs = {s.name: (i, s) for i, s in enumerate(loaded.config.sinks)}
        if args.sink not in configs:
            known = ", ".join(configs) or "none"
            raise DaqError(f"{loaded.path}: no sink named {args.sink!r} (sinks: {known})")
        i, config = configs[args.sink]
        if not isinstance(config, InfluxSinkConfig):
            raise DaqError(
                f"sink {args.sink} is {config.kind}: a broker keeps no history to check against;"
                " verify works for influxdb sinks"
            )
        sink = build_sink(
            config, bench_id=loaded.config.bench.id, journal_path=reader.path, where=f"{loaded.path}: sinks[{i}]"
        )
        result = asyncio.run(verify_run(sink, reader, run, resend=args.resend))  # type: ignore[arg-type]
    if result.resent:
        print(f"wrote {result.resent} missing records again")
    print(result.describe())
    if not result.complete and not args.resend:
        print(f"write them again with: daq sinks verify {run.run_id} --sink {args.sink} --resend")
    return 0 if result.complete else EXIT_NOT_ALL_DELIVERED
