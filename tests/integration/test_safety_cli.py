"""``daq check`` on a recorded run with a known excursion, ``daq ack`` on finished and unattended runs,
and ``daq validate`` reporting the safety section's problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.journal import Journal, JournalReader
from tests.helpers import CYCLER_REGMAP, sim_bench, wait_until
from tests.integration.test_safety_support import daq_cli, journal_events, kinds, safety_bench, write_limits

CHARGE = CyclerCommand(CyclerMode.CC, current_a=13.5, voltage_v=14 * 4.2)
LIVE_LIMITS = {"pack_voltage_max_v": {"warn": 55.0, "trip": 56.0}}


@pytest.fixture
async def tripped_run(tmp_path: Path) -> tuple[Path, str]:
    """A recorded run whose pack voltage went over 56 V (and kept rising) during a charge."""
    bench = Bench(load_bench(safety_bench(tmp_path, LIVE_LIMITS, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    try:
        await bench.cyclers["cycler-0"].apply(CHARGE)
        bench.simulation.pack.model.drift_cell_voltage(3, 1.0)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the trip")
        await wait_until(lambda: bench.latest["cycler-0"].get("voltage_v") > 57.0, what="more data after the trip")
    finally:
        await bench.stop()
    return bench.journal.path, bench.run_id


def first_crossing_ns(journal: Path, run_id: str, level: float) -> int:
    with JournalReader(journal) as reader:
        return next(r.t_ns for r in reader.iter_run_records(run_id) if r.get("voltage_v") >= level)


async def test_check_fails_a_run_with_a_known_excursion_and_lists_its_alarms(tripped_run: tuple[Path, str]) -> None:
    journal, run_id = tripped_run
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal))  # the run's own limits
    assert rc == 1, err
    assert "limits from the run's journal" in out
    row = next(line for line in out.splitlines() if line.startswith("trip "))
    assert row.split()[1:4] == ["pack_voltage_max_v", "cycler-0", "voltage_v"]
    assert "verdict: FAIL" in out
    assert "alarm.tripped" in out and "safe state: cycler-0 output verified off" in out

    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--json")
    assert rc == 1, err
    result = json.loads(out)
    assert (result["verdict"], result["run"]) == ("fail", run_id)
    # Switching the charge off drops the voltage by the pack's IR drop, under the level for a
    # moment; the drift carries it back over: two trip excursions, the second one still open.
    first, *_, last = [e for e in result["excursions"] if e["level"] == "trip"]
    assert first["start_ns"] == first_crossing_ns(journal, run_id, 56.0)
    assert first["threshold"] == 56.0 and first["peak"] >= 56.0
    assert last["peak"] > 57.0 and not last["ended"]
    assert "alarm.tripped" in [a["kind"] for a in result["recorded_alarms"]]


async def test_check_against_another_limit_set_and_strict(tripped_run: tuple[Path, str], tmp_path: Path) -> None:
    journal, run_id = tripped_run
    loose = write_limits(tmp_path, {"pack_voltage_max_v": {"warn": 56.5, "trip": 70.0}}, "loose.yaml")
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--limits", str(loose))
    assert rc == 0, err
    assert "verdict: PASS" in out and "1 warning" in out
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--limits", str(loose), "--strict")
    assert rc == 1, err
    assert "verdict: FAIL" in out


async def test_ack_of_a_finished_run_is_recorded_with_who_and_note(tripped_run: tuple[Path, str]) -> None:
    journal, run_id = tripped_run
    rc, out, err = await daq_cli("ack", run_id, "--journal", str(journal), "--who", "carol", "--note", "pack replaced")
    assert rc == 0, err
    assert "acknowledged 1 trip(s) by carol" in out
    rc, out, err = await daq_cli("ack", run_id, "--journal", str(journal), "--who", "carol")
    assert rc == 0, err
    assert "nothing was latched" in out
    acks = [d for k, d in journal_events(journal, run_id) if k == "alarm.acknowledged"]
    assert [(a["who"], a["note"], a["limit"]) for a in acks] == [("carol", "pack replaced", "pack_voltage_max_v")]


async def test_ack_nobody_answers_when_the_bench_is_gone(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    with Journal(journal) as writer:
        run_id = writer.begin_run("crashed", schemas=[], run_id="crashed-1")  # left "running", as after a crash
        writer.append_event(run_id, 0, "safety.limits", {"name": "x"})
        unmonitored = writer.begin_run("plain", schemas=[], run_id="plain-1")
    rc, out, err = await daq_cli("ack", run_id, "--journal", str(journal), "--who", "dave", "--wait", "0.3")
    assert rc == 1, err
    assert "did not answer" in out
    assert kinds(journal_events(journal, run_id)) == ["safety.limits", "alarm.acknowledge_request"]

    rc, out, err = await daq_cli("ack", unmonitored, "--journal", str(journal), "--who", "dave")
    assert rc == 0, err
    assert "without a safety monitor" in out
    assert journal_events(journal, unmonitored) == []


async def test_check_and_ack_user_errors_exit_2(tripped_run: tuple[Path, str], tmp_path: Path) -> None:
    journal, run_id = tripped_run
    rc, _, err = await daq_cli("check", run_id, "--journal", str(journal), "--limits", str(tmp_path / "nope.yaml"))
    assert rc == 2 and "nope.yaml" in err and "Traceback" not in err
    rc, _, err = await daq_cli("ack", "no-such-run", "--journal", str(journal))
    assert rc == 2 and "no run 'no-such-run'" in err
    rc, _, err = await daq_cli("ack", run_id, "--journal", str(journal), "--who", " ")
    assert rc == 2 and "--who" in err


async def test_check_of_a_run_recorded_without_limits_needs_a_limit_set(tmp_path: Path) -> None:
    bench = Bench(load_bench(sim_bench(tmp_path, poll_period_s=0.05)))
    await bench.start()
    try:
        await wait_until(lambda: bench.records_seen >= 5, what="a few records")
    finally:
        await bench.stop()
    rc, _, err = await daq_cli("check", bench.run_id, "--journal", str(bench.journal.path))
    assert rc == 2 and "pass --limits FILE" in err


def bench_with_safety(tmp_path: Path, limits_file: Path, **safety: object) -> Path:
    path = sim_bench(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["safety"] = {"limits": str(limits_file), **safety}
    path.write_text(yaml.safe_dump(cfg))
    return path


def bench_without_contactor_and_a_high_current_trip(tmp_path: Path) -> Path:
    regmap = yaml.safe_load(Path(CYCLER_REGMAP).read_text())
    regmap["registers"] = [r for r in regmap["registers"] if r["name"] != "contactor_closed"]
    (tmp_path / "no_contactor.yaml").write_text(yaml.safe_dump(regmap))
    high = write_limits(tmp_path, {"charge_current_max_a": {"trip": 400.0}}, "high.yaml")
    path = bench_with_safety(tmp_path, high)
    cfg = yaml.safe_load(path.read_text())
    cfg["devices"][0]["regmap"] = str(tmp_path / "no_contactor.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_validate_reports_the_safety_sections_problems(tmp_path: Path) -> None:
    bad = write_limits(tmp_path, {"cell_voltage_max_v": {"warn": 4.3, "trip": 4.2}}, "bad.yaml")
    rc, _, err = await daq_cli("validate", str(bench_with_safety(tmp_path, bad)))
    assert rc == 2
    assert "safety.limits" in err and "bad.yaml" in err and "cell_voltage_max_v" in err

    # a trip level the cycler's limit register cannot hold, and an escalation it cannot perform
    rc, _, err = await daq_cli("validate", str(bench_without_contactor_and_a_high_current_trip(tmp_path)))
    assert rc == 2
    assert "charge_current_max_a.trip = 400 does not fit cycler-0's limit_max_charge_current_a" in err
    assert "escalation: 'contactor' but cycler-0's register map has no contactor_closed" in err
