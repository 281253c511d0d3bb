"""Requests per second on one paced serial bus, against the line's theoretical limit.

Run: ``python benchmarks/serial_bus.py [--seconds 3]`` (from the repository root). Prints a
markdown table.

Each row drives one kind of request back to back, through the real driver and bus arbiter, to a
simulator on a pseudo-terminal that paces its replies as a real line at that baud rate would
(request and reply characters at 10 bits each, plus the device's silence rules). The limit is
``daq.busbudget``'s figure for the same frames: characters plus silences, no device turnaround.
The ratio shows what the software costs on top of the wire: a well-behaved stack stays near 100 %.

Rows:
- Modbus RTU, read 10 and 52 registers (the simulated BMS module's whole map), pymodbus client;
  the simulated server leaves one 3.5-character silence per exchange where the budget counts two
  (one after each frame), so this row can exceed 100 %.
- JBD cell voltages (0x04, 14 cells), and basic info (0x03).
- Daly pack (0x90, one frame) and cell voltages (0x95, 14 cells = 5 frames), with the ~20 ms idle
  gap the arbiter leaves before each request; and three Daly boards polled concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daq.busbudget import Exchange, LineTiming, modbus_read_exchange
from daq.clock import MonotonicClock
from drivers.bms.daly import codec as daly
from drivers.bms.daly.driver import DalyDriver, host_address
from drivers.bms.jbd import codec as jbd
from drivers.bms.jbd.driver import JbdDriver
from drivers.bus import SerialBus, idle_gap_s
from drivers.modbus.driver import ModbusLink, SerialEndpoint
from drivers.serial_link import SerialLink
from simulators.bms.daly_device import DalyDeviceState, SimDalyDevice
from simulators.bms.jbd_device import SimJbdDevice
from simulators.bms_bus import BusMember, SimBmsBus, module_snapshot
from simulators.modbus_server import ModbusRtuPtyServer, RegisterImageUnit
from simulators.models.pack import PackModel, PackParams, SimPack

CELLS = 14
BAUDS = (9600, 115200)


async def rate(call: Callable[[], Awaitable[object]], seconds: float, *, concurrency: int = 1) -> float:
    """Completed calls per second over ``seconds``, ``concurrency`` callers at once."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def limit(exchange: Exchange, protocol: str, baud: int) -> float:
    return 1.0 / LineTiming(baud).exchange_s(exchange, protocol)


async def modbus_rows(baud: int, seconds: float) -> list[tuple[str, float, float]]:
    unit = RegisterImageUnit(input_registers={a: a for a in range(64)})
    rows = []
    async with ModbusRtuPtyServer({1: unit}, baud=baud) as server:
        link = ModbusLink(SerialEndpoint(server.port_path, baud, timeout_s=2.0))
        await link.connect()
        try:
            for count in (10, 52):

                async def read(count: int = count) -> object:
                    return await link.read("input", 0, count, unit=1)

                rows.append(
                    (
                        f"Modbus RTU read {count} registers",
                        await rate(read, seconds),
                        limit(modbus_read_exchange(count, "input"), "modbus", baud),
                    )
                )
        finally:
            link.close()
    return rows


async def jbd_rows(pack: SimPack, baud: int, seconds: float) -> list[tuple[str, float, float]]:
    rows = []
    async with SimBmsBus("jbd", [BusMember(1, SimJbdDevice(), pack.snapshot)], baud=baud, pacing=True) as sim:
        bus = SerialBus(SerialLink(sim.port_path, baud=baud), idle_gap_s=idle_gap_s("jbd", baud=baud))
        driver = JbdDriver("bms", bus=bus, cells=CELLS, sensors=2, timeout_s=2.0)
        await driver.connect()
        try:
            request = len(jbd.encode_read_request(jbd.JbdRegister.CELL_VOLTAGES))
            for register, label, reply in (
                (jbd.JbdRegister.CELL_VOLTAGES, f"JBD cell voltages (0x04, {CELLS} cells)", 7 + 2 * CELLS),
                (jbd.JbdRegister.BASIC_INFO, "JBD basic info (0x03, 2 NTCs)", 7 + 23 + 4),
            ):

                async def call(register: int = register) -> object:
                    return await driver.request(register)

                rows.append((label, await rate(call, seconds), limit(Exchange(request, reply), "jbd", baud)))
        finally:
            await driver.close()
    return rows


async def daly_rows(pack: SimPack, baud: int, seconds: float) -> list[tuple[str, float, float]]:
    boards = (1, 2, 3)
    members = [
        BusMember(
            b,
            SimDalyDevice(DalyDeviceState(address=b, host_addresses=frozenset({host_address(b)}))),
            lambda: module_snapshot(pack.snapshot(), 0, CELLS),
        )
        for b in boards
    ]
    rows = []
    async with SimBmsBus("daly", members, baud=baud, pacing=True) as sim:
        bus = SerialBus(SerialLink(sim.port_path, baud=baud), idle_gap_s=idle_gap_s("daly", baud=baud))
        drivers = [DalyDriver(f"bms-{b}", bus=bus, cells=CELLS, sensors=1, address=b, timeout_s=2.0) for b in boards]
        for d in drivers:
            await d.connect()
        try:
            one = Exchange(13, daly.FRAME_LEN)
            frames = daly.cell_frame_count(CELLS)
            rows.append(
                ("Daly pack (0x90)", await rate(lambda: drivers[0].query(0x90), seconds), limit(one, "daly", baud))
            )
            rows.append(
                (
                    f"Daly cell voltages (0x95, {CELLS} cells = {frames} frames)",
                    await rate(lambda: drivers[0].query(0x95, frames=frames), seconds),
                    limit(Exchange(13, frames * daly.FRAME_LEN), "daly", baud),
                )
            )
            queue = iter(range(10**9))

            async def any_board() -> object:
                return await drivers[next(queue) % 3].query(0x90)

            rows.append(
                (
                    "Daly pack (0x90), 3 boards polled at once",
                    await rate(any_board, seconds, concurrency=3),
                    limit(one, "daly", baud),
                )
            )
        finally:
            for d in drivers:
                await d.close()
    return rows


async def main(seconds: float) -> None:
    pack = SimPack(PackModel(PackParams(series_cells=CELLS)), MonotonicClock())
    print(f"Python {sys.version.split()[0]}, {seconds:g} s per row, replies paced by the simulator\n")
    print("| request | baud | measured req/s | line limit req/s | measured / limit |")
    print("|---|---:|---:|---:|---:|")
    for baud in BAUDS:
        rows = [
            *await modbus_rows(baud, seconds),
            *await jbd_rows(pack, baud, seconds),
            *await daly_rows(pack, baud, seconds),
        ]
        for label, measured, line in rows:
            print(f"| {label} | {baud} | {measured:.1f} | {line:.1f} | {100 * measured / line:.0f} % |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    asyncio.run(main(parser.parse_args().seconds))
