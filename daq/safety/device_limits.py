"""Hardware limits: the limit set's trip levels written into the cycler's own limit registers.

The cycler then protects the pack by itself, continuously and independently of this process.
Which trip level feeds which standard register (``daq.cycler`` names them ``limit_*``):

    limit_max_voltage_v             pack_voltage_max_v.trip
    limit_min_voltage_v             pack_voltage_min_v.trip
    limit_max_charge_current_a      charge_current_max_a.trip
    limit_max_discharge_current_a   discharge_current_max_a.trip
    limit_max_temperature_c         pack_temperature_max_c.trip (else cell_temperature_max_c.trip)

A limit without a trip level, or a register the device lacks, is skipped. Every written value is
read back; a value that does not read back (within the register's resolution) is a start error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from daq.cycler import CyclerControl
from daq.errors import DeviceLimitError, DriverError
from daq.safety.limits import LimitSet

_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("limit_max_voltage_v", ("pack_voltage_max_v",)),
    ("limit_min_voltage_v", ("pack_voltage_min_v",)),
    ("limit_max_charge_current_a", ("charge_current_max_a",)),
    ("limit_max_discharge_current_a", ("discharge_current_max_a",)),
    ("limit_max_temperature_c", ("pack_temperature_max_c", "cell_temperature_max_c")),
)
DEVICE_LIMIT_CHANNELS = tuple(channel for channel, _ in _SOURCES)


@dataclass(frozen=True, slots=True)
class DeviceLimitValue:
    channel: str  # the device register, e.g. limit_max_voltage_v
    source: str  # the limit-set field it comes from, e.g. pack_voltage_max_v.trip
    value: float


@dataclass(slots=True)
class DeviceLimitsResult:
    cycler: str
    written: dict[str, float] = field(default_factory=dict)
    readback: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"cycler": self.cycler, "written": self.written, "readback": self.readback, "skipped": self.skipped}


def device_limit_values(limits: LimitSet) -> list[DeviceLimitValue]:
    """The hard bounds of ``limits`` for the standard ``limit_*`` registers (trip levels only)."""
    out = []
    for channel, sources in _SOURCES:
        for source in sources:
            limit = getattr(limits, source)
            if limit is not None and limit.trip is not None:
                out.append(DeviceLimitValue(channel, f"{source}.trip", float(limit.trip)))
                break
    return out


def _resolution(ctl: CyclerControl, channel: str, value: float) -> float:
    """How far a read-back may differ: half a step of an integer register, float rounding else."""
    register = getattr(ctl.driver, "register", None)
    reg = register(channel) if register is not None else None
    if reg is None or reg.type in ("f32", "f64"):
        return 1e-6 * max(1.0, abs(value))
    return abs(reg.scale) / 2 + 1e-9 * max(1.0, abs(value))


async def push_device_limits(
    ctl: CyclerControl,
    values: list[DeviceLimitValue],
    *,
    resolution: Callable[[CyclerControl, str, float], float] = _resolution,
) -> DeviceLimitsResult:
    """Write ``values`` the device has, read each back; DeviceLimitError on any failure or mismatch."""
    result = DeviceLimitsResult(ctl.name)
    wanted = {}
    for item in values:
        if ctl.has(item.channel):
            wanted[item.channel] = item
        else:
            result.skipped.append(item.channel)
    if not wanted:
        return result
    try:
        readback = await ctl.push_limits({channel: item.value for channel, item in wanted.items()})
    except DriverError as exc:
        raise DeviceLimitError(
            f"{ctl.name}: cannot write the device limits ({exc}); check the device is reachable,"
            " or set safety.push_device_limits: false"
        ) from exc
    problems = []
    for channel, item in wanted.items():
        got = readback.get(channel, math.nan)
        result.written[channel] = item.value
        result.readback[channel] = got
        if not abs(got - item.value) <= resolution(ctl, channel, item.value):
            problems.append(f"{channel} (from {item.source}) wrote {item.value:g}, read back {got:g}")
    if problems:
        raise DeviceLimitError(
            f"{ctl.name}: device limits did not read back: {'; '.join(problems)};"
            " the device may clamp or ignore them: check its manual and the register map"
        )
    return result
