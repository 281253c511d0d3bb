"""The simulator farm: every simulated device of a benchmark, served from a separate process.

The machine has two cores and the simulators would otherwise share one with the client being
measured. ``SimFarm`` starts ``python -m benchmarks.simfarm SPEC`` as a child process (one
Modbus TCP server per device, on free ports), reads the ports it prints, and stops it by closing
its stdin. The client's CPU (``time.process_time``) then counts the client alone; the farm's CPU
is read from /proc for the record.

Device kinds: ``cycler`` (the project's simulated cycler on its own simulated pack), ``meter``
(64 input registers), ``bms`` (a 192-cell BMS) and ``bms_module`` (the project's BMS module
map), see ``benchmarks.devices``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from benchmarks.common import pid_cpu_s
from benchmarks.devices import CYCLER_REGMAP, REPO

READY_TIMEOUT_S = 60.0
REFRESH_S = 0.25  # how long a device's answer to one block read is served from the farm's cache


@dataclass(frozen=True, slots=True)
class SimDevice:
    name: str
    kind: str  # cycler | meter | bms | bms_module
    port: int = 0


class SimFarm:
    """Simulators in a child process. ``ports[name]`` is each device's Modbus TCP port."""

    def __init__(self, devices: list[SimDevice], *, time_scale: float = 1.0, refresh_s: float = REFRESH_S) -> None:
        self.devices = devices
        self.time_scale = time_scale
        self.refresh_s = refresh_s
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        spec = {
            "time_scale": self.time_scale,
            "refresh_s": self.refresh_s,
            "devices": [[d.name, d.kind, d.port] for d in self.devices],
        }
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.simfarm", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait(timeout=READY_TIMEOUT_S)
            raise RuntimeError(f"simulator farm exited with {code} before it was ready")
        self.ports = json.loads(line)["ports"]

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_s(self) -> float:
        """CPU seconds the farm has used so far."""
        return pid_cpu_s(self.pid)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ----------------------------------------------------------------------------- child process


def _unit(kind: str, index: int, clock: Any) -> Any:
    from benchmarks import devices
    from drivers.modbus.regmap import load_regmap
    from simulators.cycler import SimCycler
    from simulators.models.pack import PackModel, PackParams, SimPack
    from simulators.regmap_unit import RegmapUnit

    if kind == "cycler":
        pack = SimPack(PackModel(PackParams(seed=index)), clock)
        cycler = SimCycler(pack, clock, rated_voltage_v=100.0, rated_current_a=300.0, rated_power_w=30000.0)
        return RegmapUnit(cycler, _cached(CYCLER_REGMAP, load_regmap))
    if kind == "meter" or kind.startswith("meter:"):
        return devices.MeterUnit(seed=index, values=devices.meter_values(kind))
    if kind in ("bms", "bms_module"):
        cells = devices.BMS_CELLS if kind == "bms" else devices.bms_module_cells()
        return RegmapUnit(devices.BmsDevice(cells), devices.bms_regmap(kind))
    raise ValueError(f"unknown simulated device kind {kind!r}")


_CACHE: dict[Path, Any] = {}


class TickClock:
    """The farm's clock, read once per request instead of once per register.

    ``SimCycler`` advances its pack whenever the clock has moved; reading a clock that moves
    between the registers of one request costs a physics step per register (~1.3 ms per poll).
    Time still advances exactly; it just stands still while one request is being answered.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self.time_scale = base.time_scale
        self.now = base.monotonic()
        self.now_ns = base.wall_ns()

    def tick(self) -> None:
        self.now = self.base.monotonic()
        self.now_ns = self.base.wall_ns()

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return self.now_ns

    async def sleep_until(self, deadline: float) -> None:
        await self.base.sleep_until(deadline)

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)


class CachedReads:
    """Serves a unit's reads from a cache refreshed at most every ``refresh_s`` (real seconds).

    The project's ``RegmapUnit`` asks its device for every register of every request and encodes
    each one (about 0.2-0.7 ms per request here): the farm would saturate its core long before
    the client does. Values still move (every ``refresh_s``); writes go straight through and
    clear the cache.
    """

    def __init__(self, unit: Any, refresh_s: float, clock: TickClock) -> None:
        self.unit = unit
        self.refresh_s = refresh_s
        self.clock = clock
        self._cache: dict[tuple[str, int, int], tuple[float, Any]] = {}

    def read(self, table: str, address: int, count: int) -> Any:
        key = (table, address, count)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.refresh_s:
            return hit[1]
        self.clock.tick()
        words = self.unit.read(table, address, count)
        self._cache[key] = (now, words)
        return words

    def write(self, table: str, address: int, values: Any) -> None:
        self._cache.clear()
        self.clock.tick()
        self.unit.write(table, address, values)


def _cached(path: Path, loader: Any) -> Any:
    if path not in _CACHE:
        _CACHE[path] = loader(path)
    return _CACHE[path]


async def _serve(spec: dict[str, Any]) -> None:
    from daq.clock import MonotonicClock, ScaledClock
    from simulators.modbus_server import ModbusTcpServer

    scale = float(spec.get("time_scale", 1.0))
    refresh_s = float(spec.get("refresh_s", REFRESH_S))
    clock = TickClock(ScaledClock(scale) if scale != 1.0 else MonotonicClock())
    servers = []
    ports = {}
    for index, (name, kind, port) in enumerate(spec["devices"]):
        server = ModbusTcpServer({1: CachedReads(_unit(kind, index, clock), refresh_s, clock)}, port=port)
        await server.start()
        servers.append(server)
        ports[name] = server.port
    # Everything built so far lives as long as the farm: keep it out of the collector's full
    # passes, whose pauses would delay every reply and be charged to the client.
    gc.freeze()
    sys.stdout.write(json.dumps({"ports": ports}) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    # Run until the parent closes our stdin (or dies): no orphaned simulators.
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    for server in servers:
        await server.stop()


def main() -> None:
    spec = json.loads(sys.argv[1])
    profile_to = os.environ.get("SIMFARM_PROFILE")  # a path: write a cProfile of the farm there
    if not profile_to:
        asyncio.run(_serve(spec))
        return
    import cProfile

    cProfile.runctx("asyncio.run(_serve(spec))", globals(), {"spec": spec, "asyncio": asyncio}, profile_to)


if __name__ == "__main__":
    main()
