"""The vendor-neutral BMS reading every BMS codec normalises to, and its record channels.

Conventions (DOMAIN.md sections 1 and 3): SI units, current positive = charging the pack,
temperatures in degC with NaN for an open or absent sensor, protections at three levels.

``alarms`` holds one entry for every alarm the BMS protocol can report (OK when clear). An
alarm the protocol cannot report at all is absent from the dict, and its record channel is
NaN ("this BMS cannot tell"), never a reassuring 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from daq import channels as std
from daq.records import Channel, Quality

NAN = math.nan


class AlarmLevel(IntEnum):
    OK = 0
    WARNING = 1
    ALARM = 2


class AlarmName(StrEnum):
    """The vendor-neutral protection set. Values name the ``alarm_<value>`` record channels."""

    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    PACK_OVERVOLTAGE = "pack_overvoltage"
    PACK_UNDERVOLTAGE = "pack_undervoltage"
    LOW_SOC = "low_soc"
    CHARGE_OVERCURRENT = "charge_overcurrent"
    DISCHARGE_OVERCURRENT = "discharge_overcurrent"
    SHORT_CIRCUIT = "short_circuit"
    CELL_IMBALANCE = "cell_imbalance"
    CHARGE_OVERTEMPERATURE = "charge_overtemperature"
    CHARGE_UNDERTEMPERATURE = "charge_undertemperature"
    DISCHARGE_OVERTEMPERATURE = "discharge_overtemperature"
    DISCHARGE_UNDERTEMPERATURE = "discharge_undertemperature"
    MOS_OVERTEMPERATURE = "mos_overtemperature"
    INTERNAL_FAILURE = "internal_failure"
    FUSE = "fuse"
    SOFTWARE_LOCK = "software_lock"


def alarm_channel(name: AlarmName) -> str:
    return f"alarm_{name.value}"


BALANCE_MASK = "balance_mask"
CHARGE_FET = "charge_fet"
DISCHARGE_FET = "discharge_fet"
ALARM_CHANNELS: tuple[str, ...] = tuple(alarm_channel(name) for name in AlarmName)
MAX_BALANCE_MASK_CELLS = 32  # the balance_mask channel is a 32-bit mask (exact in a float64)


@dataclass(frozen=True, slots=True)
class BmsReading:
    """One complete, normalised reading of one BMS."""

    voltage_v: float
    current_a: float  # + = charging
    soc_pct: float
    cell_voltages_v: tuple[float, ...]  # cell 1 first
    temperatures_c: tuple[float, ...]  # NaN = open or absent sensor
    balancing: tuple[bool, ...]  # per cell, cell 1 first
    charge_fet: bool
    discharge_fet: bool
    cycles: int
    remaining_ah: float  # NaN when the BMS does not report it
    nominal_ah: float  # NaN when the BMS does not report it
    alarms: Mapping[AlarmName, AlarmLevel]

    @property
    def alarm_level(self) -> AlarmLevel:
        """The worst level among the reported alarms (OK when none is reported)."""
        return max(self.alarms.values(), default=AlarmLevel.OK)

    @property
    def balance_mask(self) -> int:
        """Balancing cells 1..32 as a bit mask, bit 0 = cell 1."""
        mask = 0
        for i, on in enumerate(self.balancing[:MAX_BALANCE_MASK_CELLS]):
            if on:
                mask |= 1 << i
        return mask

    @property
    def open_sensors(self) -> tuple[int, ...]:
        """1-based numbers of the temperature sensors that read open or absent."""
        return tuple(i + 1 for i, t in enumerate(self.temperatures_c) if math.isnan(t))


def bms_channels(cells: int, sensors: int) -> tuple[Channel, ...]:
    """The record channels of a BMS with ``cells`` series cells and ``sensors`` temperatures.

    The order is fixed by (cells, sensors) and matches ``reading_to_channels``.
    """
    if cells < 0 or sensors < 0:
        raise ValueError(f"cells and sensors must be >= 0, got cells={cells}, sensors={sensors}")
    return (
        Channel(std.VOLTAGE, "V"),
        Channel(std.CURRENT, "A"),
        Channel(std.SOC, "%"),
        *(Channel(std.cell_voltage(n), "V") for n in range(1, cells + 1)),
        *(Channel(std.cell_temperature(n), "degC") for n in range(1, sensors + 1)),
        Channel(BALANCE_MASK),
        Channel(CHARGE_FET),
        Channel(DISCHARGE_FET),
        Channel(std.ALARM_LEVEL),
        *(Channel(name) for name in ALARM_CHANNELS),
    )


def _fixed(values: tuple[float, ...], count: int) -> list[float]:
    """Exactly ``count`` values: NaN-padded if the BMS reported fewer, cut if it reported more."""
    if len(values) >= count:
        return list(values[:count])
    return [*values, *([NAN] * (count - len(values)))]


def reading_to_channels(reading: BmsReading, *, cells: int, sensors: int) -> list[float]:
    """Record values for ``bms_channels(cells, sensors)``, in the same order.

    Cells or sensors the reading lacks are NaN; extra ones it has are dropped (the channel set
    is fixed per device by its configuration, not by what one reply happened to contain).
    """
    alarms = reading.alarms
    return [
        reading.voltage_v,
        reading.current_a,
        reading.soc_pct,
        *_fixed(reading.cell_voltages_v, cells),
        *_fixed(reading.temperatures_c, sensors),
        float(reading.balance_mask),
        1.0 if reading.charge_fet else 0.0,
        1.0 if reading.discharge_fet else 0.0,
        float(reading.alarm_level),
        *(float(alarms[name]) if name in alarms else NAN for name in AlarmName),
    ]


def reading_quality(reading: BmsReading, *, cells: int, sensors: int) -> bytes:
    """Quality codes for ``reading_to_channels``: a missing cell or an open/absent temperature
    sensor is OUT_OF_RANGE (a sensor sentinel); everything else the BMS reported is GOOD.

    An alarm the protocol cannot report stays GOOD with a NaN value: the absence is permanent
    and known, not a bad reading.
    """
    head = bytes(3)
    cell_part = bytes(
        Quality.GOOD
        if i < len(reading.cell_voltages_v) and not math.isnan(reading.cell_voltages_v[i])
        else Quality.OUT_OF_RANGE
        for i in range(cells)
    )
    temp_part = bytes(
        Quality.GOOD
        if i < len(reading.temperatures_c) and not math.isnan(reading.temperatures_c[i])
        else Quality.OUT_OF_RANGE
        for i in range(sensors)
    )
    return head + cell_part + temp_part + bytes(4 + len(ALARM_CHANNELS))
