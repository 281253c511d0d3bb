"""The safety monitor in a running bench: trip -> safe state (verified) -> latch -> ack, device limits,
interlock and resume, against the simulated cycler over real Modbus TCP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.errors import DeviceLimitError, InterlockError
from daq.journal import JournalReader
from daq.records import Record
from tests.helpers import CYCLER_REGMAP, wait_until
from tests.integration.test_safety_support import (
    daq_cli,
    journal_events,
    journal_record_count,
    kinds,
    safety_bench,
)

CHARGE = CyclerCommand(CyclerMode.CC, current_a=13.5, voltage_v=14 * 4.2)
PACK_TRIP = {"pack_voltage_max_v": {"warn": 55.0, "trip": 56.0, "hysteresis": 0.2}}


def reading(bench: Bench, channel: str) -> float:
    rec = bench.latest.get("cycler-0")
    return float("nan") if rec is None else rec.get(channel)


async def charge_then_drift(bench: Bench, volts_per_s: float = 1.0) -> None:
    """Charge at C/2, then let cell 3 drift upwards: the pack voltage crosses the trip level."""
    await bench.cyclers["cycler-0"].apply(CHARGE)
    await wait_until(lambda: reading(bench, "current_a") > 13.0, what="charging at 13.5 A")
    bench.simulation.pack.model.drift_cell_voltage(3, volts_per_s)


def sim_output_on(bench: Bench) -> bool:
    return bool(bench.simulation.cyclers["sim-0"].read("output_on"))


async def test_trip_during_charge_stops_the_cycler_latches_and_an_ack_releases(tmp_path: Path) -> None:
    bench = Bench(load_bench(safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    run_id, journal = bench.run_id, bench.journal.path
    tripped: list[str] = []
    try:
        assert bench.safety is not None and bench.hooks[0] == bench.safety.hook
        bench.safety.on_trip.append(lambda event: tripped.append(event.limit))
        ctl, sim = bench.cyclers["cycler-0"], bench.simulation.cyclers["sim-0"]
        await charge_then_drift(bench)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the action ladder after the trip")
        assert tripped == ["pack_voltage_max_v"]
        assert bench.safety.tripped
        assert not sim_output_on(bench) and sim.read("current_a") == 0.0
        assert sim.read("current_setpoint_a") == 0.0 and sim.read("mode_setpoint") == CyclerMode.REST

        # latched: the bench refuses to switch the output on again, and says why
        with pytest.raises(InterlockError, match="safety trip is latched"):
            await ctl.apply(CHARGE)
        assert not sim_output_on(bench)

        bench.simulation.pack.model.clear_faults()
        await wait_until(lambda: reading(bench, "voltage_v") < 55.0, what="pack voltage back to normal")
        rc, out, err = await daq_cli(
            "ack", run_id, "--journal", str(journal), "--who", "alice", "--note", "cell 3 sense lead fixed"
        )
        assert rc == 0, err
        assert "acknowledged 1 trip" in out
        assert not bench.safety.tripped
        await ctl.apply(CHARGE)
        await wait_until(lambda: sim_output_on(bench), what="output back on after the ack")
    finally:
        await bench.stop()

    events = journal_events(journal, run_id)
    alarm_kinds = kinds([e for e in events if e[0].startswith("alarm.")])
    assert alarm_kinds[:2] == ["alarm.raised", "alarm.tripped"]
    assert alarm_kinds[-2:] == ["alarm.acknowledge_request", "alarm.acknowledged"]
    trip = next(d for k, d in events if k == "alarm.tripped")
    assert (trip["limit"], trip["device"], trip["channel"], trip["threshold"]) == (
        "pack_voltage_max_v",
        "cycler-0",
        "voltage_v",
        56.0,
    )
    assert trip["value"] >= 56.0
    actions = [(d["what"], d["ok"]) for k, d in events if k == "safety.action"]
    assert actions == [("zero_current", True), ("rest", True), ("output_off", True), ("verify_output_off", True)]
    (safe,) = [d for k, d in events if k == "safety.safe_state"]
    assert safe["safe"] and safe["cyclers"]["cycler-0"]["how"] == "output verified off"
    refused = [d for k, d in events if k == "safety.interlock"]
    assert refused and refused[0]["what"] == "refused output_enable=1"
    ack = next(d for k, d in events if k == "alarm.acknowledged")
    assert (ack["who"], ack["note"], ack["limit"]) == ("alice", "cell 3 sense lead fixed", "pack_voltage_max_v")
    # nothing lost: every record the bench saw is in the journal; the run ends aborted with the reason
    assert journal_record_count(journal, run_id) == bench.records_seen
    with JournalReader(journal) as reader:
        run = reader.run(run_id)
        assert run.status == "aborted"
        assert "voltage_v" in run.reason and "trip 56" in run.reason
        assert reader.run_value(run_id, "safety")["safe"] is True


async def test_cycler_ignoring_the_first_output_off_is_retried_and_verified(tmp_path: Path) -> None:
    bench = Bench(load_bench(safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    try:
        bench.simulation.cyclers["sim-0"].ignore_output_off(1)
        await charge_then_drift(bench)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the action ladder")
        assert not sim_output_on(bench)
        outcome = bench.safety.last_outcomes["cycler-0"]
        assert outcome.safe and outcome.attempts == 2
    finally:
        await bench.stop()
    events = journal_events(bench.journal.path, bench.run_id)
    steps = [(d["attempt"], d["what"], d["ok"], d["result"]) for k, d in events if k == "safety.action"]
    # the device acknowledged the first output-off but ignored it: only the read-back tells
    assert (1, "output_off", True, "done") in steps
    assert (1, "verify_output_off", False, "read back: output still ON") in steps
    assert steps[-1] == (2, "verify_output_off", True, "read back: output off")
    assert journal_record_count(bench.journal.path, bench.run_id) == bench.records_seen


async def test_output_switched_on_behind_the_benchs_back_is_switched_off_again(tmp_path: Path) -> None:
    bench = Bench(load_bench(safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    try:
        await charge_then_drift(bench)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the action ladder")
        sim = bench.simulation.cyclers["sim-0"]
        sim.write("output_enable", 1)  # someone at the front panel
        assert sim_output_on(bench)
        await wait_until(lambda: bench.safety.ladder_runs >= 2, what="the ladder again")
        assert not sim_output_on(bench)
    finally:
        await bench.stop()
    events = journal_events(bench.journal.path, bench.run_id, "safety.interlock")
    assert [d["what"] for _, d in events] == ["output on while a trip is latched"]


async def test_device_limits_are_pushed_at_start_and_the_devices_own_trip_latches(tmp_path: Path) -> None:
    limits = {
        "pack_voltage_max_v": {"trip": 56.0, "persistence_s": 30.0},  # the software waits; the device does not
        "pack_voltage_min_v": {"trip": 40.0},
        "charge_current_max_a": {"warn": 30.0, "trip": 32.5},
        "discharge_current_max_a": {"trip": 60.0},
        "pack_temperature_max_c": {"trip": 55.0},
    }
    path = safety_bench(tmp_path, limits, push_device_limits=True, time_scale=5, poll_period_s=0.1)
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        sim = bench.simulation.cyclers["sim-0"]
        assert (
            sim.settings.limit_max_voltage_v,
            sim.settings.limit_min_voltage_v,
            sim.settings.limit_max_charge_current_a,
            sim.settings.limit_max_discharge_current_a,
            sim.settings.limit_max_temperature_c,
        ) == (56.0, 40.0, 32.5, 60.0, 55.0)
        await charge_then_drift(bench)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the ladder after the device's own trip")
        assert bench.safety.tripped and not sim_output_on(bench)
    finally:
        await bench.stop()
    events = journal_events(bench.journal.path, bench.run_id)
    (pushed,) = [d for k, d in events if k == "safety.device_limits"]
    assert (
        pushed["readback"]
        == pushed["written"]
        == {
            "limit_max_voltage_v": 56.0,
            "limit_min_voltage_v": 40.0,
            "limit_max_charge_current_a": 32.5,
            "limit_max_discharge_current_a": 60.0,
            "limit_max_temperature_c": 55.0,
        }
    )
    trip = next(d for k, d in events if k == "alarm.tripped")
    assert (trip["limit"], trip["device"], trip["value"]) == ("device_alarm", "cycler-0", 2.0)  # OVER_VOLTAGE


def bench_with_wide_temperature_limit_register(tmp_path: Path) -> Path:
    """A register map that allows more than its i16 register can hold: the device stores 3276.7."""
    regmap = yaml.safe_load(Path(CYCLER_REGMAP).read_text())
    for reg in regmap["registers"]:
        if reg["name"] == "limit_max_temperature_c":
            reg["range"] = [-40, 5000]
    (tmp_path / "cycler.yaml").write_text(yaml.safe_dump(regmap, sort_keys=False))
    path = safety_bench(tmp_path, {"pack_temperature_max_c": {"trip": 4000.0}}, push_device_limits=True)
    cfg = yaml.safe_load(path.read_text())
    cfg["devices"][0]["regmap"] = str(tmp_path / "cycler.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_device_limit_that_does_not_read_back_stops_the_start(tmp_path: Path) -> None:
    bench = Bench(load_bench(bench_with_wide_temperature_limit_register(tmp_path)))
    with pytest.raises(DeviceLimitError, match=r"limit_max_temperature_c .*wrote 4000, read back 3276\.7"):
        await bench.start()
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        (run,) = reader.runs()
    assert run.status == "aborted" and "safety" in run.reason


async def test_a_resumed_run_keeps_its_latch_until_acknowledged(tmp_path: Path) -> None:
    path = safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)
    first = Bench(load_bench(path))
    await first.start()
    try:
        await charge_then_drift(first)
        await wait_until(lambda: first.safety.ladder_runs >= 1, what="the trip")
    finally:
        await first.stop()

    second = Bench(load_bench(path))  # e.g. after a crash: the same run, fresh simulated hardware
    await second.start(run_id=first.run_id)
    try:
        sim = second.simulation.cyclers["sim-0"]
        sim.write("output_enable", 1)  # whatever state the hardware was left in
        assert second.safety.tripped
        await wait_until(lambda: not sim_output_on(second), what="outputs forced off on resume")
        with pytest.raises(InterlockError):
            await second.cyclers["cycler-0"].apply(CHARGE)
        acknowledged = second.safety.acknowledge("bob", note="checked after restart")
        assert [e.limit for e in acknowledged] == ["pack_voltage_max_v"]
        assert not second.safety.tripped
        await second.cyclers["cycler-0"].apply(CHARGE)
    finally:
        await second.stop()
    events = journal_events(path.parent / "journal.sqlite", first.run_id)
    assert "safety.latch_restored" in kinds(events)
    assert kinds(events).count("alarm.tripped") == 1


async def test_step_limits_tighten_while_the_step_runs_and_daq_check_replays_them(tmp_path: Path) -> None:
    limits = {
        "charge_current_max_a": {"warn": 29.7, "trip": 32.4},
        "steps": {"rest": {"charge_current_max_a": {"warn": 0.5, "trip": 1.0}}},
    }
    bench = Bench(load_bench(safety_bench(tmp_path, limits, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    try:
        monitor = bench.safety
        # as the runner does it: the step's limits, then its number on the records
        monitor.set_step_limits("charge")  # no overrides: the global limits
        bench.context.step = 1
        await bench.cyclers["cycler-0"].apply(CHARGE)
        await wait_until(lambda: reading(bench, "current_a") > 13.0, what="charging at 13.5 A")
        assert not monitor.tripped
        monitor.set_step_limits("rest")  # but the current keeps flowing
        bench.context.step = 2
        await wait_until(lambda: monitor.ladder_runs >= 1, what="the rest step's current limit tripping")
        assert [e.limit for e in monitor.trip_reasons()] == ["charge_current_max_a"]
        assert monitor.trip_reasons()[0].threshold == 1.0
        assert not sim_output_on(bench)
    finally:
        await bench.stop()
    journal, run_id = bench.journal.path, bench.run_id
    steps = [d["step"] for _, d in journal_events(journal, run_id, "safety.step_limits")]
    assert steps == ["charge", "rest"]
    with JournalReader(journal) as reader:
        assert reader.run_value(run_id, "step_names") == {"1": "charge", "2": "rest"}
        rest_starts = next(r.t_ns for r in reader.iter_run_records(run_id) if r.step == 2)
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--json")
    assert rc == 1, err
    (trip,) = [e for e in json.loads(out)["excursions"] if e["level"] == "trip"]
    assert (trip["limit"], trip["threshold"], trip["start_ns"]) == ("charge_current_max_a", 1.0, rest_starts)


async def test_a_record_the_evaluator_cannot_judge_trips_to_be_safe(tmp_path: Path) -> None:
    bench = Bench(load_bench(safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    try:
        await bench.cyclers["cycler-0"].apply(CHARGE)
        await wait_until(lambda: sim_output_on(bench), what="output on")
        schema = bench.drivers["cycler-0"].schema
        bench.handle_record(Record(schema, bench.clock.wall_ns(), [1.0], b"\0"))  # one value for many channels
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the fail-safe trip")
        assert [e.limit for e in bench.safety.trip_reasons()] == ["monitor_error"]
        assert not sim_output_on(bench)
    finally:
        await bench.stop()
