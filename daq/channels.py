"""Standard channel names: the contract between drivers, limits, runner, sinks and exports.

Drivers name their channels with these so the rest of the system can find a pack voltage or a
cell's temperature without knowing the device. Units are in the names (SI, current + = charge).

Cycler (device kind "cycler"):
    voltage_v, current_a, power_w, charge_ah, energy_wh, temperature_c,
    mode (see CyclerMode), output_on (0/1), alarm (0/1), watchdog_tripped (0/1)
BMS (device kind "bms"):
    voltage_v, current_a, soc_pct, cell1_v .. cellN_v, temp1_c .. tempM_c,
    balance_mask (cells 1..32 as a bit mask), alarm_level (0 ok, 1 warning, 2 alarm),
    alarm_<name> (0/1/2 per vendor-neutral alarm, see drivers.bms.model)
"""

from __future__ import annotations

import re
from enum import IntEnum

VOLTAGE = "voltage_v"
CURRENT = "current_a"
POWER = "power_w"
CHARGE_AH = "charge_ah"
ENERGY_WH = "energy_wh"
TEMPERATURE = "temperature_c"
SOC = "soc_pct"
MODE = "mode"
OUTPUT_ON = "output_on"
ALARM_LEVEL = "alarm_level"

CELL_VOLTAGE_RE = re.compile(r"^cell(\d+)_v$")
TEMPERATURE_RE = re.compile(r"^(?:temp(\d+)_c|temperature_c)$")


# One spelling per unit everywhere (drivers, tables, exports): the Battery Data Format's.
DEGC = "degC"
_CELSIUS = ("\u00b0c", "\u2103", "c", "degc", "deg c", "deg_c", "celsius")  # lower-cased; \u00b0 is the degree sign
_UNIT_ALIASES = dict.fromkeys(_CELSIUS, DEGC)

# Below this magnitude a current is shown as rest, not as charge or discharge (sensor noise).
REST_CURRENT_A = 0.05


def canonical_unit(unit: str) -> str:
    """The project's spelling of ``unit`` (a degree sign, ``C``, ``deg C`` -> ``degC``); others unchanged."""
    return _UNIT_ALIASES.get(unit.strip().lower(), unit.strip())


def current_direction(current_a: float) -> str:
    """``charge`` or ``discharge`` for a signed current (+ = charge), ``rest`` near zero."""
    if abs(current_a) < REST_CURRENT_A:
        return "rest"
    return "charge" if current_a > 0 else "discharge"


def cell_voltage(n: int) -> str:
    return f"cell{n}_v"


def cell_temperature(n: int) -> str:
    return f"temp{n}_c"


class CyclerMode(IntEnum):
    """Value of the cycler's ``mode`` channel and mode setpoint."""

    REST = 0
    CC = 1
    CV = 2
    CCCV = 3
    CP = 4
