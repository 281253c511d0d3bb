"""The bench file: pydantic v2 models (``extra="forbid"``, frozen, tagged unions by ``kind``).

Units are in field names. Paths inside a bench file (register maps, limit sets) are relative to
the bench file's folder; the journal path is relative to the working directory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


Device = Annotated[ModbusDeviceConfig, Field(discriminator="kind")]


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


SimulatorConfig = Annotated[SimCyclerConfig, Field(discriminator="kind")]


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
        return self


# --- journal and bench -----------------------------------------------------------------------


class JournalConfig(Strict):
    path: str = Field(default="", description="SQLite journal file; default journal/<bench id>.sqlite")
    commit_interval_s: Annotated[float, Field(gt=0, le=1.0)] = 0.5


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

    @model_validator(mode="after")
    def _references(self) -> BenchConfig:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique; repeated: {dup}")
        sims = {s.name for s in self.simulation.simulators} if self.simulation else set()
        for dev in self.devices:
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
            t = dev.transport
            key = (
                (f"serial:{t.port}", dev.unit_id)
                if isinstance(t, SerialTransportConfig)
                else (f"tcp:{t.simulator or t.host}:{t.port}", dev.unit_id)
            )
            if key in units:
                raise ValueError(f"devices {units[key]} and {dev.name} use the same link and unit_id {dev.unit_id}")
            units[key] = dev.name
        return self
