"""Poll floor: how fast can the project poll, next to a bare pymodbus loop on the same simulators.

K simulated cyclers (3 requests per poll: input block, holding block, coils), polled as fast as
possible, one task per device, in three runs of the same length against the same farm:

- bare: pymodbus reads of the same blocks, nothing decoded or kept;
- engine: the project's ``ModbusDriver`` + ``DevicePoller`` (decode, qualities, one ``Record``);
- engine + journal: the same, every record appended to the SQLite journal (committed).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from benchmarks.common import CpuWindow, goal, scenario_result
from benchmarks.devices import CYCLER_REGMAP
from benchmarks.harness import HOST, MAX_REGS, bare_client, bare_poll_loop, blocks_of, workdir
from benchmarks.simfarm import SimDevice, SimFarm
from daq.clock import MonotonicClock
from daq.engine.poller import DevicePoller
from daq.journal import Journal
from daq.records import Record
from drivers.modbus.driver import ModbusDriver, ModbusLink, TcpEndpoint
from drivers.modbus.regmap import load_regmap

NAME = "poll_floor"
TITLE = "Poll floor: as fast as possible, bare pymodbus loop vs the project's poll engine"
AS_FAST_AS_POSSIBLE_S = 1e-6  # a period this short: the poller never waits


def cases(smoke: bool) -> list[str]:
    return ["2"] if smoke else ["1", "10", "50", "200"]


async def _bare(ports: list[int], blocks: Any, seconds: float, warmup_s: float) -> dict[str, float]:
    clients = [await bare_client(p) for p in ports]
    counter, stop = [0], asyncio.Event()
    tasks = [asyncio.create_task(bare_poll_loop(c, blocks, counter, stop)) for c in clients]
    await asyncio.sleep(warmup_s)
    start, window = counter[0], CpuWindow()
    await asyncio.sleep(seconds)
    polls = counter[0] - start
    window.stop()
    stop.set()
    await asyncio.gather(*tasks)
    for c in clients:
        c.close()
    return {"polls": polls, "wall_s": window.wall_s, "cpu_s": window.cpu_s}


async def _engine(ports: list[int], seconds: float, warmup_s: float, journal: Journal | None) -> dict[str, float]:
    regmap = load_regmap(CYCLER_REGMAP)
    clock = MonotonicClock()
    counter = [0]
    append = journal.append if journal is not None else None

    def on_record(record: Record) -> None:
        counter[0] += 1
        if append is not None:
            append(record)

    pollers = []
    for k, port in enumerate(ports):
        link = ModbusLink(TcpEndpoint(HOST, port, "socket", 1.0))
        driver = ModbusDriver(f"cycler-{k}", kind="cycler", regmap=regmap, link=link, max_registers_per_read=MAX_REGS)
        pollers.append(DevicePoller(driver, period_s=AS_FAST_AS_POSSIBLE_S, clock=clock, on_record=on_record))
    if journal is not None:
        run_id = journal.begin_run("benchmark", schemas=[p.driver.schema for p in pollers])
        on_record_run = on_record

        def on_record(record: Record) -> None:  # stamp the run like Bench.handle_record does
            record.run_id = run_id
            on_record_run(record)

        for p in pollers:
            p.on_record = on_record
    tasks = [asyncio.create_task(p.run(), name=f"poll:{p.name}") for p in pollers]
    await asyncio.sleep(warmup_s)
    start, window = counter[0], CpuWindow()
    committed0 = journal.records_written if journal is not None else 0
    await asyncio.sleep(seconds)
    polls = counter[0] - start
    window.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    good = sum(p.stats.good_polls for p in pollers)
    total = sum(p.stats.polls for p in pollers)
    out = {"polls": polls, "wall_s": window.wall_s, "cpu_s": window.cpu_s, "good_fraction": good / max(total, 1)}
    if journal is not None:
        out["committed"] = journal.records_written - committed0
    return out


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    k = int(case)
    seconds, warmup_s = (0.3, 0.1) if smoke else (5.0, 1.0)
    regmap = load_regmap(CYCLER_REGMAP)
    blocks = blocks_of(regmap)
    with SimFarm([SimDevice(f"sim-{i}", "cycler") for i in range(k)]) as farm, workdir("floor") as folder:
        ports = list(farm.ports.values())
        farm0 = farm.cpu_s()
        bare = await _bare(ports, blocks, seconds, warmup_s)
        engine = await _engine(ports, seconds, warmup_s, None)
        journal = Journal(folder / "journal.sqlite", commit_interval_s=0.5)
        journal.open()
        try:
            with_journal = await _engine(ports, seconds, warmup_s, journal)
        finally:
            journal.close()
        farm_cpu = farm.cpu_s() - farm0
    n_req = len(blocks)

    def rate(r: dict[str, float]) -> float:
        return r["polls"] / r["wall_s"]

    def cpu_us(r: dict[str, float]) -> float:
        return 1e6 * r["cpu_s"] / max(r["polls"], 1)

    return {
        "devices": k,
        "requests_per_poll": n_req,
        "bare_polls_per_s": rate(bare),
        "bare_requests_per_s": rate(bare) * n_req,
        "bare_cpu_us_per_poll": cpu_us(bare),
        "engine_polls_per_s": rate(engine),
        "engine_requests_per_s": rate(engine) * n_req,
        "engine_cpu_us_per_poll": cpu_us(engine),
        "rate_ratio_engine_to_bare": rate(engine) / rate(bare) if rate(bare) else math.nan,
        "cpu_ratio_engine_to_bare": cpu_us(engine) / cpu_us(bare),
        "journal_polls_per_s": rate(with_journal),
        "journal_records_committed_per_s": with_journal.get("committed", 0) / with_journal["wall_s"],
        "journal_cpu_us_per_poll": cpu_us(with_journal),
        "engine_good_fraction": engine["good_fraction"],
        "farm_cpu_pct": 100 * farm_cpu / (3 * (seconds + warmup_s)),
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    notes = [
        "Simulators run in a separate process (benchmarks/simfarm.py); CPU figures are the client process only "
        "(time.process_time: all its threads). farm_cpu_pct is the simulator process, % of one core.",
        "rate_ratio = engine polls/s / bare polls/s (1.0 = as fast as bare pymodbus); "
        "cpu_ratio = engine CPU per poll / bare CPU per poll.",
        "The farm serves a device's reads from a cache refreshed every 250 ms (values still move; see simfarm.py).",
    ]
    goals = [
        goal(
            f"poll engine CPU per poll vs bare pymodbus ({r['devices']} devices)",
            "<= 1.5x (informative)",
            r["cpu_ratio_engine_to_bare"],
            r["cpu_ratio_engine_to_bare"] <= 1.5,
            "x",
        )
        for r in rows
    ]
    return scenario_result(NAME, TITLE, rows, goals=goals, notes=notes)
