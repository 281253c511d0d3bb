"""A profile step's own ``limits:`` tighten the bench's limit set while that step runs: a real test
on the simulated cycler over Modbus TCP trips on a step limit the global limits would not trip
on, the switch is journaled with the active set, and ``daq check`` reports the trip under that step."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from daq.cli.main import main
from daq.config.loader import load_bench
from daq.journal import JournalReader
from daq.report.data import gather
from daq.runner import TestSession, prepare_test
from tests.helpers import sim_bench
from tests.integration.test_runner_controls import write_profile
from tests.integration.test_safety_support import daq_cli, journal_events, safety_bench, write_limits

# 14s NMC at 50 % SOC rests near 51.9 V; charging at 13.5 A lifts it by about 1.5 V at once.
GLOBAL = {"pack_voltage_max_v": {"warn": 59.08, "trip": 59.5, "persistence_s": 0.2, "hysteresis": 0.3}}
STEP_LIMIT = {"pack_voltage_max_v": {"warn": 52.6, "trip": 52.8}}
STEPS: list[Any] = [
    {"kind": "rest", "label": "settle", "duration_s": 2},
    {
        "kind": "cc",
        "label": "gentle charge",
        "direction": "charge",
        "current_a": 13.5,
        "duration_s": 600,
        "limits": STEP_LIMIT,
    },
]


async def test_a_step_limit_trips_where_the_global_limit_would_not_and_daq_check_reports_it_there(
    tmp_path: Path,
) -> None:
    bench = safety_bench(tmp_path, GLOBAL, time_scale=5, poll_period_s=0.1, initial_soc=0.5)
    profile = write_profile(tmp_path, STEPS)
    session = TestSession(prepare_test(load_bench(bench), profile), metadata={"operator": "t"})
    await session.start()
    task = asyncio.create_task(session.run(), name="test:run")
    outcome = None
    try:
        outcome = await asyncio.wait_for(task, 60)
    finally:
        if not task.done():
            task.cancel()
        sim = session.bench.simulation.cyclers["sim-0"]
        output_on = sim.output_on
        await session.close(outcome)
    run_id, journal = session.run_id, tmp_path / "journal.sqlite"
    assert outcome is not None and outcome.status == "aborted", outcome
    assert "voltage_v" in outcome.reason and "above trip 52.8 V" in outcome.reason
    assert not output_on

    switches = [d for _, d in journal_events(journal, run_id, "safety.step_limits") if d.get("step_number") == 2]
    tightened = [d for d in switches if d["tightened"]]
    assert tightened, switches
    assert tightened[0]["label"] == "step 2 (gentle charge)"
    assert tightened[0]["overrides"] == [STEP_LIMIT]
    assert tightened[0]["limits"]["pack_voltage_max_v"]["trip"] == 52.8
    with JournalReader(journal) as reader:
        peak = max(r.get("voltage_v") for r in reader.iter_run_records(run_id))
    assert peak < GLOBAL["pack_voltage_max_v"]["warn"]  # the global limits alone: nothing to see

    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--json")
    assert rc == 1, err
    (trip,) = [e for e in json.loads(out)["excursions"] if e["level"] == "trip"]
    assert (trip["limit"], trip["threshold"], trip["step"]) == ("pack_voltage_max_v", 52.8, 2)
    assert trip["step_limits"] == "profile"
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal))
    assert rc == 1, err
    (row,) = [line for line in out.splitlines() if line.startswith("trip ")]
    assert row.split()[1] == "pack_voltage_max_v" and row.split()[-2:] == ["2", "profile"], out

    # the report's verdict replays the same switches
    with JournalReader(journal) as reader:
        report = gather(reader, reader.run(run_id))
    assert report.check is not None and [e.threshold for e in report.check.trips] == [52.8]

    # judged against another spec: the profile's step limits are rebuilt on top of it
    other = write_limits(tmp_path, {"pack_voltage_max_v": {"warn": 58.0, "trip": 59.0}}, name="other.yaml")
    rc, out, err = await daq_cli("check", run_id, "--journal", str(journal), "--limits", str(other), "--json")
    assert rc == 1, err
    (trip,) = [e for e in json.loads(out)["excursions"] if e["level"] == "trip"]
    assert (trip["threshold"], trip["step"], trip["step_limits"]) == (52.8, 2, "profile")


async def test_the_profile_wide_limits_tighten_every_step_too(tmp_path: Path) -> None:
    bench = safety_bench(tmp_path, GLOBAL, time_scale=5, poll_period_s=0.1, initial_soc=0.5)
    steps = [STEPS[0], {k: v for k, v in STEPS[1].items() if k != "limits"}]
    profile = write_profile(tmp_path, steps, limits=STEP_LIMIT)  # inline, for the whole profile
    session = TestSession(prepare_test(load_bench(bench), profile), metadata={"operator": "t"})
    await session.start()
    outcome = None
    try:
        outcome = await asyncio.wait_for(session.run(), 60)
    finally:
        await session.close(outcome)
    assert outcome is not None and outcome.status == "aborted" and "above trip 52.8 V" in outcome.reason
    switches = journal_events(tmp_path / "journal.sqlite", session.run_id, "safety.step_limits")
    started = [d for _, d in switches if d.get("label")]
    assert [d["label"] for d in started] == ["step 1 (settle)", "step 2 (gentle charge)"]
    assert all(d["limits"]["pack_voltage_max_v"]["trip"] == 52.8 for d in started)


def test_profile_wide_limits_that_loosen_or_have_no_safety_to_enforce_them_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = {"pack_voltage_max_v": {"warn": 59.0, "trip": 60.0}}
    profile = write_profile(tmp_path, STEPS[:1], limits=loose)
    assert main(["test", "start", str(safety_bench(tmp_path, GLOBAL)), str(profile)]) == 2
    err = capsys.readouterr().err
    expected = "step 1 (settle): the profile's limits: pack_voltage_max_v.trip: 60.0 is higher than the global 59.5"
    assert f"error: {profile}: {expected}" in err, err
    profile = write_profile(tmp_path, STEPS[:1], limits=STEP_LIMIT)
    assert main(["test", "start", str(sim_bench(tmp_path)), str(profile)]) == 2
    err = capsys.readouterr().err
    assert f"error: {profile}: limits: the bench" in err and "has no safety: section" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("step_limits", "bench_has_safety", "expected"),
    [
        (
            {"pack_voltage_max_v": {"trip": 60.0}},
            True,
            "step 2 (gentle charge): limits: pack_voltage_max_v.trip: 60.0 is higher than the global 59.5",
        ),
        (
            {"until": {"voltage_above_v": 4.1}, **STEP_LIMIT},  # the CC clamp would be 57.4 V
            True,
            "step 2 (gentle charge): commands 57.4 V, at or beyond its limits pack_voltage_max_v.trip 52.8 V;",
        ),
        (
            {"charge_current_max_a": {"trip": 10.0}},
            True,
            "step 2 (gentle charge): commands 13.5 A, at or beyond its limits charge_current_max_a.trip 10 A;",
        ),
        (STEP_LIMIT, False, "step 2 (gentle charge): limits: the bench"),
    ],
)
def test_step_limits_that_cannot_protect_reject_the_profile_before_the_test_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step_limits: dict[str, Any],
    bench_has_safety: bool,
    expected: str,
) -> None:
    if bench_has_safety:
        bench = safety_bench(tmp_path, GLOBAL)
    else:
        bench = sim_bench(tmp_path)
    until = step_limits.pop("until", None)
    charge = {**STEPS[1], "limits": step_limits} | ({"until": until} if until else {})
    profile = write_profile(tmp_path, [STEPS[0], charge])
    assert main(["test", "start", str(bench), str(profile)]) == 2
    err = capsys.readouterr().err
    assert f"error: {profile}: {expected}" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "journal.sqlite").exists()
