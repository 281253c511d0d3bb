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
from daq.config.bench import SimBmsConfig, SimBmsFaultsConfig, SimCanBmsConfig, SimCyclerConfig, SimulationConfig
from daq.errors import ConfigError, ConnectError
from daq.resources import locate, shipped_path
from drivers.bms.daly.codec import encode_alarms
from drivers.bms.jbd.codec import protection_bits_for
from drivers.bms.model import AlarmLevel
from drivers.modbus.regmap import RegisterMap, load_regmap
from simulators.bms.daly_device import DalyDeviceState, SimDalyDevice
from simulators.bms.jbd_device import JbdDeviceState, SimJbdDevice
from simulators.bms_bus import BusMember, SimBmsBus, module_snapshot, sensor_positions
from simulators.bms_modbus import SimModbusBms
from simulators.cycler import SimCycler
from simulators.modbus_faults import ModbusFaults
from simulators.modbus_server import ModbusRtuPtyServer, ModbusTcpServer
from simulators.models.pack import CellSpread, PackModel, PackParams, SimPack
from simulators.models.snapshot import PackSnapshot
from simulators.regmap_unit import RegmapUnit

SimBmsDevice = SimModbusBms | SimJbdDevice | SimDalyDevice
DALY_HOST_ADDRESS_BASE = 0x3F  # board n listens to host address 0x3F + n (drivers/bms/daly/driver.py)


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
        # Simulated serial BMS buses by simulator name, and their devices by address.
        self.bms_buses: dict[str, SimBmsBus | ModbusRtuPtyServer] = {}
        self.bms_devices: dict[str, dict[int, SimBmsDevice]] = {}
        self._regmap_cache: dict[str, RegisterMap] = {}
        self.base_dir = base_dir or Path.cwd()
        self.can_bms: dict[str, Any] = {}  # SimCanBms by simulator name

    def _regmap(self, name: str) -> RegisterMap:
        """A shipped register map: the simulators serve exactly the map they are documented by."""
        if name not in self._regmap_cache:
            self._regmap_cache[name] = load_regmap(shipped_path("regmap", name))
        return self._regmap_cache[name]

    async def start(self) -> None:
        try:
            for sim in self.cfg.simulators:
                if isinstance(sim, SimCyclerConfig):
                    await self._start_cycler(sim)
            for sim in self.cfg.simulators:  # after the cyclers: a BMS watches a cycler's pack
                if isinstance(sim, SimBmsConfig):
                    await self._start_bms(sim)
                elif isinstance(sim, SimCanBmsConfig):
                    await self._start_can_bms(sim)
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
            {sim.unit_id: RegmapUnit(cycler, self._regmap("sim_cycler"))},
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

    async def _start_bms(self, sim: SimBmsConfig) -> None:
        if sim.pack_of is not None:
            pack = self.packs[sim.pack_of]
        else:
            pack = self.pack if self.packs else self.new_pack(sim.name)  # no cycler: a pack at rest
        cells = sim.module_cells(self.cfg.pack.series_cells)
        sensors = sim.sensors_per_module
        faults = _line_faults(sim.faults)
        unit_faults = {address: _line_faults(cfg) for address, cfg in sim.unit_faults.items()}
        devices: dict[int, SimBmsDevice] = {}
        bus: SimBmsBus | ModbusRtuPtyServer
        if sim.protocol == "modbus":
            units = {}
            for k, address in enumerate(sim.addresses):
                module = SimModbusBms(pack, first_cell=k * cells, cells=cells, sensors=sensors)
                devices[address] = module
                units[address] = RegmapUnit(module, self._regmap("sim_bms"))
            bus = ModbusRtuPtyServer(
                units, baud=sim.baud if sim.pacing else None, faults=faults, unit_faults=unit_faults
            )
        else:
            members = []
            positions = sensor_positions(cells, sensors)
            for k, address in enumerate(sim.addresses):
                device: SimJbdDevice | SimDalyDevice
                if sim.protocol == "jbd":
                    device = SimJbdDevice(JbdDeviceState(ntc_cells=positions))
                else:
                    device = SimDalyDevice(
                        DalyDeviceState(
                            address=address,
                            host_addresses=frozenset({DALY_HOST_ADDRESS_BASE + address}),
                            sensor_cells=positions,
                        )
                    )
                devices[address] = device
                cfg = sim.unit_faults.get(address, sim.faults)

                def snapshot(first: int = k * cells) -> PackSnapshot:
                    return module_snapshot(pack.snapshot(), first, cells)

                members.append(
                    BusMember(
                        address, device, snapshot, faults=unit_faults.get(address), wrong_protocol=cfg.wrong_protocol
                    )
                )
            bus = SimBmsBus(sim.protocol, members, baud=sim.baud, pacing=sim.pacing, faults=faults)
        for k, address in enumerate(sim.addresses):
            _apply_device_faults(sim.unit_faults.get(address, sim.faults), devices[address], pack, first_cell=k * cells)
        await bus.start()
        self.bms_buses[sim.name] = bus
        self.bms_devices[sim.name] = devices
        self.faults[sim.name] = faults

    async def _start_can_bms(self, sim: SimCanBmsConfig) -> None:
        from drivers.can.dbc import load_dbc  # CAN benches only pay for python-can and cantools
        from drivers.can.mapping import resolve_mapping
        from simulators.can_bms import CanBmsFaults, SimCanBms

        pack = (
            self.packs[sim.pack_of]
            if sim.pack_of is not None
            else (self.pack if self.packs else self.new_pack(sim.name))
        )
        cells = sim.cells or self.cfg.pack.series_cells
        db = load_dbc(locate(sim.dbc, "dbc", base_dir=self.base_dir))
        mapping, problems = resolve_mapping(
            db,
            sim.signals.spec(cells=cells, sensors=sim.sensors),
            cells=cells,
            sensors=sim.sensors,
            cycle_times_s=dict(sim.cycle_times_s),
            where=f"simulator {sim.name}",
        )
        if mapping is None:
            raise ConfigError(problems)
        f = sim.faults
        faults = CanBmsFaults(
            silent=f.silent,
            missing=set(f.missing),
            wrong_dlc=dict(f.wrong_dlc),
            out_of_range=set(f.out_of_range),
            alarms={f"alarm_{name.value}": 2 if level == "alarm" else 1 for name, level in f.protections.items()},
        )
        bms = SimCanBms(
            pack,
            mapping,
            clock=self.clock,
            interface=sim.interface,
            channel=sim.channel,
            cells=cells,
            sensors=sim.sensors,
            faults=faults,
        )
        await bms.start()
        self.can_bms[sim.name] = bms

    def tcp_address(self, name: str) -> tuple[str, int]:
        server = self.servers[name]
        return server.host, server.port

    def serial_path(self, name: str) -> str:
        """The pseudo-terminal a simulated serial bus is served on."""
        bus = self.bms_buses.get(name)
        if bus is None:
            raise KeyError(f"simulator {name} has no serial port (serial buses: {sorted(self.bms_buses) or 'none'})")
        return bus.port_path

    def describe(self) -> list[str]:
        lines = []
        for name, server in self.servers.items():
            kind = "Modbus TCP" if server.framing == "socket" else "Modbus RTU over TCP"
            lines.append(f"{name}: {kind} on {server.host}:{server.port}, units {sorted(server.units)}")
        for sim in self.cfg.simulators:
            if isinstance(sim, SimBmsConfig) and sim.name in self.bms_buses:
                cells = sim.module_cells(self.cfg.pack.series_cells)
                lines.append(
                    f"{sim.name}: {sim.protocol.upper()} BMS bus on {self.bms_buses[sim.name].port_path} at {sim.baud}"
                    f" baud{' (paced)' if sim.pacing else ''}, addresses {sim.addresses}, {cells} cells and"
                    f" {sim.sensors_per_module} sensors per module"
                )
        for name, bms in self.can_bms.items():
            lines.append(f"{name}: CAN BMS on {bms.port_path}, {bms.cells} cells and {bms.sensors} sensors")
        p = self.cfg.pack
        lines.append(
            f"pack: {p.chemistry.upper()} {p.series_cells}s{p.parallel_cells}p {p.capacity_ah:g} Ah,"
            f" time scale {self.cfg.time_scale:g}x"
        )
        return lines

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        for bus in self.bms_buses.values():
            await bus.stop()
        for bms in self.can_bms.values():
            await bms.stop()


def _line_faults(cfg: SimBmsFaultsConfig) -> ModbusFaults:
    """The wire-level part of a simulated BMS's faults."""
    return ModbusFaults(
        seed=cfg.seed,
        silent=cfg.silent,
        reply_delay_s=cfg.reply_delay_s,
        silent_next=cfg.silent_next,
        bad_crc_next=cfg.bad_crc_next,
        truncate_next=cfg.truncate_next,
        garbage_next=cfg.garbage_next,
        exception_next=cfg.exception_next,
        exception_code=cfg.exception_code,
        silence_rate=cfg.silence_rate,
        crc_error_rate=cfg.crc_error_rate,
        truncate_rate=cfg.truncate_rate,
        garbage_rate=cfg.garbage_rate,
    )


def _apply_device_faults(cfg: SimBmsFaultsConfig, device: SimBmsDevice, pack: SimPack, *, first_cell: int) -> None:
    """Protection flags on the device; open sensors and drifting cells in the shared pack."""
    alarms = {
        name: AlarmLevel.ALARM if level == "alarm" else AlarmLevel.WARNING for name, level in cfg.protections.items()
    }
    if alarms:
        if isinstance(device, SimJbdDevice):
            device.state.protection_bits = protection_bits_for(alarms)
        elif isinstance(device, SimDalyDevice):
            device.state.alarm_data = encode_alarms(alarms)
        else:
            device.alarms = alarms
    if isinstance(device, SimJbdDevice):
        positions = device.state.ntc_cells
    elif isinstance(device, SimDalyDevice):
        positions = device.state.sensor_cells
    else:
        positions = device.sensor_cells
    for number in cfg.open_sensors:  # numbers checked against sensors_per_module by the config
        pack.model.set_thermistor_open(first_cell + positions[number - 1] + 1)
    for cell, volts_per_s in cfg.drift_cells_v_per_s.items():
        pack.model.drift_cell_voltage(cell, volts_per_s)
