"""What a simulated device sees of the simulated pack at one instant (plain data, + = charge)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PackSnapshot:
    t_s: float  # simulated monotonic seconds
    voltage_v: float  # pack terminal voltage
    current_a: float  # + = charging
    soc: float  # mean state of charge, 0..1
    cell_voltages_v: tuple[float, ...]  # series cells, cell 1 first
    cell_socs: tuple[float, ...]
    cell_temperatures_c: tuple[float, ...]  # one per series cell
    ambient_c: float
    remaining_ah: float
    nominal_ah: float
    balancing: tuple[bool, ...]  # per cell
    cycles: float = 0.0  # equivalent full cycles so far
