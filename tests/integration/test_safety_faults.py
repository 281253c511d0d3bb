"""The issue's faults against the simulators: each gives the right event, the right action (the
cycler's output verified off, or the cycler's own watchdog) and a complete journal.

The bench is the real one: the simulated cycler over Modbus TCP and a simulated BMS (JBD, Daly or
Modbus RTU) on a pseudo-terminal, watching the pack the cycler charges, read by the real drivers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from drivers.bms.daly.codec import encode_alarms
from drivers.bms.jbd.codec import protection_bits_for
from drivers.bms.model import AlarmLevel, AlarmName
from simulators.bms_bus import sensor_positions
from tests.helpers import wait_until
from tests.integration.test_safety_support import (
    CELLS,
    SENSORS,
    journal_events,
    journal_record_count,
    safety_bench,
)

CHARGE = CyclerCommand(CyclerMode.CC, current_a=13.5, voltage_v=14 * 4.2)
LIMITS: dict[str, Any] = {
    "cell_voltage_max_v": {"warn": 3.95, "trip": 4.0, "persistence_s": 0.2, "hysteresis": 0.01},
    "cell_temperature_max_c": {"warn": 50.0, "trip": 60.0},
    "temperature_rise_max_c_per_s": {"warn": 0.5, "trip": 1.0, "window_s": 1.0, "persistence_s": 1.0},
    "temperature_sensor_fault": {"level": "trip", "persistence_s": 0.3},
    "data_age_max_s": {"warn": 1.5, "trip": 3.0},
    "bms_alarm_level": {"warn": 1, "trip": 2},
}
BMS_PROTOCOLS = ["jbd", "daly", "modbus"]


@dataclass
class Rig:
    bench: Bench
    protocol: str

    @property
    def sim(self) -> Any:
        return self.bench.simulation.cyclers["sim-0"]

    @property
    def pack(self) -> Any:
        return self.bench.simulation.pack.model

    @property
    def bms_device(self) -> Any:
        return self.bench.simulation.bms_devices["sim-bms"][1]

    def output_on(self) -> bool:
        return bool(self.sim.read("output_on"))

    def events(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return journal_events(self.bench.journal.path, self.bench.run_id, prefix)

    def trips(self) -> list[dict[str, Any]]:
        return [d for _, d in self.events("alarm.tripped")]


async def _rig(tmp_path: Path, protocol: str) -> AsyncIterator[Rig]:
    path = safety_bench(tmp_path, LIMITS, bms=protocol, time_scale=2, poll_period_s=0.1, watchdog_timeout_s=1.0)
    bench = Bench(load_bench(path))
    await bench.start()
    try:
        await bench.cyclers["cycler-0"].apply(CHARGE)
        await wait_until(lambda: _current(bench, "bms-1") > 13.0, what="the BMS seeing the charge current")
        yield Rig(bench, protocol)
    finally:
        await bench.stop()
    # nothing lost: every record the bench saw is in the journal
    assert journal_record_count(bench.journal.path, bench.run_id) == bench.records_seen


@pytest.fixture(params=BMS_PROTOCOLS)
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async for r in _rig(tmp_path, request.param):
        yield r


@pytest.fixture
async def jbd_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in _rig(tmp_path, "jbd"):
        yield r


def _current(bench: Bench, device: str) -> float:
    rec = bench.latest.get(device)
    return float("nan") if rec is None else rec.get("current_a")


async def _tripped_and_safe(rig: Rig, fault: Callable[[], None]) -> dict[str, Any]:
    """Inject ``fault`` while charging; wait for the ladder; return the first trip event."""
    assert rig.output_on() and not rig.bench.safety.tripped
    fault()
    await wait_until(lambda: rig.bench.safety.ladder_runs >= 1, what="the action ladder")
    assert not rig.output_on() and rig.sim.read("current_a") == 0.0
    assert rig.bench.safety.last_outcomes["cycler-0"].how == "output verified off"
    await rig.bench.stop()  # commits the journal
    (summary,) = [d for _, d in rig.events("safety.safe_state")]
    assert summary["safe"] is True
    return rig.trips()[0]


async def test_cell_drifting_over_its_maximum_during_charge(rig: Rig) -> None:
    trip = await _tripped_and_safe(rig, lambda: rig.pack.drift_cell_voltage(3, 0.2))
    assert (trip["limit"], trip["device"], trip["channel"], trip["threshold"]) == (
        "cell_voltage_max_v",
        "bms-1",
        "cell3_v",
        4.0,
    )
    assert trip["value"] >= 4.0
    alarms = rig.events("alarm.")
    on_cell3 = [k for k, d in alarms if d["channel"] == "cell3_v"]
    assert on_cell3[:2] == ["alarm.raised", "alarm.tripped"], alarms  # the warning at 3.95 V came first


async def test_open_thermistor_trips_and_never_reads_as_cool(rig: Rig) -> None:
    sensor = 2
    cell = sensor_positions(CELLS, SENSORS)[sensor - 1] + 1
    trip = await _tripped_and_safe(rig, lambda: rig.pack.set_thermistor_open(cell))
    assert (trip["limit"], trip["device"], trip["channel"]) == ("temperature_sensor_fault", "bms-1", f"temp{sensor}_c")
    assert "open or out of range" in trip["message"]


async def test_temperature_rising_faster_than_the_rate_limit(rig: Rig) -> None:
    trip = await _tripped_and_safe(rig, lambda: rig.pack.set_cell_heating(1, 2.0))  # sensor 1 sits on cell 1
    assert trip["limit"] == "temperature_rise_max_c_per_s"
    assert trip["value"] >= 1.0
    # the hottest cell is far from its maximum temperature: the rate alone tripped
    assert rig.bench.latest["bms-1"].get("temp1_c") < 50.0


async def test_bms_going_silent_is_a_trip(rig: Rig) -> None:
    def silence() -> None:
        rig.bench.simulation.faults["sim-bms"].silent = True

    trip = await _tripped_and_safe(rig, silence)
    assert (trip["limit"], trip["device"], trip["channel"]) == ("data_age_max_s", "bms-1", "data_age_s")
    assert trip["value"] >= 3.0


async def test_bms_raising_its_own_alarm_is_a_trip(rig: Rig) -> None:
    alarms = {AlarmName.CELL_OVERVOLTAGE: AlarmLevel.ALARM}

    def protect() -> None:
        device = rig.bms_device
        if rig.protocol == "jbd":
            device.state.protection_bits = protection_bits_for(alarms)
        elif rig.protocol == "daly":
            device.state.alarm_data = encode_alarms(alarms)
        else:
            device.alarms = alarms

    trip = await _tripped_and_safe(rig, protect)
    assert (trip["limit"], trip["device"], trip["channel"], trip["value"]) == (
        "bms_alarm_level",
        "bms-1",
        "alarm_level",
        2.0,
    )


async def test_cycler_going_silent_the_ladder_fails_and_the_cyclers_watchdog_acts(jbd_rig: Rig) -> None:
    rig = jbd_rig
    rig.bench.simulation.faults["sim-0"].silent = True
    await wait_until(lambda: rig.bench.safety.ladder_runs >= 1, timeout=60, what="the ladder to give up")
    outcome = rig.bench.safety.last_outcomes["cycler-0"]
    assert not outcome.safe and outcome.how.startswith("NOT SAFE")
    # The cycler's own watchdog (1 s, no refresh got through) switched the output off.
    await wait_until(lambda: not rig.output_on(), what="the device watchdog")
    assert rig.sim.read("watchdog_tripped") == 1
    await rig.bench.stop()
    events = rig.events()
    trip = next(d for k, d in events if k == "alarm.tripped")
    assert (trip["limit"], trip["device"]) == ("data_age_max_s", "cycler-0")
    steps = [d["what"] for k, d in events if k == "safety.action"]
    assert steps.count("output_off") == 3 and steps[-2:] == ["open_contactor", "give_up"]
    (summary,) = [d for k, d in events if k == "safety.safe_state"]
    assert summary["safe"] is False
