"""A recorded simulated cycle-life run for the export and report tests.

A real bench (simulated cycler over Modbus TCP, journal on disk) is driven through a short
cycle-life program by hand: rest and a discharge to empty (cycle 0), then ``cycles`` x (CC-CV
charge, rest, CC discharge to a voltage, rest), stamping running step numbers and cycles and
journaling ``runner.step_started`` as the test runner does. A stand-in BMS task samples the
same simulated pack (cell voltages, temperatures, SOC, balancing) and feeds its records through
``bench.handle_record``, the path a BMS poller uses, until the bench has BMS devices of its own.
A warning on one cell is journaled as the safety monitor would (``alarm.raised`` /
``alarm.cleared``), and the runner's per-cycle summary is left out on purpose so the exports
must count capacity themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.journal import Journal
from daq.records import Channel, DeviceSchema, Record
from tests.helpers import sim_bench, wait_until

SERIES = 14
CAPACITY_AH = 27.0  # the demo pack, so configs/limits/demo_nmc_14s.yaml applies
CURRENT_A = 27.0  # 1C: a half cycle takes about an hour of simulated time
CHARGE_TO_V = 4.15 * SERIES  # CC then CV (the simulated cycler holds the voltage setpoint)
TAPER_A = CURRENT_A / 10  # charge ends when the CV current has tapered to C/10
DISCHARGE_TO_V = 3.3 * SERIES
REST_S = 600.0
POLL_S = 60.0
TIME_SCALE = 2000.0
ALARM_CELL = 3

CHARGE_INDEX, DISCHARGE_INDEX = 4, 6  # program steps 4.1 and 4.3: 1-based in program order


@dataclass(frozen=True)
class RecordedRun:
    bench_file: Path
    journal: Path
    run_id: str


def bms_schema(cells: int) -> DeviceSchema:
    channels = [Channel("voltage_v", "V"), Channel("current_a", "A"), Channel("soc_pct", "%")]
    channels += [Channel(f"cell{n}_v", "V") for n in range(1, cells + 1)]
    channels += [Channel(f"temp{n}_c", "degC") for n in range(1, cells + 1)]
    channels += [Channel("balance_mask"), Channel("alarm_level")]
    return DeviceSchema("bms-1", "bms", tuple(channels))


async def _bms_standin(bench: Bench, schema: DeviceSchema) -> None:
    pack = bench.simulation.pack
    while True:
        snap = pack.snapshot()
        mask = sum(1 << i for i, on in enumerate(snap.balancing) if on)
        values = [snap.voltage_v, snap.current_a, snap.soc * 100.0, *snap.cell_voltages_v]
        values += [*snap.cell_temperatures_c, float(mask), 0.0]
        bench.handle_record(Record(schema, bench.clock.wall_ns(), values, bytes(len(values))))
        await bench.clock.sleep(POLL_S)


async def _hold_until(bench: Bench, done: Callable[[Record], bool], *, limit_s: float) -> None:
    """Wait (bench time) until ``done(record)`` holds for the cycler's latest reading."""
    start = bench.clock.monotonic()
    fresh_ns = bench.clock.wall_ns() + int(POLL_S * 1e9)  # a reading taken after the command
    deadline = time.monotonic() + 60.0
    while bench.clock.monotonic() - start < limit_s:
        rec = bench.latest.get("cycler-0")
        if rec is not None and rec.t_ns > fresh_ns and done(rec):
            return
        if time.monotonic() > deadline:
            raise AssertionError("simulated step did not end within 60 s of real time")
        await asyncio.sleep(0.005)


class _Program:
    """Does what the test runner does around each step: stamp the running step number and
    cycle on the records, journal ``runner.step_started`` and keep the category for the check."""

    def __init__(self, bench: Bench, run_id: str) -> None:
        self.bench, self.run_id = bench, run_id
        self.running = 0
        self.categories: dict[int, str] = {}

    def step(self, number: str, label: str, kind: str, category: str, cycle: int) -> None:
        self.running += 1
        self.bench.context.step, self.bench.context.cycle = self.running, cycle
        self.categories[self.running] = category
        data = {"step": self.running, "number": number, "label": label, "kind": kind, "cycle": cycle}
        self.bench.journal.append_event(self.run_id, self.bench.clock.wall_ns(), "runner.step_started", data)


async def record_cycle_run(tmp_path: Path, *, cycles: int = 3) -> RecordedRun:
    bench_file = sim_bench(
        tmp_path,
        time_scale=TIME_SCALE,
        poll_period_s=POLL_S,
        capacity_ah=CAPACITY_AH,
        initial_soc=0.5,
        fade_per_cycle=0.01,
        seed=3,
    )
    metadata = {
        "pack": {"id": "PK-0042", "chemistry": "NMC", "series_cells": SERIES, "capacity_ah": CAPACITY_AH},
        "operator": "J. Quality",
        "profile": "ci_cycle_3x",
        "limit_set": "demo_nmc_14s",
    }
    bench = Bench(load_bench(bench_file), metadata=metadata)
    run_id = await bench.start()
    try:
        bench.add_task(_bms_standin(bench, bms_schema(SERIES)), name="bms-standin")
        await wait_until(lambda: "cycler-0" in bench.latest, what="first cycler record")
        ctl = bench.cyclers["cycler-0"]
        journal = bench.journal
        program = _Program(bench, run_id)

        async def charge() -> None:
            await ctl.apply(CyclerCommand(CyclerMode.CC, current_a=CURRENT_A, voltage_v=CHARGE_TO_V))
            await _hold_until(bench, lambda r: r.get("current_a") < TAPER_A, limit_s=3 * 3600)

        async def discharge() -> None:
            await ctl.apply(CyclerCommand(CyclerMode.CC, current_a=-CURRENT_A, voltage_v=DISCHARGE_TO_V))
            await _hold_until(bench, lambda r: r.get("voltage_v") <= DISCHARGE_TO_V + 0.05, limit_s=3 * 3600)

        async def rest() -> None:
            await ctl.rest()
            await bench.clock.sleep(REST_S)

        # cycle 0: rest, then bring the pack down to empty, so every cycle starts at the same point
        program.step("1", "Rest for 10 minutes", "rest", "rest", 0)
        await bench.clock.sleep(REST_S)
        program.step("2", "Discharge at 1C until 3.3 V", "cc", "discharge", 0)
        await discharge()
        program.step("3", "Rest for 10 minutes", "rest", "rest", 0)
        await rest()
        for cycle in range(1, cycles + 1):
            program.step("4.1", "Charge at 1C until 4.15 V, hold until C/10", "cccv", "charge", cycle)
            await charge()
            if cycle == 2:  # the safety monitor would journal these
                t = bench.clock.wall_ns()
                alarm = {
                    "limit": "cell_voltage_max_v",
                    "level": "warning",
                    "device": "bms-1",
                    "channel": f"cell{ALARM_CELL}_v",
                    "value": 4.12,
                    "threshold": 4.1,
                    "message": "test",
                }
                journal.append_event(run_id, t, "alarm.raised", {**alarm, "kind": "raised", "t_ns": t})
            program.step("4.2", "Rest for 10 minutes", "rest", "rest", cycle)
            await rest()
            if cycle == 2:
                t = bench.clock.wall_ns()
                journal.append_event(run_id, t, "alarm.cleared", {**alarm, "kind": "cleared", "t_ns": t})
            program.step("4.3", "Discharge at 1C until 3.3 V", "cc", "discharge", cycle)
            await discharge()
            program.step("4.4", "Rest for 10 minutes", "rest", "rest", cycle)
            await rest()
        # daq check reads the step categories from here to apply per-step limits
        journal.set_run_value(run_id, "step_names", program.categories)
    except BaseException:
        await bench.stop(status="aborted", reason="test recording failed")
        raise
    await bench.stop(status="completed")
    return RecordedRun(bench_file, bench.journal.path, run_id)


_SHARED: dict[str, RecordedRun] = {}


def shared_recording(base: Path) -> RecordedRun:
    """One recording per test session (about 8 s), made in its own thread and event loop."""
    if "run" not in _SHARED:
        folder = base / "recorded-cycle-run"
        folder.mkdir(exist_ok=True)
        with ThreadPoolExecutor(1) as pool:
            _SHARED["run"] = pool.submit(asyncio.run, record_cycle_run(folder)).result()
    return _SHARED["run"]


CYCLER_SCHEMA = DeviceSchema("cycler-1", "cycler", (Channel("voltage_v", "V"), Channel("current_a", "A")))


def synthetic_journal(path: Path, *, records: int, end: bool) -> str:
    """A journal with one run of ``records`` cycler polls (1 s apart, charging at 10 A); the run
    is left "running" unless ``end``. Returns the run id."""
    with Journal(path, commit_interval_s=0.01) as journal:
        t0 = 1_800_000_000_000_000_000
        run_id = journal.begin_run("bench", schemas=[CYCLER_SCHEMA], started_ns=t0, run_id="synthetic")
        for k in range(records):
            journal.append(Record(CYCLER_SCHEMA, t0 + k * 1_000_000_000, [50.0 + k * 0.01, 10.0], bytes(2), run_id))
        journal.flush()
        if end:
            journal.end_run(run_id, status="completed", ended_ns=t0 + records * 1_000_000_000)
    return run_id


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "64k") -> Iterator[Path]:
    """A real, nearly full file system: a 64 KiB tmpfs (needs root); skips the test if not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to fill ({mounted.stderr.decode().strip()}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
