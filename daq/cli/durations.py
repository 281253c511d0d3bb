"""Parse human durations: ``30s``, ``5m``, ``1.5h``, ``2d``, or plain seconds."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable

from daq.clock import Clock

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1.5h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_duration_args(p: argparse.ArgumentParser, *, action: str = "stop") -> None:
    """``--duration`` (wall-clock time) and ``--bench-duration`` (bench time), one or the other."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--duration",
        type=parse_duration,
        metavar="TIME",
        help=f"{action} after this much wall-clock time (real time, as on your watch), e.g. 15s, 30m, 2h",
    )
    group.add_argument(
        "--bench-duration",
        type=parse_duration,
        metavar="TIME",
        help=f"{action} after this much bench time (battery time; a simulated bench with time_scale N"
        " lives N bench seconds per wall second), e.g. 8h",
    )


def duration_wait(args: argparse.Namespace, clock: Clock) -> tuple[Callable[[], Awaitable[None]] | None, str]:
    """What to wait on for the run's end, and how to say it ended; (None, '') when it runs until stopped."""
    wall_s = getattr(args, "duration", None)
    bench_s = getattr(args, "bench_duration", None)
    if wall_s is not None:
        return (lambda: asyncio.sleep(wall_s)), f"--duration {wall_s:g} s (wall clock) reached"
    if bench_s is not None:
        return (lambda: clock.sleep(bench_s)), f"--bench-duration {bench_s:g} s (bench time) reached"
    return None, ""
