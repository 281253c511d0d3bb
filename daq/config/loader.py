"""Load and validate a bench file, and everything it refers to, reporting every problem at once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daq.config.bench import (
    BenchConfig,
    CanDeviceConfig,
    CanSignalsConfig,
    ModbusDeviceConfig,
    SerialBmsDeviceConfig,
    SimBmsConfig,
    SimCanBmsConfig,
)
from daq.config.errors import format_validation_error
from daq.config.yamlfile import read_yaml_mapping
from daq.errors import ConfigError
from daq.resources import Kind, locate
from daq.safety.bench_check import validate_safety
from daq.safety.limits import LimitSet
from drivers.modbus.regmap import RegisterMap, load_regmap, plan_reads


@dataclass
class LoadedBench:
    config: BenchConfig
    path: Path
    regmaps: dict[str, RegisterMap] = field(default_factory=dict)  # by device name
    config_hash: str = ""
    limits: LimitSet | None = None  # the safety limit set, when the bench file has safety:
    can_mappings: dict[str, Any] = field(default_factory=dict)  # CanMapping by CAN device/simulator name

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str, kind: Kind | None = None) -> Path:
        """A path named in the bench file: relative to the bench file's folder, or ``builtin:NAME``."""
        return locate(relative, kind, base_dir=self.base_dir)

    @property
    def journal_path(self) -> Path:
        return Path(self.config.journal.path or f"journal/{self.config.bench.id}.sqlite")


def _check_simulated_bms(config: BenchConfig, dev: SerialBmsDeviceConfig, where: str) -> list[str]:
    """A BMS device on a simulated bus must record the cells and sensors the simulated module has."""
    port = dev.transport.port
    if not port.startswith("sim:") or config.simulation is None:
        return []
    sim = next((s for s in config.simulation.simulators if s.name == port[4:]), None)
    if not isinstance(sim, SimBmsConfig):
        return []  # BenchConfig already named the problem
    problems = []
    cells = sim.module_cells(config.simulation.pack.series_cells)
    if dev.cells != cells:
        problems.append(f"{where}.cells: {dev.cells}, but simulator {sim.name} has {cells} cells per module")
    if dev.sensors != sim.sensors_per_module:
        problems.append(
            f"{where}.sensors: {dev.sensors}, but simulator {sim.name} has {sim.sensors_per_module} sensors per module"
        )
    return problems


def _load_can(loaded: LoadedBench, dev: CanDeviceConfig | SimCanBmsConfig, where: str) -> list[str]:
    """Parse the DBC file and check the signal mapping against it; the mapping goes in ``loaded``."""
    import can  # CAN benches only pay for python-can and cantools

    from drivers.can.dbc import load_dbc
    from drivers.can.mapping import resolve_mapping

    problems = []
    if dev.interface not in can.interfaces.VALID_INTERFACES:
        problems.append(
            f"{where}.interface: {dev.interface!r} is not a python-can interface"
            f" (known: {', '.join(sorted(can.interfaces.VALID_INTERFACES))})"
        )
    try:
        db = load_dbc(loaded.resolve(dev.dbc, "dbc"))
    except ConfigError as exc:
        return [*problems, *(f"{where}.dbc: {p}" for p in exc.problems)]
    if isinstance(dev, CanDeviceConfig):
        cells, sensors = dev.cells, dev.sensors
    else:
        sim_cfg = loaded.config.simulation
        cells, sensors = dev.cells or (sim_cfg.pack.series_cells if sim_cfg else 1), dev.sensors
    signals: CanSignalsConfig = dev.signals
    try:
        spec = signals.spec(cells=cells, sensors=sensors)
    except (KeyError, ValueError, IndexError) as exc:
        return [*problems, f"{where}.signals: bad signal name template ({exc}); write e.g. Cell{{n:02d}}_Voltage"]
    mapping, mapping_problems = resolve_mapping(
        db,
        spec,
        cells=cells,
        sensors=sensors,
        cycle_times_s=dict(dev.cycle_times_s),
        where=f"{where}.signals ({dev.dbc})",
    )
    problems.extend(mapping_problems)
    if mapping is not None and not problems:
        loaded.can_mappings[dev.name] = mapping
    return problems


def load_bench(path: str | Path) -> LoadedBench:
    path = locate(path, "bench")
    data = read_yaml_mapping(path, "bench file")
    try:
        config = BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, str(path), data, model=BenchConfig, hint="see: daq schema")
        ) from exc
    loaded = LoadedBench(config, path)
    problems: list[str] = []
    for i, dev in enumerate(config.devices):
        if isinstance(dev, CanDeviceConfig):
            problems.extend(_load_can(loaded, dev, f"{path}: devices[{i}]({dev.name})"))
            continue
        if isinstance(dev, SerialBmsDeviceConfig):
            problems.extend(_check_simulated_bms(config, dev, f"{path}: devices[{i}]({dev.name})"))
            continue
        if not isinstance(dev, ModbusDeviceConfig):
            continue
        where = f"{path}: devices[{i}]({dev.name}).regmap"
        try:
            regmap = load_regmap(loaded.resolve(dev.regmap, "regmap"))
        except ConfigError as exc:
            problems.extend(f"{where}: {p}" for p in exc.problems)
            continue
        try:
            plan_reads(regmap.polled, max_count=dev.max_registers_per_read, max_gap=dev.max_gap)
        except ConfigError as exc:
            problems.extend(f"{where}: {p}" for p in exc.problems)
        if dev.role == "cycler" and dev.watchdog_timeout_s > 0:
            missing = [n for n in ("watchdog_timeout_s", "watchdog_counter") if n not in regmap.by_name]
            if missing:
                problems.append(f"{where}: watchdog_timeout_s is set but the register map has no {', '.join(missing)}")
        loaded.regmaps[dev.name] = regmap
    for i, sim in enumerate(config.simulation.simulators if config.simulation else []):
        if isinstance(sim, SimCanBmsConfig):
            problems.extend(_load_can(loaded, sim, f"{path}: simulation.simulators[{i}]({sim.name})"))
    loaded.limits, safety_problems = validate_safety(loaded)
    problems.extend(safety_problems)
    if problems:
        raise ConfigError(problems)
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    loaded.config_hash = hashlib.sha256(canonical).hexdigest()[:16]
    return loaded
