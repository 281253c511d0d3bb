"""Poll rate of K simulated cyclers: the project's poll engine next to a bare pymodbus loop.

Run: ``python benchmarks/poll_rate.py [-k 10] [--seconds 5]`` from the repository root. In one
run, against the same simulators (served from a separate process): requests/s of a bare pymodbus
loop and of the project's engine polling as fast as possible and their ratio; the engine with
the journal on (records committed per second); and the bench polling every device at 10 Hz
(poll-start jitter p50/p99, missed polls). The full suite is ``python -m benchmarks.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import blocks_of, workdir
from benchmarks.scenarios import poll_floor, scheduled
from benchmarks.simfarm import SimDevice, SimFarm
from daq.journal import Journal
from drivers.modbus.regmap import load_regmap


async def measure(k: int, seconds: float) -> dict[str, float]:
    blocks = blocks_of(load_regmap(poll_floor.CYCLER_REGMAP))
    warmup_s = min(1.0, seconds / 4)
    with SimFarm([SimDevice(f"sim-{i}", "cycler") for i in range(k)]) as farm, workdir("pollrate") as folder:
        ports = list(farm.ports.values())
        bare = await poll_floor._bare(ports, blocks, seconds, warmup_s)
        engine = await poll_floor._engine(ports, seconds, warmup_s, None)
        journal = Journal(folder / "journal.sqlite")
        journal.open()
        try:
            journaled = await poll_floor._engine(ports, seconds, warmup_s, journal)
        finally:
            journal.close()
    at_10_hz = await scheduled.run_case(f"{k}@10", smoke=seconds < 2)
    n = len(blocks)
    bare_rps = bare["polls"] * n / bare["wall_s"]
    engine_rps = engine["polls"] * n / engine["wall_s"]
    return {
        "bare pymodbus requests/s": bare_rps,
        "poll engine requests/s": engine_rps,
        "ratio engine / bare": engine_rps / bare_rps,
        "journal records committed/s (engine, as fast as possible)": journaled["committed"] / journaled["wall_s"],
        "10 Hz: achieved polls/s per device": at_10_hz["achieved_hz_per_device"],
        "10 Hz: poll-start jitter p50 (ms)": at_10_hz["jitter_p50_ms"],
        "10 Hz: poll-start jitter p99 (ms)": at_10_hz["jitter_p99_ms"],
        "10 Hz: missed polls": at_10_hz["missed_polls"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--devices", type=int, default=10, help="simulated cyclers (default 10)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (default 5)")
    parser.add_argument("--smoke", action="store_true", help="2 devices, 0.5 s per measurement")
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    k, seconds = (2, 0.5) if args.smoke else (args.devices, args.seconds)
    figures = asyncio.run(measure(k, seconds))
    print(f"{k} simulated cyclers (3 requests per poll), {seconds:g} s per measurement\n")
    print("| figure | value |\n|---|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:,.2f} |" if isinstance(value, float) else f"| {name} | {value:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
