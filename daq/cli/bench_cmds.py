"""``daq run``, ``daq demo`` and ``daq sim``: run a bench, the demo bench, or only its simulators."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live

from daq.bench import Bench
from daq.cli.durations import add_duration_args, duration_wait
from daq.cli.live import is_interactive, progress_line, render
from daq.config.loader import LoadedBench, load_bench
from daq.errors import ConfigError
from daq.resources import demo_bench
from daq.service import SystemdNotifier
from daq.web.launch import add_http_arg, start_web, stop_web


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="poll a bench and record it until Ctrl-C or --duration")
    p.add_argument("config", help="bench file (YAML)")
    add_duration_args(p)
    p.add_argument("--journal", help="journal file (default: from the bench file)")
    p.add_argument("--quiet", action="store_true", help="no live view; one summary at the end")
    add_http_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the demo bench on simulated hardware (no lab needed)")
    add_duration_args(p)
    p.add_argument("--journal", help="journal file (default: journal/demo.sqlite)")
    p.add_argument("--quiet", action="store_true")
    add_http_arg(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run only the simulators of a bench file, for another client")
    p.add_argument("config", help="bench file with a simulation: section")
    add_duration_args(p)
    p.set_defaults(func=cmd_sim)


async def _until_stopped(wait: Callable[[], Awaitable[None]] | None, done: str) -> str:
    """Wait for ``wait`` (the duration) or SIGINT/SIGTERM; returns why we stopped (``done``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait(), name="wait:signal")]
    if wait is not None:
        waiters.append(asyncio.create_task(wait(), name="wait:duration"))
    try:
        _done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return "stopped by operator" if stop.is_set() else done


async def run_bench(
    loaded: LoadedBench,
    *,
    duration: argparse.Namespace,
    journal: str | None,
    quiet: bool,
    before_wait: Callable[[Bench], Awaitable[None]] | None = None,
    http: str | None = None,
) -> Bench:
    bench = Bench(loaded, journal_path=Path(journal) if journal else None)
    console = Console(soft_wrap=not is_interactive())  # no wrapping at 80 columns in a service log
    web = await start_web(bench, http)  # before the run starts: a port in use is a setup error
    try:
        await bench.start()
    except BaseException:
        await stop_web(web)
        raise
    service = SystemdNotifier.attach(bench)  # under systemd: READY=1, then watchdog pings while healthy
    wait, done = duration_wait(duration, bench.clock)
    reason = ""
    try:
        if before_wait is not None:
            await before_wait(bench)
        if quiet:
            reason = await _until_stopped(wait, done)
        elif is_interactive():
            with Live(render(bench), console=console, refresh_per_second=4, transient=False) as live:

                async def refresh() -> None:
                    while True:
                        live.update(render(bench))
                        await asyncio.sleep(0.25)

                refresher = asyncio.create_task(refresh(), name="live-view")
                try:
                    reason = await _until_stopped(wait, done)
                finally:
                    refresher.cancel()
        else:

            async def progress() -> None:
                while True:
                    await asyncio.sleep(5)
                    print(progress_line(bench), flush=True)

            printer = asyncio.create_task(progress(), name="progress")
            try:
                reason = await _until_stopped(wait, done)
            finally:
                printer.cancel()
    finally:
        if service is not None:
            service.stopping()
        await stop_web(web)
        await bench.stop(status="completed", reason=reason or "stopped")
    _summary(bench, console)
    return bench


def _summary(bench: Bench, console: Console) -> None:
    status, reason = bench.final_status
    style = "green" if status == "completed" else "bold red"
    console.print(
        f"run [bold]{bench.run_id}[/bold] [{style}]{status}[/{style}]"
        + (f" ({reason})" if reason and status != "completed" else "")
        + f": {bench.records_seen} records in {bench.journal.path}"
    )
    for name, poller in bench.pollers.items():
        s = poller.stats
        console.print(
            f"  {name}: {s.polls} polls, {s.good_polls} good, {s.timeouts} timeouts, {s.errors} errors,"
            f" {s.missed} missed" + (f" — last error: {s.last_error}" if s.last_error else "")
        )
    for drained in bench.sink_drain:  # one line each, never wrapped: scripts grep for them
        console.print(f"  {drained.describe()}", style=None if drained.done else "bold yellow", soft_wrap=True)


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_bench(args.config)
    asyncio.run(run_bench(loaded, duration=args, journal=args.journal, quiet=args.quiet, http=args.http))
    return 0


def demo_config_path() -> Path:
    return demo_bench()


async def _demo_drive(bench: Bench) -> None:
    """Give the demo something to show: discharge the simulated pack at 1C, then charge it back."""
    from daq.channels import CyclerMode
    from daq.cycler import CyclerCommand

    async def drive() -> None:
        cycler = next(iter(bench.cyclers.values()))
        sim = bench.loaded.config.simulation
        capacity = sim.pack.capacity_ah if sim else 27.0
        cells = sim.pack.series_cells if sim else 14
        while True:
            with contextlib.suppress(Exception):
                await cycler.apply(CyclerCommand(CyclerMode.CCCV, current_a=-capacity, voltage_v=3.0 * cells))
            await bench.clock.sleep(900)
            with contextlib.suppress(Exception):
                await cycler.apply(CyclerCommand(CyclerMode.CCCV, current_a=capacity / 2, voltage_v=4.2 * cells))
            await bench.clock.sleep(1800)

    if bench.cyclers:
        bench.add_task(drive(), "demo-drive")


def cmd_demo(args: argparse.Namespace) -> int:
    loaded = load_bench(demo_config_path())
    asyncio.run(
        run_bench(
            loaded, duration=args, journal=args.journal, quiet=args.quiet, before_wait=_demo_drive, http=args.http
        )
    )
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    loaded = load_bench(args.config)
    if loaded.config.simulation is None:
        raise ConfigError(f"{args.config}: has no simulation: section, so there is nothing to simulate")

    async def serve() -> None:
        bench = Bench(loaded)
        await bench.start_simulation()
        assert bench.simulation is not None
        for line in bench.simulation.describe():
            print(line, flush=True)
        try:
            await _until_stopped(*duration_wait(args, bench.clock))
        finally:
            await bench.simulation.stop()

    asyncio.run(serve())
    return 0
