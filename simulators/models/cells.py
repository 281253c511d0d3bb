"""Cell parameter tables for the equivalent-circuit pack model (DOMAIN.md section 5).

Each chemistry is one frozen table: open-circuit voltage against state of charge, R0 / R1 / tau1
of the single RC pair against state of charge, a temperature factor for R0, and the cell's
thermal constants. Resistances and thermal constants are for ``reference_capacity_ah``; the pack
model scales resistance as 1/capacity and heat capacity / cooling as capacity.

The OCV tables extend past 0 and 1 (marked "knee" below): the published points end at the
window edges, but an over-discharged cell must collapse and an overcharged one (GB 38031 takes
cells to 115 % SOC) must climb, otherwise a simulated abuse test could never trip anything.
Those extension points are assumptions shaped like real cells, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class Chemistry(StrEnum):
    NMC = "nmc"
    LFP = "lfp"


@dataclass(frozen=True, slots=True)
class CellTable:
    chemistry: Chemistry
    description: str
    reference_capacity_ah: float
    voltage_window_v: tuple[float, float]  # usual discharge / charge cut-offs under load
    ocv_soc: tuple[float, ...]  # increasing; may extend beyond 0..1 (knee)
    ocv_v: tuple[float, ...]
    rc_soc: tuple[float, ...]  # grid of the resistance tables; clamped outside
    r0_ohm: tuple[float, ...]
    r1_ohm: tuple[float, ...]
    tau1_s: tuple[float, ...]
    r0_temperature_c: tuple[float, ...]  # R0 multiplier against temperature; clamped outside
    r0_temperature_factor: tuple[float, ...]
    heat_capacity_j_per_k: float
    heat_transfer_w_per_k: float  # h * A

    def __post_init__(self) -> None:
        for xs, ys, what in (
            (self.ocv_soc, self.ocv_v, "ocv"),
            (self.rc_soc, self.r0_ohm, "r0"),
            (self.rc_soc, self.r1_ohm, "r1"),
            (self.rc_soc, self.tau1_s, "tau1"),
            (self.r0_temperature_c, self.r0_temperature_factor, "r0 temperature"),
        ):
            if len(xs) != len(ys) or len(xs) < 2 or any(b <= a for a, b in pairwise(xs)):
                raise ValueError(f"cell table {self.chemistry}: {what} grid must be increasing and match")

    @property
    def soc_limits(self) -> tuple[float, float]:
        """The SOC range the OCV table covers; the model keeps every cell inside it."""
        return self.ocv_soc[0], self.ocv_soc[-1]

    def ocv(self, soc: ArrayLike) -> FloatArray:
        """Open-circuit voltage of one cell at ``soc`` (scalar or array), linear interpolation."""
        return np.interp(soc, self.ocv_soc, self.ocv_v)


# Kokam-type NMC pouch, 27 Ah, 20 degC (DOMAIN.md 5). Knee points outside 0..1 are assumptions.
NMC_KOKAM_27AH = CellTable(
    chemistry=Chemistry.NMC,
    description="NMC pouch 27 Ah (Kokam-type data set, 20 degC)",
    reference_capacity_ah=27.0,
    voltage_window_v=(3.0, 4.2),
    ocv_soc=(-0.10, -0.05, -0.03, -0.02, -0.01, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.05, 1.10, 1.15, 1.20, 1.30),
    ocv_v=(0.50, 2.00, 2.70, 3.05, 3.30, 3.50, 3.57, 3.63, 3.71, 3.93, 4.08, 4.19, 4.30, 4.45, 4.65, 4.90, 5.50),
    rc_soc=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    r0_ohm=(8.5e-3, 8.5e-3, 8.7e-3, 8.2e-3, 8.3e-3, 8.5e-3, 8.5e-3),
    r1_ohm=(2.9e-3, 2.4e-3, 2.6e-3, 1.6e-3, 2.3e-3, 1.8e-3, 1.7e-3),
    tau1_s=(36.0, 45.0, 105.0, 29.0, 77.0, 33.0, 39.0),
    # about 11 mOhm at 5 degC, 8.5 at 20, about 9 at 40 (as published; clamped outside)
    r0_temperature_c=(5.0, 20.0, 40.0),
    r0_temperature_factor=(11.0 / 8.5, 1.0, 9.0 / 8.5),
    heat_capacity_j_per_k=0.75 * 830.0,  # 0.75 kg x 830 J/(kg K)
    heat_transfer_w_per_k=10.0 * 0.054,  # 10 W/(m2 K) over 0.054 m2
)

# A123-type LFP. OCV from the published curve (flat plateau); resistances from the generic large
# cell set (100 Ah: ~1 mOhm DC at 50 % SOC, 1.2 at the ends, 40 % R0 / 60 % R1, tau 30 s, thermal
# mass 1000 J/K). Cooling chosen for the same thermal time constant as the NMC cell (assumption);
# R0 temperature factor borrowed from the NMC figures (assumption).
LFP_A123 = CellTable(
    chemistry=Chemistry.LFP,
    description="LFP (A123-type OCV, generic large-cell resistances)",
    reference_capacity_ah=100.0,
    voltage_window_v=(2.5, 3.65),
    ocv_soc=(
        -0.10, -0.05, -0.02, 0.0, 0.01, 0.054, 0.096, 0.139, 0.226, 0.312, 0.398, 0.527, 0.656,
        0.742, 0.829, 0.915, 0.957, 1.0, 1.02, 1.05, 1.10, 1.20,
    ),
    ocv_v=(
        0.50, 1.50, 2.00, 2.50, 2.90, 3.12, 3.17, 3.19, 3.22, 3.24, 3.263, 3.272, 3.278,
        3.29, 3.306, 3.316, 3.32, 3.59, 3.70, 3.90, 4.20, 5.00,
    ),
    rc_soc=(0.0, 0.5, 1.0),
    r0_ohm=(0.48e-3, 0.40e-3, 0.48e-3),
    r1_ohm=(0.72e-3, 0.60e-3, 0.72e-3),
    tau1_s=(30.0, 30.0, 30.0),
    r0_temperature_c=(5.0, 20.0, 40.0),
    r0_temperature_factor=(11.0 / 8.5, 1.0, 9.0 / 8.5),
    heat_capacity_j_per_k=1000.0,
    heat_transfer_w_per_k=1000.0 / (0.75 * 830.0 / (10.0 * 0.054)),
)  # fmt: skip

CELL_TABLES: dict[Chemistry, CellTable] = {Chemistry.NMC: NMC_KOKAM_27AH, Chemistry.LFP: LFP_A123}


def cell_table(chemistry: Chemistry | str) -> CellTable:
    try:
        return CELL_TABLES[Chemistry(chemistry)]
    except ValueError:
        known = ", ".join(c.value for c in Chemistry)
        raise ValueError(f"unknown chemistry {chemistry!r}: use one of {known}") from None
