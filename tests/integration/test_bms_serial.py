"""JBD and Daly drivers against the simulated RS-485 bus, over real pseudo-terminals.

Every fault the issue lists for serial BMS units is injected in the simulator and observed through
the driver's values and qualities: checksum errors, truncated frames, garbage between frames, a
silent device, slow replies, a refusal, protection bits, an open thermistor, a drifting cell, a
wrong baud rate, another protocol on the line, a port that disappears or is busy.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import serial

from daq.clock import ManualClock
from daq.errors import ConnectError, DriverError, ProtocolError, ResponseTimeoutError, TransportError
from daq.records import Quality
from drivers.bms.daly.codec import encode_alarms
from drivers.bms.daly.driver import DalyDriver, host_address
from drivers.bms.jbd.codec import protection_bits_for
from drivers.bms.jbd.driver import JbdDriver
from drivers.bms.model import AlarmLevel, AlarmName
from drivers.bus import SerialBus, idle_gap_s
from drivers.serial_link import SerialLink
from simulators.bms.daly_device import DalyDeviceState, SimDalyDevice
from simulators.bms.jbd_device import JbdDeviceState, SimJbdDevice
from simulators.bms_bus import BusMember, SimBmsBus, module_snapshot
from simulators.modbus_faults import ModbusFaults
from simulators.models.pack import PackModel, PackParams, SimPack

CELLS = 14
GOOD, BAD_FRAME, TIMEOUT = int(Quality.GOOD), int(Quality.BAD_FRAME), int(Quality.TIMEOUT)


def make_pack(cells: int = CELLS) -> tuple[SimPack, ManualClock]:
    clock = ManualClock()
    return SimPack(PackModel(PackParams(series_cells=cells, seed=3)), clock), clock


class Poll:
    """One driver poll: values and qualities by channel name, and the error the poll raised."""

    def __init__(
        self, driver: JbdDriver | DalyDriver, values: list[float], quality: bytearray, error: Exception | None
    ):
        self.index = driver.schema.index
        self.values = values
        self.quality = bytes(quality)
        self.error = error

    def __getitem__(self, channel: str) -> float:
        return self.values[self.index[channel]]

    def q(self, channel: str) -> int:
        return self.quality[self.index[channel]]

    @property
    def all_good(self) -> bool:
        return not any(self.quality) and self.error is None


async def poll(driver: JbdDriver | DalyDriver) -> Poll:
    n = len(driver.schema)
    values, quality = [math.nan] * n, bytearray(n)
    error: Exception | None = None
    try:
        await driver.read(values, quality)
    except ProtocolError as exc:
        error = exc
    return Poll(driver, values, quality, error)


def host_bus(path: str, *, protocol: str, baud: int = 9600) -> SerialBus:
    return SerialBus(SerialLink(path, baud=baud), idle_gap_s=idle_gap_s(protocol, baud=baud))  # type: ignore[arg-type]


@asynccontextmanager
async def jbd_bench(
    pack: SimPack,
    *,
    state: JbdDeviceState | None = None,
    host_baud: int = 9600,
    cells: int = CELLS,
    timeout_s: float = 0.3,
    pacing: bool = False,
) -> AsyncIterator[tuple[SimBmsBus, JbdDriver, SimJbdDevice]]:
    device = SimJbdDevice(state)
    sim = SimBmsBus("jbd", [BusMember(1, device, pack.snapshot)], baud=9600, pacing=pacing)
    async with sim:
        driver = JbdDriver(
            "bms-1",
            bus=host_bus(sim.port_path, protocol="jbd", baud=host_baud),
            cells=cells,
            sensors=2,
            timeout_s=timeout_s,
        )
        await driver.connect()
        try:
            yield sim, driver, device
        finally:
            await driver.close()


def module_view(pack: SimPack, first: int, cells: int) -> Callable[[], object]:
    return lambda: module_snapshot(pack.snapshot(), first, cells)


@asynccontextmanager
async def daly_bench(
    pack: SimPack,
    *,
    boards: int = 3,
    cells: int = 4,
    unit_faults: dict[int, ModbusFaults] | None = None,
    pacing: bool = False,
) -> AsyncIterator[tuple[SimBmsBus, list[DalyDriver], list[SimDalyDevice]]]:
    devices = [
        SimDalyDevice(
            DalyDeviceState(address=b, host_addresses=frozenset({host_address(b)}), sensor_cells=(0, cells - 1))
        )
        for b in range(1, boards + 1)
    ]
    members = [
        BusMember(b, devices[b - 1], module_view(pack, (b - 1) * cells, cells), faults=(unit_faults or {}).get(b))
        for b in range(1, boards + 1)
    ]
    sim = SimBmsBus("daly", members, baud=9600, pacing=pacing)
    async with sim:
        shared = host_bus(sim.port_path, protocol="daly")
        drivers = [
            DalyDriver(f"bms-{b}", bus=shared, cells=cells, sensors=2, address=b, timeout_s=0.5 if pacing else 0.3)
            for b in range(1, boards + 1)
        ]
        for d in drivers:
            await d.connect()
        try:
            yield sim, drivers, devices
        finally:
            for d in drivers:
                await d.close()


# ------------------------------------------------------------------------------------------- JBD


async def test_jbd_poll_reports_every_cell_and_current_is_charge_positive() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (_, driver, _):
        assert driver.info["hardware_name"] == "SIM-JBD-SP16S020"
        assert driver.info["cells_reported"] == CELLS
        pack.set_current(-12.5)
        got = await poll(driver)
        assert got.all_good
        snap = pack.snapshot()
        for n in range(1, CELLS + 1):
            assert got[f"cell{n}_v"] == pytest.approx(snap.cell_voltages_v[n - 1], abs=0.0011)
        assert got["current_a"] == pytest.approx(-12.5)
        assert got["voltage_v"] == pytest.approx(snap.voltage_v, abs=0.011)
        pack.set_current(8.0)
        assert (await poll(driver))["current_a"] == pytest.approx(8.0)


async def test_jbd_checksum_error_marks_that_reply_bad_and_the_next_poll_is_good() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (sim, driver, _):
        sim.faults.bad_crc_next = 1  # the basic-info reply of the next poll
        got = await poll(driver)
        assert isinstance(got.error, ProtocolError) and "checksum" in str(got.error)
        for channel in ("voltage_v", "current_a", "temp1_c", "alarm_level", "charge_fet"):
            assert got.q(channel) == BAD_FRAME and math.isnan(got[channel])
        assert got.q("cell1_v") == GOOD  # the cell-voltage reply was intact
        assert (await poll(driver)).all_good


async def test_jbd_truncated_reply_is_a_bad_frame_not_a_hang() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (sim, driver, _):
        sim.faults.truncate_next = 1
        got = await poll(driver)
        assert got.q("voltage_v") == BAD_FRAME and "cut short" in str(got.error)
        assert got.q("cell5_v") == GOOD
        assert (await poll(driver)).all_good


async def test_garbage_between_frames_is_skipped_and_the_reply_still_read() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (sim, driver, _):
        # Noise including a start byte and the basic-info register: the decoder must resynchronise.
        sim.faults.garbage = b"\x00\xdd\x13\xff\x77\x55\xdd"
        sim.faults.garbage_next = 2
        got = await poll(driver)
        assert got.all_good
        assert sim.faults.injected["garbage"] == 2


async def test_silent_device_times_out_and_answers_again_when_it_wakes() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (sim, driver, _):
        sim.faults.silent = True
        with pytest.raises(ResponseTimeoutError, match="no answer"):
            await poll(driver)
        sim.faults.silent = False
        assert (await poll(driver)).all_good


async def test_slow_reply_within_the_timeout_is_read_and_a_late_one_does_not_confuse_the_next_poll() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack, timeout_s=0.4) as (sim, driver, _):
        sim.faults.reply_delay_s = 0.1
        assert (await poll(driver)).all_good
        sim.faults.reply_delay_s = 0.6  # beyond the timeout: the reply arrives after we gave up
        with pytest.raises(ResponseTimeoutError):
            await poll(driver)
        sim.faults.reply_delay_s = 0.0
        got = await poll(driver)  # the late reply is flushed or skipped, never taken as this one
        assert got.all_good


async def test_refused_register_is_a_device_exception_on_its_channels_only() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack, state=JbdDeviceState(refused_registers=frozenset({0x04}))) as (_, driver, _):
        got = await poll(driver)
        assert got.q("cell1_v") == int(Quality.DEVICE_EXCEPTION) and got.q(f"cell{CELLS}_v") == int(
            Quality.DEVICE_EXCEPTION
        )
        assert got.q("voltage_v") == GOOD and "status 0x80" in str(got.error)


async def test_exception_fault_on_jbd_is_answered_with_status_0x80() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (sim, driver, _):
        sim.faults.exception_next = 1
        got = await poll(driver)
        assert got.q("voltage_v") == int(Quality.DEVICE_EXCEPTION)
        assert (await poll(driver)).all_good


async def test_protection_bits_become_neutral_alarms() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (_, driver, device):
        device.state.protection_bits = protection_bits_for(
            {AlarmName.CELL_OVERVOLTAGE: AlarmLevel.ALARM, AlarmName.DISCHARGE_OVERCURRENT: AlarmLevel.ALARM}
        )
        got = await poll(driver)
        assert got["alarm_level"] == 2
        assert got["alarm_cell_overvoltage"] == 2 and got["alarm_discharge_overcurrent"] == 2
        assert got["alarm_cell_undervoltage"] == 0
        assert math.isnan(got["alarm_fuse"]) and got.q("alarm_fuse") == GOOD  # JBD cannot report it
        device.state.protection_bits = 0
        assert (await poll(driver))["alarm_level"] == 0


async def test_open_thermistor_is_nan_out_of_range_and_the_other_sensor_reads() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack) as (_, driver, _):
        pack.model.set_thermistor_open(1)  # the NTC on cell 1 (JBD NTC 1)
        got = await poll(driver)
        assert math.isnan(got["temp1_c"]) and got.q("temp1_c") == int(Quality.OUT_OF_RANGE)
        assert got.q("temp2_c") == GOOD and got["temp2_c"] == pytest.approx(25.0, abs=0.2)
        assert got.error is None  # a sensor sentinel is data, not a communication problem


@pytest.mark.parametrize("volts_per_s", [0.02, -0.02])
async def test_a_drifting_cell_is_seen_moving_away_from_the_others(volts_per_s: float) -> None:
    pack, clock = make_pack()
    async with jbd_bench(pack) as (_, driver, _):
        before = await poll(driver)
        pack.model.drift_cell_voltage(5, volts_per_s)
        clock.advance(10.0)
        after = await poll(driver)
        moved = after["cell5_v"] - before["cell5_v"]
        others = after["cell4_v"] - before["cell4_v"]
        assert moved == pytest.approx(10 * volts_per_s, abs=0.005)
        assert abs(others) < 0.002


async def test_wrong_baud_rate_is_bad_frame_with_one_clear_line_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    pack, _ = make_pack()
    caplog.set_level(logging.WARNING, logger="drivers.bms.shell")
    async with jbd_bench(pack, host_baud=19200) as (sim, driver, _):
        for _ in range(3):
            got = await poll(driver)
            assert set(got.quality) == {BAD_FRAME}
            assert "wrong baud rate (configured 19200)" in str(got.error)
        problem_lines = [r for r in caplog.records if "no valid JBD frame" in r.getMessage()]
        assert len(problem_lines) == 1  # said once, not every poll
        sim.baud = 19200  # somebody set the BMS to the bench file's rate
        assert (await poll(driver)).all_good
        assert any("answering correctly again" in r.getMessage() for r in caplog.records)


async def test_a_device_speaking_another_protocol_is_named(caplog: pytest.LogCaptureFixture) -> None:
    pack, _ = make_pack()
    caplog.set_level(logging.WARNING, logger="drivers.bms.shell")
    async with jbd_bench(pack) as (sim, driver, _):
        sim.members[1].wrong_protocol = "daly"
        got = await poll(driver)
        assert set(got.quality) == {BAD_FRAME}
        assert "speaks Daly, not JBD" in str(got.error)
        sim.members[1].wrong_protocol = "modbus"
        assert "speaks Modbus RTU" in str((await poll(driver)).error)
        sim.members[1].wrong_protocol = None
        assert (await poll(driver)).all_good


async def test_configured_cell_count_that_disagrees_with_the_bms_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pack, _ = make_pack()
    caplog.set_level(logging.WARNING, logger="drivers.bms.shell")
    async with jbd_bench(pack, cells=16) as (_, driver, _):
        assert any("reports 14 cells" in r.getMessage() for r in caplog.records)
        got = await poll(driver)
        assert got.q("cell14_v") == GOOD and got.q("cell16_v") == int(Quality.OUT_OF_RANGE)


async def test_paced_bus_still_answers_every_request() -> None:
    pack, _ = make_pack()
    async with jbd_bench(pack, pacing=True, timeout_s=1.0) as (sim, driver, _):
        for _ in range(3):
            assert (await poll(driver)).all_good
        assert sim.stats.replies == sim.stats.requests


# ------------------------------------------------------------------------------------------ Daly


async def test_daly_boards_on_one_bus_each_report_their_own_module() -> None:
    pack, _ = make_pack(12)
    async with daly_bench(pack, boards=3, cells=4) as (sim, drivers, _):
        snap = pack.snapshot()
        for k, driver in enumerate(drivers):
            got = await poll(driver)
            assert got.all_good, got.error
            for n in range(1, 5):
                assert got[f"cell{n}_v"] == pytest.approx(snap.cell_voltages_v[4 * k + n - 1], abs=0.0011)
            assert got["voltage_v"] == pytest.approx(sum(snap.cell_voltages_v[4 * k : 4 * k + 4]), abs=0.051)
        assert sim.stats.per_address == {1: 7, 2: 7, 3: 7}  # each: the probe (0x94), then six queries
        assert all(d.info["cells_reported"] == 4 for d in drivers)


async def test_daly_padding_frames_are_drained_before_the_next_request() -> None:
    pack, _ = make_pack(12)
    async with daly_bench(pack, boards=1, cells=12, pacing=True) as (_, (driver,), (device,)):
        device.state.cell_frames = 16  # firmware that always sends 48 cells' worth of frames
        for _ in range(3):
            assert (await poll(driver)).all_good
        # Every padding frame reached the host (after the 4 needed ones, or before the next request
        # when it was flushed) and none was taken for a later reply.
        assert driver.bus.link.received >= 3 * 16 * 13


async def test_daly_missing_frame_marks_the_cells_bad_and_names_the_frame() -> None:
    pack, _ = make_pack(12)
    async with daly_bench(pack, boards=1, cells=12) as (_, (driver,), (device,)):
        device.state.dropped_frames = frozenset({2})
        got = await poll(driver)
        assert got.q("cell1_v") == BAD_FRAME and got.q("cell12_v") == BAD_FRAME
        assert "[2]" in str(got.error)
        assert got.q("voltage_v") == GOOD and got.q("alarm_level") == GOOD
        device.state.dropped_frames = frozenset()
        device.state.duplicated_frames = frozenset({1, 3})  # repeats carry nothing new
        assert (await poll(driver)).all_good


async def test_daly_alarm_levels_and_open_sensor() -> None:
    pack, _ = make_pack(12)
    async with daly_bench(pack, boards=1, cells=12) as (_, (driver,), (device,)):
        device.state.alarm_data = encode_alarms(
            {AlarmName.CELL_OVERVOLTAGE: AlarmLevel.WARNING, AlarmName.CELL_IMBALANCE: AlarmLevel.ALARM}
        )
        pack.model.set_thermistor_open(12)  # the sensor on the last cell
        got = await poll(driver)
        assert got["alarm_level"] == 2
        assert got["alarm_cell_overvoltage"] == 1 and got["alarm_cell_imbalance"] == 2
        assert got.q("temp2_c") == int(Quality.OUT_OF_RANGE) and got.q("temp1_c") == GOOD


async def test_daly_checksum_error_on_one_board_leaves_the_others_alone() -> None:
    pack, _ = make_pack(12)
    faults = {2: ModbusFaults(crc_error_rate=1.0)}
    async with daly_bench(pack, boards=3, cells=4, unit_faults=faults) as (_, drivers, _):
        polls = [await poll(d) for d in drivers]
        assert polls[0].all_good and polls[2].all_good
        assert set(polls[1].quality) == {BAD_FRAME} and "checksum" in str(polls[1].error)


async def test_daly_silent_board_times_out_and_the_others_answer() -> None:
    pack, _ = make_pack(12)
    faults = {3: ModbusFaults()}
    async with daly_bench(pack, boards=3, cells=4, unit_faults=faults) as (_, drivers, _):
        faults[3].silent = True
        with pytest.raises(ResponseTimeoutError):
            await poll(drivers[2])
        assert (await poll(drivers[0])).all_good
        faults[3].silent = False
        assert (await poll(drivers[2])).all_good


# ------------------------------------------------------------------------------- the port itself


async def test_port_that_disappears_reports_a_clear_error_and_comes_back(tmp_path: Path) -> None:
    pack, _ = make_pack()
    by_id = tmp_path / "usb-BMS-if00"  # like /dev/serial/by-id/...: a link that vanishes on unplug
    first = SimBmsBus("jbd", [BusMember(1, SimJbdDevice(), pack.snapshot)])
    await first.start()
    os.symlink(first.port_path, by_id)
    driver = JbdDriver("bms-1", bus=host_bus(str(by_id), protocol="jbd"), cells=CELLS, sensors=2, timeout_s=0.3)
    try:
        await driver.connect()
        assert (await poll(driver)).all_good
        await first.stop()  # the adapter is pulled
        by_id.unlink()
        with pytest.raises(TransportError):
            await poll(driver)
        with pytest.raises(ConnectError, match="does not exist"):
            await driver.connect()
        async with SimBmsBus("jbd", [BusMember(1, SimJbdDevice(), pack.snapshot)]) as second:
            os.symlink(second.port_path, by_id)  # plugged back in
            await driver.connect()
            assert (await poll(driver)).all_good
    finally:
        await driver.close()
        await first.stop()


async def test_busy_port_is_refused_with_one_clear_line_until_released() -> None:
    pack, _ = make_pack()
    async with SimBmsBus("jbd", [BusMember(1, SimJbdDevice(), pack.snapshot)]) as sim:
        other_program = serial.Serial(sim.port_path, exclusive=True)
        driver = JbdDriver("bms-1", bus=host_bus(sim.port_path, protocol="jbd"), cells=CELLS, sensors=2)
        try:
            with pytest.raises(ConnectError, match="in use by another program"):
                await driver.connect()
            other_program.close()
            await driver.connect()
            assert (await poll(driver)).all_good
        finally:
            other_program.close()
            await driver.close()


async def test_a_port_that_never_existed_is_named() -> None:
    driver = JbdDriver("bms-1", bus=host_bus("/dev/ttyNOSUCHBMS", protocol="jbd"), cells=CELLS, sensors=2)
    with pytest.raises(ConnectError, match="/dev/ttyNOSUCHBMS does not exist"):
        await driver.connect()
    await driver.close()


def test_error_classes_are_the_project_tree() -> None:
    assert issubclass(ResponseTimeoutError, TransportError) and issubclass(ProtocolError, DriverError)
