"""All simulated hardware of one bench: one pack, and the devices that see it, on real sockets.

Built from the bench file's ``simulation:`` section. The same ``SimPack`` backs every simulator,
so cycler current moves the cells the BMS reports; everything runs on the bench clock, so a
scaled clock accelerates the whole bench consistently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from daq.clock import Clock
from daq.config.bench import SimCyclerConfig, SimulationConfig
from daq.errors import ConnectError
from drivers.modbus.regmap import RegisterMap, load_regmap
from simulators.cycler import SimCycler
from simulators.modbus_faults import ModbusFaults
from simulators.modbus_server import ModbusTcpServer
from simulators.models.pack import CellSpread, PackModel, PackParams, SimPack
from simulators.regmap_unit import RegmapUnit

REGMAPS = Path(__file__).resolve().parents[1] / "configs" / "regmaps"


def pack_params(cfg: SimulationConfig) -> PackParams:
    p = cfg.pack
    return PackParams(
        chemistry=p.chemistry,
        series_cells=p.series_cells,
        parallel_cells=p.parallel_cells,
        capacity_ah=p.capacity_ah,
        ambient_c=p.ambient_c,
        initial_soc=p.initial_soc,
        spread=CellSpread(capacity_rel=p.capacity_spread, r0_rel=p.resistance_spread, initial_soc=p.soc_spread),
        seed=p.seed,
        fade_per_cycle=p.fade_per_cycle,
    )


class SimulatedHardware:
    def __init__(self, cfg: SimulationConfig, *, clock: Clock, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        # One pack per cycler channel (a cycler drives exactly one pack); BMS simulators watch one of them.
        self.packs: dict[str, SimPack] = {}
        self.cyclers: dict[str, SimCycler] = {}
        self.servers: dict[str, ModbusTcpServer] = {}
        self.faults: dict[str, ModbusFaults] = {}
        self.devices: dict[str, Any] = {}
        self._regmap_cache: dict[str, RegisterMap] = {}

    def _regmap(self, filename: str) -> RegisterMap:
        if filename not in self._regmap_cache:
            self._regmap_cache[filename] = load_regmap(REGMAPS / filename)
        return self._regmap_cache[filename]

    async def start(self) -> None:
        try:
            for sim in self.cfg.simulators:
                if isinstance(sim, SimCyclerConfig):
                    await self._start_cycler(sim)
        except BaseException:
            await self.stop()
            raise

    def new_pack(self, name: str) -> SimPack:
        params = pack_params(self.cfg)
        if self.packs:  # every further pack is a different physical pack: different cell spread
            params = dataclasses.replace(params, seed=params.seed + len(self.packs))
        pack = self.packs[name] = SimPack(PackModel(params), self.clock)
        return pack

    @property
    def pack(self) -> SimPack:
        """The first pack: the one a single-channel bench has."""
        return next(iter(self.packs.values()))

    async def _start_cycler(self, sim: SimCyclerConfig) -> None:
        cycler = SimCycler(
            self.new_pack(sim.name),
            self.clock,
            rated_voltage_v=sim.rated_voltage_v,
            rated_current_a=sim.rated_current_a,
            rated_power_w=sim.rated_power_w,
        )
        faults = ModbusFaults()
        server = ModbusTcpServer(
            {sim.unit_id: RegmapUnit(cycler, self._regmap("sim_cycler.yaml"))},
            host=sim.host,
            port=sim.port,
            framing=sim.framing,
            faults=faults,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConnectError(
                f"simulator {sim.name}: cannot listen on {sim.host}:{sim.port}: {exc.strerror};"
                " is another program using the port? use port: 0 for a free one"
            ) from exc
        self.cyclers[sim.name] = cycler
        self.devices[sim.name] = cycler
        self.servers[sim.name] = server
        self.faults[sim.name] = faults

    def tcp_address(self, name: str) -> tuple[str, int]:
        server = self.servers[name]
        return server.host, server.port

    def serial_path(self, name: str) -> str:
        raise KeyError(f"simulator {name} has no serial port")

    def describe(self) -> list[str]:
        lines = []
        for name, server in self.servers.items():
            kind = "Modbus TCP" if server.framing == "socket" else "Modbus RTU over TCP"
            lines.append(f"{name}: {kind} on {server.host}:{server.port}, units {sorted(server.units)}")
        p = self.cfg.pack
        lines.append(
            f"pack: {p.chemistry.upper()} {p.series_cells}s{p.parallel_cells}p {p.capacity_ah:g} Ah,"
            f" time scale {self.cfg.time_scale:g}x"
        )
        return lines

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
