"""Charge (Ah) and energy (Wh) moved, counted apart by direction (+ = charge). Pure arithmetic,
shared by the live test runner and the exports so both count the same way."""

from __future__ import annotations

from dataclasses import dataclass

_SECONDS_PER_HOUR = 3600.0


@dataclass(slots=True)
class Totals:
    """Charge and energy moved, counted apart by direction (all magnitudes >= 0)."""

    charge_ah: float = 0.0
    discharge_ah: float = 0.0
    charge_wh: float = 0.0
    discharge_wh: float = 0.0

    @property
    def net_ah(self) -> float:
        return self.charge_ah - self.discharge_ah

    @property
    def net_wh(self) -> float:
        return self.charge_wh - self.discharge_wh

    def add_constant(self, current_a: float, voltage_v: float, dt_s: float) -> None:
        """``current_a`` and ``voltage_v`` held for ``dt_s`` seconds."""
        if dt_s <= 0:
            return
        ah = current_a * dt_s / _SECONDS_PER_HOUR
        wh = ah * voltage_v
        if ah >= 0:
            self.charge_ah += ah
            self.charge_wh += wh
        else:
            self.discharge_ah -= ah
            self.discharge_wh -= wh

    def add_trapezoid(self, i0: float, v0: float, i1: float, v1: float, dt_s: float) -> None:
        """Current and power ramping linearly from (i0, v0) to (i1, v1) over ``dt_s`` seconds."""
        if dt_s <= 0:
            return
        p0, p1 = i0 * v0, i1 * v1
        if (i0 >= 0) == (i1 >= 0) or i0 == 0 or i1 == 0:
            ah = (i0 + i1) * dt_s / (2 * _SECONDS_PER_HOUR)
            wh = (p0 + p1) * dt_s / (2 * _SECONDS_PER_HOUR)
            self._add_signed(ah, wh, sign_hint=i0 + i1)
            return
        t_zero = dt_s * i0 / (i0 - i1)  # the current crosses zero here; so does the power
        self._add_signed(i0 * t_zero / (2 * _SECONDS_PER_HOUR), p0 * t_zero / (2 * _SECONDS_PER_HOUR), i0)
        rest = dt_s - t_zero
        self._add_signed(i1 * rest / (2 * _SECONDS_PER_HOUR), p1 * rest / (2 * _SECONDS_PER_HOUR), i1)

    def add(self, amps: float, watts: float, dt_s: float) -> None:
        """``amps`` and ``watts`` held for ``dt_s``; each sign decides its side on its own."""
        if amps >= 0:
            self.charge_ah += amps * dt_s / _SECONDS_PER_HOUR
        else:
            self.discharge_ah -= amps * dt_s / _SECONDS_PER_HOUR
        if watts >= 0:
            self.charge_wh += watts * dt_s / _SECONDS_PER_HOUR
        else:
            self.discharge_wh -= watts * dt_s / _SECONDS_PER_HOUR

    def add_totals(self, other: Totals) -> None:
        self.charge_ah += other.charge_ah
        self.discharge_ah += other.discharge_ah
        self.charge_wh += other.charge_wh
        self.discharge_wh += other.discharge_wh

    def _add_signed(self, ah: float, wh: float, sign_hint: float) -> None:
        if sign_hint >= 0:
            self.charge_ah += ah
            self.charge_wh += wh
        else:
            self.discharge_ah -= ah
            self.discharge_wh -= wh

    def to_dict(self) -> dict[str, float]:
        return {
            "charge_ah": self.charge_ah,
            "discharge_ah": self.discharge_ah,
            "charge_wh": self.charge_wh,
            "discharge_wh": self.discharge_wh,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Totals:
        return cls(
            charge_ah=float(data.get("charge_ah", 0.0)),
            discharge_ah=float(data.get("discharge_ah", 0.0)),
            charge_wh=float(data.get("charge_wh", 0.0)),
            discharge_wh=float(data.get("discharge_wh", 0.0)),
        )
