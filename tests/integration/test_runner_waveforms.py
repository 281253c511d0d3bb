"""Pulses on the simulated bench: edges on time, the charge they move, the record period per step."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.config.loader import load_bench
from daq.journal import JournalReader
from daq.runner import TestSession, prepare_test
from tests.helpers import sim_bench

PROFILE = {
    "name": "pulses",
    "record_period_s": 1.0,
    "steps": [
        {"kind": "pulse", "label": "discharge pulse", "direction": "discharge", "c_rate": 1,
         "pulse_duration_s": 10, "rest_duration_s": 40, "until": [{"voltage_below_v": 3.0}]},
        {"kind": "pulse", "label": "charge pulse", "direction": "charge", "c_rate": 0.75,
         "pulse_duration_s": 10, "rest_duration_s": 40, "until": [{"voltage_above_v": 4.2}]},
        "Rest for 60 seconds (10 second period)",
    ],
}  # fmt: skip


async def run_pulses(tmp_path: Path) -> tuple[TestSession, dict[int, dict[str, Any]]]:
    profile = tmp_path / "pulses.yaml"
    profile.write_text(yaml.safe_dump(PROFILE, sort_keys=False))
    loaded = load_bench(sim_bench(tmp_path, time_scale=40, poll_period_s=1.0))
    seen: dict[int, dict[str, Any]] = {}
    session: TestSession

    def watch(kind: str, data: dict[str, Any]) -> None:
        if kind in ("runner.step_started", "runner.step_ended"):
            sim = session.bench.simulation.cyclers["sim-0"]
            entry = seen.setdefault(data["step"], {})
            entry[kind] = data
            entry[kind + ":counter"] = sim.read("charge_ah")
            entry[kind + ":period"] = session.bench.pollers["cycler-0"].period_s

    session = TestSession(prepare_test(loaded, profile), on_event=watch)
    await session.start()
    outcome = None
    try:
        outcome = await session.run()
    finally:
        await session.close(outcome)
    assert outcome is not None and outcome.status == "completed"
    return session, seen


async def test_pulses_move_the_charge_the_cycler_counted_and_the_poll_period_follows_the_step(tmp_path: Path) -> None:
    _, seen = await run_pulses(tmp_path)
    for step, amps in ((1, -27.0), (2, 20.25)):
        ended = seen[step]["runner.step_ended"]
        assert ended["reason"] == "time" and ended["duration_s"] == pytest.approx(50, abs=1.0)
        expected_ah = amps * 10 / 3600
        device_ah = seen[step]["runner.step_ended:counter"] - seen[step]["runner.step_started:counter"]
        net = ended["charge_ah"] - ended["discharge_ah"]
        assert device_ah == pytest.approx(expected_ah, rel=0.05)  # the cycler did what was commanded
        assert net == pytest.approx(device_ah, rel=0.05)  # and the runner's integral agrees with it
    assert seen[3]["runner.step_ended"]["reason"] == "time"
    assert seen[1]["runner.step_started:period"] == 1.0
    assert seen[3]["runner.step_started:period"] == 10.0


async def test_records_during_a_step_are_spaced_by_its_record_period(tmp_path: Path) -> None:
    session, _ = await run_pulses(tmp_path)
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        times = [r.t_ns for r in reader.iter_run_records(session.run_id) if r.step == 3]
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) > 5.0
