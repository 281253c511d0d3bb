"""Safety trip latency: from the simulated value crossing its trip level to the output going off.

Run: ``python benchmarks/trip_latency.py [--trips 100] [--cases cycler:0.1,jbd:0.5] [--bms-baud 9600]``
(``--smoke``: a few trips). Prints a markdown table; writes ``benchmarks/results/trip_latency.json``.

Set-up per case: the real bench (poll engine, safety monitor, action ladder, journal) at real time
against the simulated cycler over Modbus TCP, output on at 0 A. Per trip, after a random delay
(random phase against the poll schedule) one cell starts drifting so that the watched value
crosses the trip level a random 20-100 ms later. Both instants are simulator times:

- crossing: computed exactly from the drift (at 0 A the value moves only by the drift);
- output off: taken inside the simulator when the write that switches the output off lands.

Sources: ``cycler`` watches the cycler's pack voltage (pack_voltage_max_v), polled every period;
``jbd``, ``daly`` or ``modbus`` watch one cell voltage (cell_voltage_max_v, 1 mV resolution: the
crossing is where the reading rounds up to the level) of that simulated BMS on a pseudo-terminal
paced at ``--bms-baud``, polled every period, while the cycler is polled every 0.1 s on its own
link (the ladder may wait for one of its reads). The device limits are not pushed, so only the
software path is measured. Goal: p99 <= one poll period (of the device that sees the value) + 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from tests.integration.test_safety_support import safety_bench

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_MARGIN_S = 0.050
CELL = 3
PACK_MARGIN_V = 0.5  # trip level above the resting pack voltage
CELL_MARGIN_V = 0.05
BMS_RESOLUTION_V = 0.001
ON_AT_ZERO_AMPS = CyclerCommand(CyclerMode.CC, current_a=0.0)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


BMS_SOURCES = ("jbd", "daly", "modbus")
CYCLER_PERIOD_WITH_BMS_S = 0.1


@dataclass
class Case:
    source: str  # "cycler" or a BMS protocol
    period_s: float
    trips: int
    bms_baud: int = 9600
    latencies_s: list[float] = field(default_factory=list)
    wrong_trips: int = 0


class Rig:
    """One bench with the output-off instant captured inside the simulated cycler."""

    def __init__(self, bench: Bench, source: str, level: float) -> None:
        self.bench = bench
        self.source = source
        self.level = level
        self.on_bms = source in BMS_SOURCES
        self.device = "bms-1" if self.on_bms else "cycler-0"
        self.channel = f"cell{CELL}_v" if self.on_bms else "voltage_v"
        self.cycler = bench.simulation.cyclers["sim-0"]
        self.model = bench.simulation.pack.model
        self.off_at = math.nan
        self.off = asyncio.Event()
        unit = bench.simulation.servers["sim-0"].units[1]
        original = unit.write

        def write(table: str, address: int, values: Any) -> None:
            was_on = self.cycler.output_on
            original(table, address, values)
            if was_on and not self.cycler.output_on:
                self.off_at = self.cycler.pack.t_s  # the write synced the pack to now
                self.off.set()

        unit.write = write

    def value_now(self) -> tuple[float, float]:
        """(simulator time, true value of the watched quantity) at this instant."""
        t = self.cycler.pack.advance()
        value = self.model.cell_voltages_v[CELL - 1] if self.on_bms else self.model.pack_voltage_v
        return t, float(value)

    def reading(self) -> tuple[int, float]:
        rec = self.bench.latest.get(self.device)
        return (0, math.nan) if rec is None else (rec.t_ns, rec.get(self.channel))

    async def wait(self, predicate: Any, what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.002)

    async def rearm(self) -> None:
        """Fault cleared, a reading back under the level, latch acknowledged, output on at 0 A."""
        self.model.clear_faults()
        cleared_ns = time.time_ns()
        await self.wait(
            lambda: self.reading()[0] > cleared_ns and self.reading()[1] < self.level, "a reading under the level"
        )
        monitor = self.bench.safety
        assert monitor is not None
        if monitor.tripped:
            monitor.acknowledge("trip-latency benchmark")
        await self.bench.cyclers["cycler-0"].apply(ON_AT_ZERO_AMPS)
        await self.wait(lambda: self.cycler.output_on, "output on")

    async def trip_once(self, period_s: float, rng: random.Random) -> float:
        await self.rearm()
        await asyncio.sleep(rng.uniform(0.0, period_s))  # random phase against the poll schedule
        self.off.clear()
        delay_s = rng.uniform(0.02, 0.1)
        t0, v0 = self.value_now()
        # A reading rounds to the device's resolution: it shows the level half a step earlier.
        effective = self.level - (BMS_RESOLUTION_V / 2 if self.on_bms else 0.0)
        self.model.drift_cell_voltage(CELL, (effective - v0) / delay_s)
        crossing = t0 + delay_s
        await asyncio.wait_for(self.off.wait(), timeout=10 * period_s + 5)
        return self.off_at - crossing


async def run_case(case: Case, workdir: Path, seed: int) -> None:
    rng = random.Random(seed)
    kwargs: dict[str, Any] = {"time_scale": 1.0, "poll_period_s": case.period_s, "stale_check_period_s": 0.5}
    on_bms = case.source in BMS_SOURCES
    if on_bms:
        kwargs.update(
            bms=case.source,
            bms_poll_period_s=case.period_s,
            bms_baud=case.bms_baud,
            poll_period_s=CYCLER_PERIOD_WITH_BMS_S,
        )
    probe = _resting_values()
    if on_bms:
        level = round(probe["cell"] + CELL_MARGIN_V, 3)
        limits = {"cell_voltage_max_v": {"trip": level}}
    else:
        level = round(probe["pack"] + PACK_MARGIN_V, 3)
        limits = {"pack_voltage_max_v": {"trip": level}}
    bench = Bench(load_bench(safety_bench(workdir, limits, **kwargs)))
    await bench.start()
    try:
        rig = Rig(bench, case.source, level)
        await rig.wait(lambda: not math.isnan(rig.reading()[1]), "first reading", timeout_s=20)
        for _ in range(case.trips):
            case.latencies_s.append(await rig.trip_once(case.period_s, rng))
        assert bench.safety is not None
        case.wrong_trips = sum(
            1 for e in bench.safety.trip_reasons() if (e.device, e.channel) != (rig.device, rig.channel)
        )
    finally:
        await bench.stop()


def _resting_values() -> dict[str, float]:
    """The demo pack's resting pack and cell-3 voltage (the bench's simulated pack starts there)."""
    from simulators.models.pack import PackModel, PackParams

    model = PackModel(PackParams(series_cells=14, capacity_ah=27))
    return {"pack": model.pack_voltage_v, "cell": float(model.cell_voltages_v[CELL - 1])}


def row(case: Case) -> dict[str, Any]:
    ms = [x * 1000 for x in case.latencies_s]
    p = case.period_s
    p99 = percentile(ms, 99)
    goal_ms = (p + GOAL_MARGIN_S) * 1000
    return {
        "source": case.source + (f" @{case.bms_baud} baud" if case.source in BMS_SOURCES else ""),
        "poll_period_ms": round(p * 1000),
        "trips": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(ms), 1) if ms else math.nan,
        "p50_periods": round(percentile(ms, 50) / (p * 1000), 2),
        "p99_periods": round(p99 / (p * 1000), 2),
        "goal_p99_ms": round(goal_ms),
        "goal_met": bool(p99 <= goal_ms),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append(
            "| " + " | ".join("yes" if v is True else "no" if v is False else str(v) for v in r.values()) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=100, help="trips per case")
    parser.add_argument(
        "--cases",
        default="cycler:0.1,cycler:0.25,jbd:0.25,jbd:0.5",
        help="source:poll period in s, comma-separated; sources: cycler, jbd, daly, modbus",
    )
    parser.add_argument("--bms-baud", type=int, default=9600, help="line speed of the simulated BMS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a few trips per case (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS / "trip_latency.json", help="JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # every trip logs an error on purpose
    trips = 5 if args.smoke else args.trips
    cases = []
    for item in args.cases.split(","):
        source, _, period = item.partition(":")
        if source not in ("cycler", *BMS_SOURCES) or not period:
            parser.error(f"--cases: {item!r} is not source:period (sources: cycler, {', '.join(BMS_SOURCES)})")
        cases.append(Case(source, float(period), trips, args.bms_baud))
    started = time.perf_counter()
    for k, case in enumerate(cases):
        with tempfile.TemporaryDirectory(prefix="trip-latency-") as tmp:
            asyncio.run(run_case(case, Path(tmp), args.seed + k))
    rows = [row(c) for c in cases]
    print("Safety trip latency: value crosses the trip level (simulator time) -> simulator output off")
    print(markdown(rows))
    print(f"goal: p99 <= one poll period + {GOAL_MARGIN_S * 1000:.0f} ms; {time.perf_counter() - started:.0f} s")
    wrong = sum(c.wrong_trips for c in cases)
    if wrong:
        print(f"warning: {wrong} trip(s) on another channel than the one driven")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "trip_latency",
        "smoke": args.smoke,
        "rows": rows,
        "latencies_ms": {f"{c.source}@{c.period_s}s": [round(x * 1000, 3) for x in c.latencies_s] for c in cases},
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
