"""The bench file: pydantic v2 models (``extra="forbid"``, frozen, tagged unions by ``kind``).

Units are in field names. Paths inside a bench file (register maps, limit sets) are relative to
the bench file's folder; the journal path is relative to the working directory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daq.config.sinks import SinkConfig
from daq.config.web import WebConfig
from drivers.bms.model import AlarmName
from drivers.can.mapping import CanChannelSpec, SignalSpec, expand_signal_names, mux_indexed

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- transports ------------------------------------------------------------------------------


class TcpTransportConfig(Strict):
    """Modbus TCP, or RTU frames over TCP (``framing: rtu``, e.g. a serial-to-Ethernet gateway)."""

    kind: Literal["tcp"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 502
    framing: Literal["socket", "rtu"] = "socket"
    simulator: Name | None = Field(
        default=None, description="connect to this in-process simulator (its bound port) instead of host/port"
    )


class SerialTransportConfig(Strict):
    """RS-485/RS-232 line. Devices naming the same port share one bus and one arbiter."""

    kind: Literal["serial"]
    port: str = Field(description="device path, e.g. /dev/ttyUSB0; or sim:<simulator name> for a simulated bus")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


Transport = Annotated[TcpTransportConfig | SerialTransportConfig, Field(discriminator="kind")]


# --- devices ---------------------------------------------------------------------------------


class DeviceBase(Strict):
    name: Name
    role: Literal["cycler", "bms", "meter", "other"] = Field(
        description="what the device is; selects the measurement name and which limits apply"
    )
    poll_period_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    enabled: bool = True


class ModbusDeviceConfig(DeviceBase):
    kind: Literal["modbus"]
    transport: Transport
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    regmap: str = Field(description="register map file, relative to the bench file")
    max_registers_per_read: Annotated[int, Field(ge=1, le=125)] = 100
    max_gap: Annotated[int, Field(ge=0, le=125)] = 8
    watchdog_timeout_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=0,
        description="cyclers: program the device's communication watchdog (0 = off); the driver refreshes it",
    )


class SerialBmsDeviceConfig(DeviceBase):
    """A BMS on a serial line speaking its vendor protocol. ``cells``/``sensors`` fix the record's
    channels; at connect the driver checks them against what the BMS reports."""

    role: Literal["bms"] = "bms"
    transport: SerialTransportConfig
    cells: Annotated[int, Field(ge=1, description="series cells the BMS measures")]
    sensors: Annotated[int, Field(ge=0, le=16, description="temperature sensors the BMS reads")] = 2


class JbdDeviceConfig(SerialBmsDeviceConfig):
    """JBD / Xiaoxiang BMS. Its protocol has no device address: one JBD per serial port."""

    kind: Literal["jbd"]
    cells: Annotated[int, Field(ge=1, le=32)]


class DalyDeviceConfig(SerialBmsDeviceConfig):
    """Daly BMS; ``address`` is the board number on a shared RS-485 bus (1 = the standard single BMS)."""

    kind: Literal["daly"]
    cells: Annotated[int, Field(ge=1, le=48)]
    address: Annotated[int, Field(ge=1, le=16)] = 1
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    invert_current: bool = Field(default=False, description="for units that count charge current negative")


class CanSignalConfig(Strict):
    """One DBC signal for a pack value. ``scale`` (channel unit per DBC unit) replaces the unit
    table, for a signal with an empty or unusual unit."""

    signal: str
    scale: float | None = None
    sign: Literal["charge_positive", "discharge_positive"] = Field(
        default="charge_positive", description="current: which direction the BMS counts positive"
    )

    def spec(self) -> SignalSpec:
        return SignalSpec(self.signal, self.scale, self.sign == "discharge_positive")


SignalRef = str | CanSignalConfig


def _signal_spec(ref: SignalRef | None) -> SignalSpec | None:
    if ref is None:
        return None
    return SignalSpec(ref) if isinstance(ref, str) else ref.spec()


class CanMuxedSignalsConfig(Strict):
    """Cells (or sensors) sent k per frame, the mux value saying which group: cell n is
    ``signals[(n-1) % k]`` in mux value ``first_mux + (n-1) // k``."""

    signals: list[str] = Field(min_length=1, description="the signals of one frame, in cell order")
    first_mux: Annotated[int, Field(ge=0)] = Field(default=0, description="the mux value of cells 1..k")


CellSignals = str | list[str] | CanMuxedSignalsConfig


def _cell_signals(ref: CellSignals, count: int) -> tuple[str | tuple[str, int], ...]:
    if isinstance(ref, CanMuxedSignalsConfig):
        return mux_indexed(ref.signals, count, first_mux=ref.first_mux)
    return expand_signal_names(ref, count)


class CanSignalsConfig(Strict):
    """DBC signals -> the standard BMS channels. ``cells`` and ``temperatures`` are a list of signal
    names (cell 1 first), one template with ``{n}`` (1-based), e.g. ``Cell{n:02d}_Voltage``, or
    ``{signals: [...], first_mux: 0}`` when the mux value gives the cell index. Multiplexed
    signals are found in their mux by name. Units convert from the DBC (mV, K, ...)."""

    cells: CellSignals
    temperatures: CellSignals = Field(default_factory=list)
    voltage_v: SignalRef | None = None
    current_a: SignalRef | None = None
    soc_pct: SignalRef | None = None
    balance_mask: str | None = None
    charge_fet: str | None = None
    discharge_fet: str | None = None
    alarms: dict[AlarmName, str] = Field(
        default_factory=dict, description="alarm -> signal (0 ok, 1 warning, 2 alarm; a 1-bit flag is 0/1)"
    )

    def spec(self, *, cells: int, sensors: int) -> CanChannelSpec:
        return CanChannelSpec(
            cells=_cell_signals(self.cells, cells),
            temperatures=_cell_signals(self.temperatures, sensors),
            voltage_v=_signal_spec(self.voltage_v),
            current_a=_signal_spec(self.current_a),
            soc_pct=_signal_spec(self.soc_pct),
            balance_mask=self.balance_mask,
            charge_fet=self.charge_fet,
            discharge_fet=self.discharge_fet,
            alarms=tuple(self.alarms.items()),
        )


class CanDeviceConfig(DeviceBase):
    """A BMS on a CAN bus, decoded with the supplier's DBC file. Frames arrive pushed: one record
    is assembled every ``poll_period_s`` from the latest frames, each value STALE when its frame is
    older than its cycle time times ``stale_factor``."""

    kind: Literal["can"]
    role: Literal["bms"] = "bms"
    dbc: str = Field(description="DBC file, relative to the bench file")
    interface: str = Field(
        default="socketcan", description="python-can interface: socketcan, virtual, slcan, pcan, ..."
    )
    channel: str = Field(description="can0, vcan0, /dev/ttyACM0@115200 (slcan), PCAN_USBBUS1, or a virtual bus name")
    bitrate: Annotated[int, Field(ge=10000, le=8000000)] | None = 500000
    cells: Annotated[int, Field(ge=1, le=400)]
    sensors: Annotated[int, Field(ge=0, le=64)] = 2
    signals: CanSignalsConfig
    stale_factor: Annotated[float, Field(ge=1, le=100)] = 3.0
    cycle_times_s: dict[str, Annotated[float, Field(gt=0, le=3600)]] = Field(
        default_factory=dict, description="message name -> cycle time, for a DBC without GenMsgCycleTime"
    )

    def signal_spec(self) -> CanChannelSpec:
        return self.signals.spec(cells=self.cells, sensors=self.sensors)


Device = Annotated[
    ModbusDeviceConfig | JbdDeviceConfig | DalyDeviceConfig | CanDeviceConfig, Field(discriminator="kind")
]


# --- simulation ------------------------------------------------------------------------------


class PackConfig(Strict):
    chemistry: Literal["nmc", "lfp"] = "nmc"
    series_cells: Annotated[int, Field(ge=1, le=400)] = 14
    parallel_cells: Annotated[int, Field(ge=1, le=100)] = 1
    capacity_ah: Annotated[float, Field(gt=0, le=2000)] = 27.0
    initial_soc: Annotated[float, Field(ge=0, le=1)] = 0.5
    ambient_c: Annotated[float, Field(ge=-40, le=80)] = 25.0
    capacity_spread: Annotated[float, Field(ge=0, le=0.2)] = 0.015
    resistance_spread: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    soc_spread: Annotated[float, Field(ge=0, le=0.2)] = 0.01
    fade_per_cycle: Annotated[float, Field(ge=0, le=0.01)] = 0.0
    seed: int = 1


class SimCyclerConfig(Strict):
    kind: Literal["cycler"]
    name: Name
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    framing: Literal["socket", "rtu"] = "socket"
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    rated_voltage_v: Annotated[float, Field(gt=0)] = 100.0
    rated_current_a: Annotated[float, Field(gt=0)] = 300.0
    rated_power_w: Annotated[float, Field(gt=0)] = 30000.0


class SimBmsFaultsConfig(Strict):
    """Faults of a simulated BMS bus or of one device on it, applied at start (tests change them live:
    ``bench.simulation.faults[name]``). Line faults use the Modbus simulators' knobs."""

    silent: bool = False
    reply_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    silent_next: Annotated[int, Field(ge=0)] = 0
    bad_crc_next: Annotated[int, Field(ge=0)] = Field(default=0, description="next N replies with a bad CRC/checksum")
    truncate_next: Annotated[int, Field(ge=0)] = 0
    garbage_next: Annotated[int, Field(ge=0)] = Field(default=0, description="next N replies preceded by garbage")
    exception_next: Annotated[int, Field(ge=0)] = Field(
        default=0, description="next N replies refused: Modbus exception_code, JBD status 0x80, Daly silence"
    )
    exception_code: Annotated[int, Field(ge=1, le=255)] = 6
    silence_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    crc_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    truncate_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    garbage_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: int = 0
    wrong_protocol: Literal["jbd", "daly", "modbus"] | None = Field(
        default=None, description="answer every request with a valid frame of this protocol (JBD/Daly buses)"
    )
    protections: dict[AlarmName, Literal["warning", "alarm"]] = Field(
        default_factory=dict, description="BMS protection flags set, e.g. {cell_overvoltage: alarm}"
    )
    open_sensors: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="this BMS's temperature sensors (1-based) that read open"
    )
    drift_cells_v_per_s: dict[Annotated[int, Field(ge=1)], float] = Field(
        default_factory=dict, description="pack cell number -> voltage drift in V/s (a cell drifting high or low)"
    )


class SimBmsConfig(Strict):
    """A simulated RS-485 bus on a pseudo-terminal with one BMS per address, watching one cycler's pack.

    Module k (k = 0, 1, ...) of the bus sees pack cells k*cells_per_module+1 .. (k+1)*cells_per_module.
    Devices reach it with ``transport: {kind: serial, port: sim:<name>}``.
    """

    kind: Literal["bms"]
    name: Name
    protocol: Literal["modbus", "jbd", "daly"]
    addresses: list[Annotated[int, Field(ge=1, le=247)]] = Field(
        default_factory=lambda: [1], min_length=1, description="Modbus unit ids or Daly board numbers, one per module"
    )
    cells_per_module: Annotated[int, Field(ge=1, le=48)] | None = Field(
        default=None, description="default: the pack's series cells split evenly over the addresses"
    )
    sensors_per_module: Annotated[int, Field(ge=0, le=4)] = 2
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400] = 9600
    pacing: bool = Field(default=True, description="hold replies as long as the line would take at baud")
    pack_of: Name | None = Field(default=None, description="the cycler simulator whose pack it watches; default first")
    faults: SimBmsFaultsConfig = SimBmsFaultsConfig()
    unit_faults: dict[int, SimBmsFaultsConfig] = Field(default_factory=dict, description="faults of one address")

    @model_validator(mode="after")
    def _consistent(self) -> SimBmsConfig:
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError(f"simulator {self.name}: addresses must be unique, got {self.addresses}")
        if self.protocol == "jbd" and len(self.addresses) > 1:
            raise ValueError(f"simulator {self.name}: the JBD protocol has no device address; one JBD per bus")
        if self.protocol == "daly" and max(self.addresses) > 16:
            raise ValueError(f"simulator {self.name}: Daly board numbers are 1..16, got {self.addresses}")
        if self.protocol != "daly" and self.cells_per_module is not None and self.cells_per_module > 32:
            raise ValueError(f"simulator {self.name}: a {self.protocol} module has at most 32 cells")
        unknown = sorted(set(self.unit_faults) - set(self.addresses))
        if unknown:
            raise ValueError(f"simulator {self.name}: unit_faults for addresses {unknown} not in addresses")
        for where, faults in [
            ("faults", self.faults),
            *((f"unit_faults[{a}]", f) for a, f in self.unit_faults.items()),
        ]:
            if faults.wrong_protocol is not None and self.protocol == "modbus":
                raise ValueError(f"simulator {self.name}: {where}.wrong_protocol is for JBD and Daly buses")
            bad = [n for n in faults.open_sensors if n > self.sensors_per_module]
            if bad:
                raise ValueError(
                    f"simulator {self.name}: {where}.open_sensors {bad}: the modules have"
                    f" {self.sensors_per_module} sensors"
                )
        return self

    def module_cells(self, series_cells: int) -> int:
        return self.cells_per_module or series_cells // len(self.addresses)


class SimCanFaultsConfig(Strict):
    """Faults of a simulated CAN BMS at start (tests change them live: ``bench.simulation.can_bms[name].faults``)."""

    silent: bool = Field(default=False, description="send nothing: a silent bus")
    missing: list[str] = Field(default_factory=list, description="messages not sent (their values go STALE)")
    wrong_dlc: dict[str, Annotated[int, Field(ge=0, le=8)]] = Field(
        default_factory=dict, description="message -> the DLC sent instead of the DBC's"
    )
    out_of_range: list[str] = Field(
        default_factory=list, description="signals sent as all-ones raw, outside the DBC range"
    )
    protections: dict[AlarmName, Literal["warning", "alarm"]] = Field(default_factory=dict)


class SimCanBmsConfig(Strict):
    """A simulated CAN BMS sending the pack of a cycler simulator as the frames of a DBC file.

    Devices reach it with the same ``interface`` and ``channel`` (``virtual`` works in-process only)."""

    kind: Literal["can_bms"]
    name: Name
    dbc: str = Field(description="DBC file, relative to the bench file")
    interface: str = "virtual"
    channel: str
    signals: CanSignalsConfig
    cells: Annotated[int, Field(ge=1, le=400)] | None = Field(
        default=None, description="default: the pack's series cells"
    )
    sensors: Annotated[int, Field(ge=0, le=64)] = 2
    pack_of: Name | None = Field(default=None, description="the cycler simulator whose pack it watches; default first")
    cycle_times_s: dict[str, Annotated[float, Field(gt=0, le=3600)]] = Field(default_factory=dict)
    faults: SimCanFaultsConfig = SimCanFaultsConfig()


SimulatorConfig = Annotated[SimCyclerConfig | SimBmsConfig | SimCanBmsConfig, Field(discriminator="kind")]


class SimulationConfig(Strict):
    """Simulated hardware started inside the bench process (``daq run``, ``daq demo``) or alone (``daq sim``)."""

    time_scale: Annotated[float, Field(gt=0, le=100000)] = 1.0
    pack: PackConfig = PackConfig()
    simulators: list[SimulatorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SimulationConfig:
        names = [s.name for s in self.simulators]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"simulator names must be unique: {sorted(dup)}")
        cyclers = [s.name for s in self.simulators if isinstance(s, SimCyclerConfig)]
        for sim in self.simulators:
            if isinstance(sim, SimCanBmsConfig):
                if sim.pack_of is not None and sim.pack_of not in cyclers:
                    raise ValueError(f"simulator {sim.name}: pack_of {sim.pack_of!r} is not a cycler simulator")
                if sim.cells is not None and sim.cells > self.pack.series_cells:
                    raise ValueError(f"simulator {sim.name}: {sim.cells} cells, the pack has {self.pack.series_cells}")
                continue
            if not isinstance(sim, SimBmsConfig):
                continue
            if sim.pack_of is not None and sim.pack_of not in cyclers:
                raise ValueError(
                    f"simulator {sim.name}: pack_of {sim.pack_of!r} is not a cycler simulator"
                    f" (known: {cyclers or 'none'})"
                )
            cells = sim.module_cells(self.pack.series_cells)
            if cells < 1 or cells * len(sim.addresses) > self.pack.series_cells:
                raise ValueError(
                    f"simulator {sim.name}: {len(sim.addresses)} module(s) of {cells} cells do not fit the"
                    f" {self.pack.series_cells}-cell pack; set cells_per_module or pack.series_cells"
                )
            if sim.protocol != "daly" and cells > 32:
                raise ValueError(f"simulator {sim.name}: a {sim.protocol} module has at most 32 cells, got {cells}")
            for faults in [sim.faults, *sim.unit_faults.values()]:
                bad = [c for c in faults.drift_cells_v_per_s if c > self.pack.series_cells]
                if bad:
                    raise ValueError(
                        f"simulator {sim.name}: drift_cells_v_per_s names cells {bad}; the pack has"
                        f" {self.pack.series_cells}"
                    )
        return self


# --- journal and bench -----------------------------------------------------------------------


class JournalConfig(Strict):
    path: str = Field(default="", description="SQLite journal file; default journal/<bench id>.sqlite")
    commit_interval_s: Annotated[float, Field(gt=0, le=1.0)] = 0.5
    max_size_mb: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="disk budget; above it the oldest records every sink has delivered are pruned"
        " (never undelivered ones, never the current run); warning at warn_at_fraction",
    )
    warn_at_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.8


class SafetyConfig(Strict):
    """Software limits of the bench: every record is checked before the journal and the sinks see it."""

    limits: str = Field(description="limit-set file (configs/limits/*.yaml), relative to the bench file")
    stale_check_period_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    push_device_limits: bool = Field(
        default=True, description="write the limit set's hard bounds into the cycler's own limit registers at start"
    )
    escalation: Literal["contactor", "none"] = Field(
        default="contactor", description="what to do when the cycler's output does not read back off"
    )


class BenchInfo(Strict):
    id: Name
    description: str = ""
    location: str = ""


class BenchConfig(Strict):
    bench: BenchInfo
    devices: list[Device] = Field(min_length=1)
    journal: JournalConfig = JournalConfig()
    simulation: SimulationConfig | None = None
    safety: SafetyConfig | None = None
    sinks: list[SinkConfig] = Field(default_factory=list, description="where recorded data is forwarded")
    web: WebConfig = Field(default_factory=WebConfig, description="live bench page (daq run --http)")

    @model_validator(mode="after")
    def _references(self) -> BenchConfig:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique; repeated: {dup}")
        sink_names = [k.name for k in self.sinks]
        dup = sorted({n for n in sink_names if sink_names.count(n) > 1})
        if dup:
            raise ValueError(f"sink names must be unique (each is a delivery cursor in the journal); repeated: {dup}")
        sims = {s.name for s in self.simulation.simulators} if self.simulation else set()
        for dev in self.devices:
            if isinstance(dev, CanDeviceConfig):
                continue  # no transport: checked by _check_can_devices
            t = dev.transport
            if isinstance(t, TcpTransportConfig) and t.simulator is not None and t.simulator not in sims:
                raise ValueError(
                    f"device {dev.name}: transport.simulator {t.simulator!r} is not in simulation.simulators"
                    f" (known: {sorted(sims) or 'none'})"
                )
            if isinstance(t, TcpTransportConfig) and t.simulator is None and t.port == 0:
                raise ValueError(f"device {dev.name}: transport.port 0 needs transport.simulator")
        # Devices on one serial port share it: their line settings must agree.
        serial: dict[str, SerialTransportConfig] = {}
        for dev in self.devices:
            if isinstance(dev, CanDeviceConfig):
                continue  # no transport: checked by _check_can_devices
            t = dev.transport
            if isinstance(t, SerialTransportConfig):
                other = serial.setdefault(t.port, t)
                if other != t:
                    raise ValueError(
                        f"device {dev.name}: serial port {t.port} is shared with different line settings"
                        f" ({t.baud} {t.bytesize}{t.parity}{t.stopbits} vs {other.baud}"
                        f" {other.bytesize}{other.parity}{other.stopbits})"
                    )
        units: dict[tuple[str, int], str] = {}
        for dev in self.devices:
            if isinstance(dev, CanDeviceConfig):
                continue  # no transport: checked by _check_can_devices
            t = dev.transport
            address = dev.unit_id if isinstance(dev, ModbusDeviceConfig) else getattr(dev, "address", 0)
            key = (
                (f"serial:{t.port}", address)
                if isinstance(t, SerialTransportConfig)
                else (f"tcp:{t.simulator or t.host}:{t.port}", address)
            )
            if key in units:
                if isinstance(dev, JbdDeviceConfig):
                    raise ValueError(
                        f"devices {units[key]} and {dev.name} share serial port {t.port}, but the JBD protocol"
                        " has no device address: give each JBD its own port"
                    )
                what = "unit_id" if isinstance(dev, ModbusDeviceConfig) else "address"
                raise ValueError(f"devices {units[key]} and {dev.name} use the same link and {what} {address}")
            units[key] = dev.name
        self._check_serial_buses(sims)
        self._check_can_devices()
        return self

    def _check_serial_buses(self, sims: set[str]) -> None:
        """One protocol per serial port, and ``sim:`` ports name a simulated bus of that protocol."""
        protocols: dict[str, tuple[str, str]] = {}
        sim_buses = {
            s.name: s for s in (self.simulation.simulators if self.simulation else []) if isinstance(s, SimBmsConfig)
        }
        for dev in self.devices:
            if isinstance(dev, CanDeviceConfig):
                continue  # no transport: checked by _check_can_devices
            t = dev.transport
            if isinstance(t, TcpTransportConfig):
                if t.simulator in sim_buses:
                    raise ValueError(
                        f"device {dev.name}: simulator {t.simulator} is a serial BMS bus; reach it with"
                        f" transport: {{kind: serial, port: 'sim:{t.simulator}'}}"
                    )
                continue
            other = protocols.setdefault(t.port, (dev.kind, dev.name))
            if other[0] != dev.kind:
                raise ValueError(
                    f"device {dev.name} ({dev.kind}) and device {other[1]} ({other[0]}) share serial port {t.port}:"
                    " one bus carries one protocol; use another port"
                )
            if not t.port.startswith("sim:"):
                continue
            sim_name = t.port[4:]
            bus = sim_buses.get(sim_name)
            if bus is None:
                known = sorted(sim_buses) or "none"
                reason = "is not a simulated BMS bus" if sim_name in sims else "is not in simulation.simulators"
                raise ValueError(f"device {dev.name}: serial port {t.port}: {sim_name!r} {reason} (BMS buses: {known})")
            if bus.protocol != dev.kind:
                raise ValueError(
                    f"device {dev.name} is kind {dev.kind} but simulator {sim_name} speaks {bus.protocol};"
                    " make them agree"
                )
            address = dev.unit_id if isinstance(dev, ModbusDeviceConfig) else getattr(dev, "address", None)
            if address is not None and address not in bus.addresses:
                raise ValueError(
                    f"device {dev.name}: address {address} is not on simulator {sim_name} (addresses {bus.addresses})"
                )

    def _check_can_devices(self) -> None:
        """A CAN device on a simulated bus must record what that simulated BMS sends."""
        sims = [s for s in (self.simulation.simulators if self.simulation else []) if isinstance(s, SimCanBmsConfig)]
        for dev in self.devices:
            if not isinstance(dev, CanDeviceConfig):
                continue
            sim = next((s for s in sims if (s.interface, s.channel) == (dev.interface, dev.channel)), None)
            if sim is None:
                if dev.interface == "virtual":
                    raise ValueError(
                        f"device {dev.name}: CAN interface virtual channel {dev.channel!r} exists only in this process,"
                        f" and no simulator sends on it (simulated CAN buses: {[s.channel for s in sims] or 'none'})"
                    )
                continue
            cells = sim.cells or (self.simulation.pack.series_cells if self.simulation else 0)
            if (dev.cells, dev.sensors) != (cells, sim.sensors):
                raise ValueError(
                    f"device {dev.name}: cells {dev.cells} and sensors {dev.sensors}, but simulator {sim.name} sends"
                    f" {cells} cells and {sim.sensors} sensors; make them agree"
                )
