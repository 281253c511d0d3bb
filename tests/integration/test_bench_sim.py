"""The bench end to end on simulated hardware over real Modbus TCP sockets."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import pytest

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.errors import SetpointRangeError
from daq.journal import JournalReader
from daq.records import Quality
from tests.helpers import sim_bench, wait_until


def value(bench: Bench, device: str, channel: str) -> float:
    rec = bench.latest.get(device)
    return math.nan if rec is None else rec.get(channel)


async def test_bench_records_every_channel_at_rate(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, time_scale=10, poll_period_s=1.0)))
    await bench.start()
    try:
        await wait_until(lambda: bench.records_seen >= 30, what="30 polls")
    finally:
        await bench.stop()
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        records = list(reader.iter_run_records(bench.run_id))
    assert len(records) == bench.records_seen
    schema = records[0].schema
    for name in ("voltage_v", "current_a", "temperature_c", "output_on", "current_setpoint_a"):
        assert name in schema.index
    assert all(r.all_good() for r in records)
    # 14 NMC cells near SOC 0.5: a pack voltage between 3.5 and 4.2 V per cell
    v = records[-1].get("voltage_v")
    assert 14 * 3.5 < v < 14 * 4.2
    # Period on simulated time: 1.0 s between consecutive poll starts, no drift
    gaps = [(b.t_ns - a.t_ns) / 1e9 for a, b in itertools.pairwise(records)]
    assert sum(gaps) / len(gaps) == pytest.approx(1.0, rel=0.05)


async def test_commands_move_the_pack_and_sign_is_charge_positive(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, time_scale=20, poll_period_s=1.0)))
    await bench.start()
    try:
        ctl = bench.cyclers["cycler-0"]
        await ctl.apply(CyclerCommand(CyclerMode.CC, current_a=-20.0, voltage_v=14 * 3.0))
        await wait_until(lambda: value(bench, "cycler-0", "current_a") < -19.9, what="discharge current")
        v_discharging = bench.latest["cycler-0"].get("voltage_v")
        await ctl.apply(CyclerCommand(CyclerMode.CC, current_a=20.0, voltage_v=14 * 4.2))
        await wait_until(lambda: value(bench, "cycler-0", "current_a") > 19.9, what="charge current")
        assert bench.latest["cycler-0"].get("voltage_v") > v_discharging  # IR drop flips sign
        # A setpoint outside the regmap's range is refused before anything is sent.
        with pytest.raises(SetpointRangeError, match="outside the allowed range"):
            await ctl.driver.write("current_setpoint_a", 400.0)
        assert await ctl.driver.read_channel("current_setpoint_a") == pytest.approx(20.0)
        assert await ctl.safe_state()
        await wait_until(lambda: bench.latest["cycler-0"].get("current_a") == 0.0, what="zero current")
    finally:
        await bench.stop()


async def test_silent_device_does_not_delay_another(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, cyclers=2, poll_period_s=0.05)))
    await bench.start()
    try:
        assert bench.simulation is not None
        await wait_until(lambda: len(bench.latest) == 2, what="both devices polled")
        bench.simulation.faults["sim-1"].silent = True
        fast, slow = bench.pollers["cycler-0"], bench.pollers["cycler-1"]
        start_fast, start_slow_timeouts = fast.stats.polls, slow.stats.timeouts
        await wait_until(lambda: slow.stats.timeouts >= start_slow_timeouts + 3, what="timeouts on the silent one")
        polled = fast.stats.polls - start_fast
        assert fast.stats.missed == 0 and fast.stats.timeouts == 0
        assert polled >= 10  # kept polling at 20 Hz while the other waited out 0.3 s timeouts
        assert bench.latest["cycler-0"].all_good()
        bad = bench.latest["cycler-1"].quality
        assert set(bad) <= {Quality.TIMEOUT, Quality.COMM_LOST}
        # the fault clears: the device comes back by itself
        bench.simulation.faults["sim-1"].silent = False
        await wait_until(lambda: bench.latest["cycler-1"].all_good(), timeout=30, what="recovery")
    finally:
        await bench.stop()


async def test_modbus_exception_is_a_quality_not_a_crash(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, poll_period_s=0.05)))
    await bench.start()
    try:
        assert bench.simulation is not None
        await wait_until(lambda: "cycler-0" in bench.latest, what="first poll")
        bench.simulation.faults["sim-0"].exception_next = 1
        await wait_until(lambda: Quality.DEVICE_EXCEPTION in bench.latest["cycler-0"].quality, what="exception quality")
        rec = bench.latest["cycler-0"]
        # only the block that got the exception is marked; the rest of the record is good
        assert Quality.GOOD in rec.quality
        await wait_until(lambda: bench.latest["cycler-0"].all_good(), what="next poll good again")
    finally:
        await bench.stop()


async def test_reconnects_after_simulator_restart(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, poll_period_s=0.05)))
    await bench.start()
    try:
        sim = bench.simulation
        assert sim is not None
        await wait_until(lambda: "cycler-0" in bench.latest and bench.latest["cycler-0"].all_good(), what="good poll")
        server = sim.servers["sim-0"]
        port = server.port
        await server.stop()
        await wait_until(
            lambda: (
                Quality.COMM_LOST in bench.latest["cycler-0"].quality
                or Quality.TIMEOUT in bench.latest["cycler-0"].quality
            ),
            what="link loss seen",
        )
        server.port = port
        await server.start()  # same port, like a device that rebooted
        await wait_until(lambda: bench.latest["cycler-0"].all_good(), timeout=30, what="reconnect")
        assert bench.pollers["cycler-0"].stats.reconnects >= 1
    finally:
        await bench.stop()


async def test_watchdog_turns_output_off_when_refresh_stops(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, time_scale=10, poll_period_s=0.5, watchdog_timeout_s=5)))
    await bench.start()
    try:
        assert bench.simulation is not None
        ctl = bench.cyclers["cycler-0"]
        await ctl.apply(CyclerCommand(CyclerMode.CC, current_a=10.0, voltage_v=14 * 4.2))
        sim_cycler = bench.simulation.cyclers["sim-0"]
        await wait_until(lambda: sim_cycler.output_on, what="output on")
        # While the bench refreshes the watchdog, the output stays on well past the timeout.
        t0 = bench.clock.monotonic()
        await wait_until(lambda: bench.clock.monotonic() - t0 > 12, what="12 s of bench time")
        assert sim_cycler.output_on
        # Stop the refresh (as if the daq process hung): the cycler turns itself off.
        for task in bench._tasks:
            if task.get_name().startswith("watchdog:"):
                task.cancel()
        await wait_until(lambda: not sim_cycler.output_on, what="watchdog trip")
        await wait_until(lambda: bench.latest["cycler-0"].get("watchdog_tripped") == 1.0, what="tripped bit")
        assert bench.latest["cycler-0"].get("current_a") == 0.0 or math.isnan(bench.latest["cycler-0"].get("current_a"))
    finally:
        await bench.stop()


async def test_status_of_a_running_bench_from_another_process(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    bench = Bench(load_bench(sim_bench(tmp_path, poll_period_s=0.05)))
    await bench.start()
    try:
        await wait_until(lambda: bench.records_seen > 20 and bench.last_status.get("records", 0) > 0, what="status")
        bench.journal.flush()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "daq.cli.main", "status", "--json", "--journal", str(tmp_path / "journal.sqlite")],
            capture_output=True,
            text=True,
        )
    finally:
        await bench.stop()
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["run_id"] == bench.run_id
    dev = status["devices"]["cycler-0"]
    assert dev["polls"] > 0 and dev["quality"] == "good" and dev["timeouts"] == 0
