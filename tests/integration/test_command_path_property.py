"""Property of the command path, checked on the simulator's side of the wire: over random profiles
(steps, loops, per-step and profile-wide limits) and random limit sets, no setpoint outside the
cycler's declared range or the safety limits in force is ever sent to the simulated cycler.

Each example either is refused before the start (a ConfigError: nothing is sent at all) or runs
for real: a bench with the simulated cycler over Modbus TCP, the runner and the safety monitor.
The simulated cycler logs every setpoint write it received, refused ones included
(``SimCycler.received``). Every current and voltage setpoint must lie inside the register map's
range and inside both the limits active when it arrived and the limits of the step it belongs to
(a step's command is sent while the global limits are still active, just before its own limits
take over: so the next active set is checked too).
"""

from __future__ import annotations

import asyncio
import bisect
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daq.config.loader import load_bench
from daq.errors import ConfigError
from daq.journal import JournalReader
from daq.runner import TestSession, prepare_test
from daq.runner.step_limits import current_problem, voltage_problem
from daq.safety.limits import LimitSet
from tests.integration.test_safety_support import safety_bench

SERIES = 14
CURRENT_RANGE_A = 300.0  # configs/regmaps/sim_cycler.yaml current_setpoint_a range
VOLTAGE_RANGE_V = (0.0, 100.0)  # the register map allows 0..1000; the simulated unit is rated 100 V


def _limit(trip: float, warn_fraction: float) -> dict[str, float]:
    return {"warn": round(trip * warn_fraction, 3), "trip": round(trip, 3)}


@st.composite
def limit_sets(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "charge_current_max_a": _limit(draw(st.floats(8.0, 120.0)), 0.9),
        "discharge_current_max_a": _limit(draw(st.floats(8.0, 120.0)), 0.9),
        "cell_voltage_max_v": {"warn": 4.22, "trip": draw(st.sampled_from([4.25, 4.3]))},
        "pack_voltage_max_v": _limit(draw(st.floats(56.0, 62.0)), 0.99),
    }


@st.composite
def step_limits(draw: st.DrawFn, globals_: dict[str, Any]) -> dict[str, Any] | None:
    """Mostly tighter than the global set, sometimes looser (then the profile must be refused)."""
    if draw(st.booleans()):
        return None
    out: dict[str, Any] = {}
    for name in draw(st.sets(st.sampled_from(["charge_current_max_a", "discharge_current_max_a"]), min_size=1)):
        out[name] = _limit(globals_[name]["trip"] * draw(st.floats(0.2, 1.15)), 0.9)
    if draw(st.booleans()):
        out["pack_voltage_max_v"] = _limit(globals_["pack_voltage_max_v"]["trip"] * draw(st.floats(0.9, 1.02)), 0.99)
    return out


@st.composite
def leaf_steps(draw: st.DrawFn, globals_: dict[str, Any]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["cc", "rest", "cv", "cccv", "pulse", "current_profile"]))
    duration = draw(st.floats(0.5, 2.0))
    direction = draw(st.sampled_from(["charge", "discharge"]))
    trip = globals_[f"{direction}_current_max_a"]["trip"]
    current = round(trip * draw(st.floats(0.05, 1.3)), 2)  # sometimes beyond the limits
    step: dict[str, Any] = {"kind": kind, "duration_s": duration}
    if kind == "cc":
        step |= {"direction": direction, "current_a": current}
        if draw(st.booleans()):
            key = "voltage_above_v" if direction == "charge" else "voltage_below_v"
            step["until"] = {key: draw(st.floats(3.9, 4.4) if direction == "charge" else st.floats(2.9, 3.6))}
    elif kind == "cv":
        step |= {"voltage_v": draw(st.floats(3.6, 4.4))}
        if draw(st.booleans()):
            step["current_a"] = current
    elif kind == "cccv":
        step |= {"direction": "charge", "current_a": current, "voltage_v": draw(st.floats(3.8, 4.4))}
    elif kind == "pulse":
        step |= {"direction": direction, "current_a": current, "pulse_duration_s": duration / 4, "count": 2}
        step["rest_duration_s"] = duration / 4
    elif kind == "current_profile":
        values = draw(st.lists(st.floats(-1.3, 1.3), min_size=2, max_size=4))
        scale = min(trip, globals_["discharge_current_max_a"]["trip"])
        times = [round(duration * i / len(values), 3) for i in range(len(values))]
        step |= {
            "series": {"quantity": "current_a", "time_s": times, "values": [round(v * scale, 2) for v in values]},
            "interpolation": "step",
        }
    limits = draw(step_limits(globals_))
    if limits:
        step["limits"] = limits
    return step


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the bench's limit set, the profile: its steps, or ``{"limits": profile-wide, "steps": ...}``)."""
    globals_ = draw(limit_sets())
    steps = draw(st.lists(leaf_steps(globals_), min_size=1, max_size=3))
    if draw(st.booleans()):
        loop: dict[str, Any] = {"kind": "loop", "repeat": 2, "steps": steps}
        limits = draw(step_limits(globals_))
        if limits:
            loop["limits"] = limits
        steps = [loop]
    profile_limits = draw(step_limits(globals_))
    if profile_limits:
        steps[0] = {**steps[0], "_profile_limits": profile_limits}  # carried to the profile's top level
    return globals_, steps


VALID = (
    {
        "charge_current_max_a": {"warn": 27.0, "trip": 30.0},
        "discharge_current_max_a": {"warn": 27.0, "trip": 30.0},
        "cell_voltage_max_v": {"warn": 4.22, "trip": 4.25},
        "pack_voltage_max_v": {"warn": 59.0, "trip": 59.5},
    },
    [
        {"kind": "cc", "direction": "charge", "current_a": 12.0, "duration_s": 1.0, "limits": {
            "charge_current_max_a": {"warn": 13.0, "trip": 14.0}}},
        {"kind": "pulse", "direction": "discharge", "current_a": 20.0, "pulse_duration_s": 0.3, "rest_duration_s": 0.3,
         "count": 2, "duration_s": 1.2},
    ],
)  # fmt: skip


def _active_sets(events: list[tuple[int, dict[str, Any]]], base: LimitSet) -> list[tuple[int, LimitSet]]:
    out = []
    for t_ns, data in events:
        recorded = data.get("limits")
        out.append((t_ns, LimitSet.model_validate(recorded) if recorded is not None else base))
    return out


def _check_received(journal: Path, run_id: str, received: list[Any], base: LimitSet) -> int:
    with JournalReader(journal) as reader:
        events = [(e.t_ns, e.data) for e in reader.run_events(run_id) if e.kind == "safety.step_limits"]
    switches = _active_sets(events, base)
    times = [t for t, _ in switches]
    checked = 0
    for write in received:
        i = bisect.bisect_right(times, write.t_ns)
        active = switches[i - 1][1] if i > 0 else base
        upcoming = switches[i][1] if i < len(switches) else base
        for limits in (active, upcoming):
            if write.name == "current_setpoint_a":
                assert abs(write.value) <= CURRENT_RANGE_A, write
                assert current_problem(write.value, limits) is None, (write, current_problem(write.value, limits))
            elif write.name == "voltage_setpoint_v":
                assert VOLTAGE_RANGE_V[0] <= write.value <= VOLTAGE_RANGE_V[1], write
                if write.value > 0:  # a ceiling (a discharge's floor lies below every maximum anyway)
                    problem = voltage_problem(write.value, limits, series_cells=SERIES)
                    assert problem is None, (write, problem)
        checked += 1
    return checked


async def _run(tmp: Path, globals_: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    bench = safety_bench(tmp, globals_, time_scale=10, poll_period_s=0.2, initial_soc=0.5)
    profile = tmp / "profile.yaml"
    doc: dict[str, Any] = {"name": "p", "record_period_s": 0.2}
    if "_profile_limits" in steps[0]:
        doc["limits"] = steps[0]["_profile_limits"]
        steps = [{k: v for k, v in steps[0].items() if k != "_profile_limits"}, *steps[1:]]
    profile.write_text(yaml.safe_dump({**doc, "steps": steps}, sort_keys=False))
    try:
        prepared = prepare_test(load_bench(bench), profile)
    except ConfigError:
        return  # refused before anything started: nothing was sent
    session = TestSession(prepared, metadata={"operator": "hypothesis"})
    await session.start()
    sim = session.bench.simulation.cyclers["sim-0"]
    outcome = None
    try:
        outcome = await asyncio.wait_for(session.run(), 60)
    finally:
        received = list(sim.received)
        await session.close(outcome)
    assert outcome is not None and outcome.status in ("completed", "aborted"), outcome
    base = load_bench(bench).limits
    assert base is not None
    checked = _check_received(tmp / "journal.sqlite", session.run_id, received, base)
    assert checked > 0  # the runner commanded the cycler at all


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(VALID)
@given(cases())
def test_no_setpoint_outside_the_device_range_or_the_active_limits_reaches_the_cycler(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    globals_, steps = case
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), globals_, steps))
