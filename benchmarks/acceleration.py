"""Simulated-time acceleration of a full bench, and the capacity the capacity test measures.

Run: ``python benchmarks/acceleration.py`` (about 3 minutes) or ``--smoke`` (about 20 s), from the
repository root. Prints markdown tables and writes ``benchmarks/results/acceleration.json``
(``results/smoke/`` with ``--smoke``).

Full bench: the CI bench (configs/ci_bench.yaml: simulated cycler over real Modbus TCP, poll
engine, runner, journal, all on one scaled clock in one process) with its time scale and poll
period overridden per case. Figures:

* acceleration: battery seconds the run covered (first to last record) per wall second. The
  scaled clock runs at ``time_scale`` by construction; what can fail is everything keeping up, so
  the table also gives the poll rate the case implies (time_scale / poll period, polls per wall
  second), the rate achieved, the polls the engine had to skip, and how late the runner ended
  the 10-minute rests (battery seconds past 600 s: the runner's reaction time scaled up).
* capacity: the discharge Ah of the capacity test's ``capacity_measurement`` step (1C to 3.0 V
  after a C/3 CC-CV charge) against the truth, the mean capacity of the simulated pack's series
  elements (the pack voltage decides both ends, so the average cell is what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daq.config.loader import load_bench  # noqa: E402
from daq.journal import JournalReader  # noqa: E402
from daq.runner import TestSession, prepare_test  # noqa: E402

CYCLES = REPO / "configs" / "profiles" / "ci_cycle_3x.yaml"
CAPACITY = REPO / "configs" / "profiles" / "capacity_test.yaml"
RESULTS = REPO / "benchmarks" / "results"


def bench_file(folder: Path, *, time_scale: float, poll_period_s: float) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "ci_bench.yaml").read_text())
    cfg["journal"]["path"] = str(folder / "journal.sqlite")
    cfg["simulation"]["time_scale"] = time_scale
    cfg["devices"][0]["poll_period_s"] = poll_period_s
    cfg["devices"][0]["regmap"] = str(REPO / "configs" / "regmaps" / "sim_cycler.yaml")
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def run_case(profile: Path, *, time_scale: float, poll_period_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="daq-accel-") as tmp:
        folder = Path(tmp)
        loaded = load_bench(bench_file(folder, time_scale=time_scale, poll_period_s=poll_period_s))
        truth: list[float] = []
        counter: list[float] = []  # the simulated cycler's own charge counter at the capacity step's ends
        session: TestSession

        def watch(kind: str, data: dict[str, Any]) -> None:
            if kind not in ("runner.step_started", "runner.step_ended"):
                return
            if kind == "runner.step_started":
                capacity_step = data["label"] in ("capacity discharge 1C", "discharge 1C to 3.0 V")
            else:
                capacity_step = "capacity_measurement" in data["tags"]
            if capacity_step:
                sim = session.bench.simulation
                truth.append(float(sim.pack.model.capacities_ah.mean()))
                counter.append(float(sim.cyclers["sim-cycler"].read("charge_ah")))

        session = TestSession(prepare_test(loaded, profile), metadata={"operator": "benchmark"}, on_event=watch)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run_id = await session.start()
        outcome = None
        try:
            outcome = await session.run()
        finally:
            await session.close(outcome)
        wall_s = time.perf_counter() - wall0
        cpu_s = time.process_time() - cpu0
        stats = session.bench.pollers["cycler-1"].stats
        with JournalReader(folder / "journal.sqlite") as reader:
            times = [r.t_ns for r in reader.iter_run_records(run_id)]
            events = reader.run_events(run_id)
    ended = [e.data for e in events if e.kind == "runner.step_ended"]
    rests = [e["duration_s"] - 600 for e in ended if e["label"] == "Rest for 10 minutes"]
    measured = [e["discharge_ah"] for e in ended if "capacity_measurement" in e["tags"]]
    battery_s = (times[-1] - times[0]) / 1e9
    row: dict[str, Any] = {
        "profile": profile.stem,
        "time_scale": time_scale,
        "poll_period_s": poll_period_s,
        "outcome": outcome.status if outcome else "failed",
        "reason": outcome.reason if outcome else "",
        "battery_h": round(battery_s / 3600, 2),
        "wall_s": round(wall_s, 1),
        "acceleration": round(battery_s / wall_s),
        "implied_polls_per_s": round(time_scale / poll_period_s, 1),
        "achieved_polls_per_s": round(stats.polls / wall_s, 1),
        "missed_polls": stats.missed,
        "cpu_pct": round(100 * cpu_s / wall_s),
    }
    if rests:
        row["rest_overrun_max_s"] = round(max(rests), 1)
    if measured and len(truth) >= 2:
        true_ah = (truth[-2] + truth[-1]) / 2  # the pack may age during the step
        moved_ah = counter[-2] - counter[-1]
        row["measured_ah"] = round(measured[-1], 3)
        row["true_ah"] = round(true_ah, 3)
        row["capacity_error_pct"] = round(100 * (measured[-1] / true_ah - 1), 2)
        row["cycler_counted_ah"] = round(moved_ah, 3)
        row["measurement_error_pct"] = round(100 * (measured[-1] / moved_ah - 1), 2)
    return row


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one case of each kind (about 20 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    speed_cases = [(2000, 20.0)] if args.smoke else [(500, 10.0), (1000, 20.0), (2000, 20.0), (4000, 30.0)]
    capacity_cases = [(2000, 20.0)] if args.smoke else [(2000, 20.0), (1000, 5.0)]
    speed = [asyncio.run(run_case(CYCLES, time_scale=s, poll_period_s=p)) for s, p in speed_cases]
    capacity = [asyncio.run(run_case(CAPACITY, time_scale=s, poll_period_s=p)) for s, p in capacity_cases]

    print("## Acceleration: ci_cycle_3x (3 x 1C/1C CC-CV) on the full simulated bench\n")
    columns = [
        "time_scale",
        "poll_period_s",
        "battery_h",
        "wall_s",
        "acceleration",
        "implied_polls_per_s",
        "achieved_polls_per_s",
        "missed_polls",
        "rest_overrun_max_s",
        "cpu_pct",
        "outcome",
    ]
    print("\n".join(table(speed, columns)))
    print("\n## Capacity: capacity_test (C/3 CC-CV charge, 1C discharge to 3.0 V) vs the pack's true capacity\n")
    columns = [
        "time_scale",
        "poll_period_s",
        "wall_s",
        "measured_ah",
        "true_ah",
        "capacity_error_pct",
        "cycler_counted_ah",
        "measurement_error_pct",
        "outcome",
    ]
    print("\n".join(table(capacity, columns)))
    print(
        "\nacceleration = battery seconds per wall second; rest_overrun = battery seconds a 600 s rest ran long "
        "(the runner's wake-up and command time, scaled up). true_ah = mean capacity of the series elements; "
        "capacity_error = measured vs that (the pack model's 1C discharge to 3.0 V ends about 0.5 % below SOC 0, "
        "so +0.5 % is the model, not the measurement); measurement_error = measured vs the charge the simulated "
        "cycler itself counted during the step (integration, step switching, end detection)."
    )
    out = RESULTS / "smoke" if args.smoke else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "acceleration", "smoke": args.smoke, "speed": speed, "capacity": capacity}
    (out / "acceleration.json").write_text(json.dumps(doc, indent=2))
    return 0 if all(r["outcome"] == "completed" for r in speed + capacity) else 1


if __name__ == "__main__":
    sys.exit(main())
