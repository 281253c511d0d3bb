"""The simulated Modbus RTU BMS (configs/regmaps/sim_bms.yaml) through the register-map driver,
several modules on one pseudo-terminal bus."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from daq.clock import ManualClock
from daq.errors import ResponseTimeoutError
from daq.records import Quality
from drivers.bms.model import AlarmLevel, AlarmName
from drivers.modbus.driver import ModbusDriver, ModbusLink, SerialEndpoint
from drivers.modbus.regmap import load_regmap
from simulators.bms_modbus import SimModbusBms
from simulators.modbus_faults import ModbusFaults
from simulators.modbus_server import ModbusRtuPtyServer
from simulators.models.pack import PackModel, PackParams, SimPack
from simulators.regmap_unit import RegmapUnit
from tests.helpers import REPO

REGMAP = load_regmap(REPO / "configs" / "regmaps" / "sim_bms.yaml")
GOOD = int(Quality.GOOD)


class Reading:
    def __init__(self, driver: ModbusDriver, values: list[float], quality: bytearray) -> None:
        self.index = driver.schema.index
        self.values = values
        self.quality = bytes(quality)

    def __getitem__(self, channel: str) -> float:
        return self.values[self.index[channel]]

    def q(self, channel: str) -> int:
        return self.quality[self.index[channel]]


async def read(driver: ModbusDriver) -> Reading:
    n = len(driver.schema)
    values, quality = [math.nan] * n, bytearray(n)
    await driver.read(values, quality)
    return Reading(driver, values, quality)


@asynccontextmanager
async def modbus_bms_bus(
    pack: SimPack,
    *,
    cells: int,
    modules: int = 2,
    baud: int | None = None,
    unit_faults: dict[int, ModbusFaults] | None = None,
) -> AsyncIterator[tuple[list[SimModbusBms], list[ModbusDriver]]]:
    devices = [SimModbusBms(pack, first_cell=k * cells, cells=cells, sensors=4) for k in range(modules)]
    units = {k + 1: RegmapUnit(dev, REGMAP) for k, dev in enumerate(devices)}
    async with ModbusRtuPtyServer(units, baud=baud, unit_faults=unit_faults) as server:
        link = ModbusLink(SerialEndpoint(server.port_path, baud or 9600, timeout_s=1.0))
        drivers = [
            ModbusDriver(f"bms-{k + 1}", kind="bms", regmap=REGMAP, link=link, unit_id=k + 1) for k in range(modules)
        ]
        try:
            for d in drivers:
                await d.connect()
            yield devices, drivers
        finally:
            link.close()


def make_pack(cells: int) -> SimPack:
    return SimPack(PackModel(PackParams(series_cells=cells, seed=5)), ManualClock())


async def test_two_full_modules_report_their_own_cells_in_one_read_each() -> None:
    pack = make_pack(64)
    pack.set_current(-20.0)
    async with modbus_bms_bus(pack, cells=32) as (_, drivers):
        snap = pack.snapshot()
        assert len(drivers[0].blocks) == 1  # the whole polled map in one request
        for k, driver in enumerate(drivers):
            got = await read(driver)
            assert not any(got.quality)
            for n in range(1, 33):
                assert got[f"cell{n}_v"] == pytest.approx(snap.cell_voltages_v[32 * k + n - 1], abs=0.0011)
            assert got["current_a"] == pytest.approx(-20.0)
            assert got["voltage_v"] == pytest.approx(sum(snap.cell_voltages_v[32 * k : 32 * k + 32]), abs=0.011)
            assert got["alarm_level"] == 0 and got["charge_fet"] == 1
        assert drivers[1].info["cell_count"] == 32 and drivers[1].info["model"] == "SIM-MBMS"


async def test_slots_beyond_a_short_module_read_as_no_cell() -> None:
    pack = make_pack(14)
    async with modbus_bms_bus(pack, cells=14, modules=1) as (_, (driver,)):
        got = await read(driver)
        assert got.q("cell14_v") == GOOD
        assert got.q("cell15_v") == int(Quality.OUT_OF_RANGE) and math.isnan(got["cell15_v"])


async def test_protections_open_sensor_and_exception_on_one_module() -> None:
    pack = make_pack(64)
    faults = {2: ModbusFaults()}
    async with modbus_bms_bus(pack, cells=32, unit_faults=faults) as (devices, drivers):
        devices[0].alarms = {AlarmName.CELL_OVERVOLTAGE: AlarmLevel.ALARM, AlarmName.LOW_SOC: AlarmLevel.WARNING}
        pack.model.set_thermistor_open(1)
        got = await read(drivers[0])
        assert got["alarm_level"] == 2
        assert got["prot_cell_overvoltage"] == 1 and got["warn_low_soc"] == 1 and got["prot_low_soc"] == 0
        assert got.q("temp1_c") == int(Quality.OUT_OF_RANGE) and got.q("temp2_c") == GOOD
        faults[2].exception_next = 1
        faults[2].exception_code = 4
        other = await read(drivers[1])
        assert set(other.quality) == {int(Quality.DEVICE_EXCEPTION)}
        assert not any((await read(drivers[1])).quality)


async def test_crc_error_loses_that_reply_only_on_a_paced_bus() -> None:
    pack = make_pack(64)
    faults = {1: ModbusFaults()}
    async with modbus_bms_bus(pack, cells=32, baud=19200, unit_faults=faults) as (_, drivers):
        faults[1].bad_crc_next = 1
        # pymodbus drops a frame with a bad CRC and keeps waiting: the poll sees no answer.
        with pytest.raises(ResponseTimeoutError):
            await read(drivers[0])
        assert faults[1].injected["bad_crc"] == 1
        assert not any((await read(drivers[0])).quality)
        assert not any((await read(drivers[1])).quality)
