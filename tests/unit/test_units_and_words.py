"""One spelling per unit, and charge/discharge named beside a signed current."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from daq.channels import DEGC, canonical_unit, current_direction
from daq.cli.live import _device_rows
from daq.records import Channel, DeviceSchema, Record
from drivers.bms.model import bms_channels
from drivers.modbus.regmap import load_regmap, plan_channels, plan_reads
from tests.helpers import CYCLER_REGMAP, REPO


def _channels(regmap_path: str | Path) -> tuple[Channel, ...]:
    return plan_channels(plan_reads(load_regmap(regmap_path).polled))


CYCLER = DeviceSchema("cycler-1", "cycler", _channels(CYCLER_REGMAP))


def _record(schema: DeviceSchema, **values: float) -> Record:
    vals = [values.get(c.name, 0.0) for c in schema.channels]
    return Record(schema, 0, vals, bytes(len(vals)))


@pytest.mark.parametrize("spelling", ["°C", "C", "deg C", "degC", "℃", "celsius"])
def test_every_celsius_spelling_in_a_register_map_becomes_degC(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        f"name: m\nregisters:\n  - {{name: temperature_c, table: input, address: 0, type: i16, unit: '{spelling}'}}\n",
        encoding="utf-8",
    )
    assert [c.unit for c in _channels(path)] == [DEGC]
    assert canonical_unit("V") == "V" and canonical_unit("Ah") == "Ah"


def test_cycler_and_bms_temperatures_are_spelled_alike() -> None:
    bms = DeviceSchema("bms-1", "bms", bms_channels(14, 2))
    units = {c.unit for c in (*CYCLER.channels, *bms.channels) if c.name.endswith("_c")}
    assert units == {DEGC}
    cycler_rows = dict(_device_rows(_record(CYCLER, temperature_c=25.0)))
    bms_rows = dict(_device_rows(_record(bms, temp1_c=24.0, temp2_c=26.0, cell1_v=3.7)))
    assert cycler_rows["temperature_c"].endswith(" degC")
    assert bms_rows["temps"].endswith(" degC")


def test_no_other_celsius_spelling_is_printed_anywhere() -> None:
    # drivers may know vendor spellings (they normalise at their boundary); the runtime prints one
    for package in ("daq",):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "°C" not in text and "℃" not in text, path


@pytest.mark.parametrize(
    ("current_a", "word"), [(-27.0, "discharge"), (13.5, "charge"), (0.0, "rest"), (-0.01, "rest")]
)
def test_the_live_table_names_the_direction_of_the_current(current_a: float, word: str) -> None:
    assert current_direction(current_a) == word
    rows = dict(_device_rows(_record(CYCLER, current_a=current_a)))
    assert rows["current_a"].endswith(f" A {word}")


def test_a_missing_current_gets_no_direction() -> None:
    schema = DeviceSchema("x", "cycler", (Channel("current_a", "A"),))
    rec = Record(schema, 0, [math.nan], bytes(1))
    assert dict(_device_rows(rec))["current_a"] == "—"
