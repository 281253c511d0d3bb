"""The pure DBC-to-channels layer: encoder and assembler against each other, times given explicitly."""

from __future__ import annotations

import math

import pytest

from daq.records import Quality
from drivers.bms.model import AlarmName
from drivers.can.dbc import load_dbc
from drivers.can.mapping import (
    CanChannelSpec,
    CanFrameAssembler,
    CanFrameEncoder,
    SignalSpec,
    expand_signal_names,
    mux_indexed,
    resolve_mapping,
)
from tests.helpers import REPO

DBC = REPO / "configs" / "dbc" / "demo_pack.dbc"
CELLS, SENSORS = 14, 2


def demo_spec(**changes: object) -> CanChannelSpec:
    spec = {
        "cells": expand_signal_names("Cell{n:02d}_Voltage", CELLS),
        "temperatures": expand_signal_names("Temp{n}", SENSORS),
        "voltage_v": SignalSpec("PackVoltage"),
        "current_a": SignalSpec("PackCurrent", discharge_positive=True),
        "soc_pct": SignalSpec("PackSOC"),
        "balance_mask": "BalanceMask",
        "charge_fet": "ChargeFET",
        "discharge_fet": "DischargeFET",
        "alarms": ((AlarmName.CELL_OVERVOLTAGE, "AlarmCellOV"),),
    }
    spec.update(changes)
    return CanChannelSpec(**spec)  # type: ignore[arg-type]


def demo_mapping(**changes: object):
    mapping, problems = resolve_mapping(load_dbc(DBC), demo_spec(**changes), cells=CELLS, sensors=SENSORS)
    assert problems == []
    assert mapping is not None
    return mapping


def pack_values(mapping) -> list[float]:
    names = [c.name for c in mapping.channels]
    values = [math.nan] * len(names)
    for n in range(1, CELLS + 1):
        values[names.index(f"cell{n}_v")] = 3.6 + n / 1000
    values[names.index("voltage_v")] = 51.23
    values[names.index("current_a")] = 12.5  # charging
    values[names.index("soc_pct")] = 61.5
    values[names.index("temp1_c")] = 25.0
    values[names.index("temp2_c")] = 31.0
    values[names.index("balance_mask")] = 0b101
    values[names.index("charge_fet")] = 1.0
    values[names.index("discharge_fet")] = 0.0
    values[names.index("alarm_cell_overvoltage")] = 1.0
    return values


def send_all(mapping, assembler: CanFrameAssembler, values: list[float], t: float, **kw: object) -> None:
    encoder = CanFrameEncoder(mapping)
    for source in mapping.sources:
        assembler.update(source.frame_id, encoder.encode(source, values, **kw), t)  # type: ignore[arg-type]


def record(mapping, assembler: CanFrameAssembler, t: float) -> tuple[dict[str, float], dict[str, int]]:
    n = len(mapping.channels)
    values, quality = [math.nan] * n, bytearray(n)
    assembler.fill(values, quality, t)
    names = [c.name for c in mapping.channels]
    return dict(zip(names, values, strict=True)), dict(zip(names, quality, strict=True))


def test_every_channel_round_trips_with_units_and_sign_normalised() -> None:
    mapping = demo_mapping()
    # the cell message is multiplexed: one source per mux value that holds one of our 14 cells
    assert sorted(s.mux for s in mapping.sources if s.message == "BMS_CellVoltages") == [0, 1, 2, 3, 4]
    assembler = CanFrameAssembler(mapping)
    sent = pack_values(mapping)
    send_all(mapping, assembler, sent, 0.0)
    got, quality = record(mapping, assembler, 0.05)
    for n in range(1, CELLS + 1):  # mV on the wire, V in the record
        assert got[f"cell{n}_v"] == pytest.approx(3.6 + n / 1000, abs=0.0005)
    assert got["current_a"] == pytest.approx(12.5)  # discharge-positive on the wire, + = charge here
    assert got["voltage_v"] == pytest.approx(51.23)
    assert got["soc_pct"] == pytest.approx(61.5)
    assert (got["temp1_c"], got["temp2_c"]) == (25.0, 31.0)
    assert (got["balance_mask"], got["charge_fet"], got["discharge_fet"]) == (5.0, 1.0, 0.0)
    assert got["alarm_cell_overvoltage"] == 1.0
    assert got["alarm_level"] == 1.0
    assert set(quality.values()) == {int(Quality.GOOD)}
    assert math.isnan(got["alarm_fuse"])  # not in this DBC: "cannot tell", never a reassuring 0


def test_the_wire_carries_discharge_positive_current() -> None:
    mapping = demo_mapping()
    pack = next(s for s in mapping.sources if s.message == "BMS_Pack")
    data = CanFrameEncoder(mapping).encode(pack, pack_values(mapping))
    assert mapping.frames[pack.frame_id].message.decode(data)["PackCurrent"] == pytest.approx(-12.5)


def test_a_frame_older_than_its_cycle_times_the_factor_is_stale_and_keeps_its_value() -> None:
    mapping = demo_mapping()
    assembler = CanFrameAssembler(mapping, stale_factor=3.0)
    sent = pack_values(mapping)
    send_all(mapping, assembler, sent, 0.0)
    # at 0.5 s the pack frame (100 ms cycle) and the cells (200 ms) are over 3 cycles old; the
    # temperatures (1000 ms) are not; another frame keeps the bus from counting as silent
    pack = next(s for s in mapping.sources if s.message == "BMS_Temperatures")
    assembler.update(pack.frame_id, CanFrameEncoder(mapping).encode(pack, sent), 0.5)
    got, quality = record(mapping, assembler, 0.61)
    assert quality["voltage_v"] == quality["cell1_v"] == quality["alarm_level"] == int(Quality.STALE)
    assert got["cell1_v"] == pytest.approx(3.601, abs=0.0005)
    assert quality["temp1_c"] == int(Quality.GOOD)


def test_never_received_is_timeout_and_a_silent_bus_is_comm_lost() -> None:
    mapping = demo_mapping()
    assembler = CanFrameAssembler(mapping)
    assembler.reset(10.0)
    _, quality = record(mapping, assembler, 10.1)
    assert quality["cell1_v"] == int(Quality.TIMEOUT)
    send_all(mapping, assembler, pack_values(mapping), 10.2)
    _, quality = record(mapping, assembler, 10.2 + assembler.silence_s + 0.01)
    assert set(quality.values()) == {int(Quality.COMM_LOST)}


def test_wrong_dlc_marks_that_message_bad_frame_only() -> None:
    mapping = demo_mapping()
    assembler = CanFrameAssembler(mapping)
    send_all(mapping, assembler, pack_values(mapping), 0.0)
    pack = next(s for s in mapping.sources if s.message == "BMS_Pack")
    assembler.update(pack.frame_id, CanFrameEncoder(mapping).encode(pack, pack_values(mapping))[:5], 0.01)
    got, quality = record(mapping, assembler, 0.02)
    assert quality["voltage_v"] == quality["current_a"] == int(Quality.BAD_FRAME)
    assert math.isnan(got["voltage_v"])
    assert quality["cell1_v"] == int(Quality.GOOD)


def test_out_of_range_raw_value_marks_that_signal_only() -> None:
    mapping = demo_mapping()
    assembler = CanFrameAssembler(mapping)
    send_all(mapping, assembler, pack_values(mapping), 0.0, out_of_range=frozenset({"Cell05_Voltage", "Temp2"}))
    got, quality = record(mapping, assembler, 0.01)
    assert quality["cell5_v"] == quality["temp2_c"] == int(Quality.OUT_OF_RANGE)
    assert math.isnan(got["cell5_v"])
    assert quality["cell4_v"] == quality["cell6_v"] == quality["temp1_c"] == int(Quality.GOOD)


def test_problems_name_the_signal_the_dbc_lacks_and_the_unit_that_does_not_convert() -> None:
    spec = demo_spec(soc_pct=SignalSpec("StateOfCharge"), current_a=SignalSpec("ChargeFET"))
    mapping, problems = resolve_mapping(load_dbc(DBC), spec, cells=CELLS, sensors=SENSORS, where="bench.yaml: x")
    assert mapping is None
    assert any("'StateOfCharge', which the DBC does not define" in p for p in problems)
    assert any("signal ChargeFET has unit ''" in p and "scale:" in p for p in problems)
    _, problems = resolve_mapping(load_dbc(DBC), demo_spec(), cells=15, sensors=SENSORS)
    assert problems == ["signals.cells: 14 signals for 15 cells"]


EXTENDED_MUX = REPO / "tests" / "vectors" / "can_extended_mux.dbc"


def test_the_mux_value_gives_the_cell_index_with_extended_multiplexing() -> None:
    db = load_dbc(EXTENDED_MUX)
    spec = CanChannelSpec(cells=mux_indexed(["CellV_a", "CellV_b", "CellV_c"], CELLS))
    mapping, problems = resolve_mapping(db, spec, cells=CELLS, sensors=0)
    assert problems == []
    assert mapping is not None
    names = [c.name for c in mapping.channels]
    values = [math.nan] * len(names)
    for n in range(1, CELLS + 1):
        values[names.index(f"cell{n}_v")] = 3.5 + n / 100
    assembler = CanFrameAssembler(mapping)
    send_all(mapping, assembler, values, 0.0)
    got, quality = record(mapping, assembler, 0.01)
    assert [round(got[f"cell{n}_v"], 3) for n in range(1, CELLS + 1)] == [round(3.5 + n / 100, 3) for n in range(1, 15)]
    assert {quality[f"cell{n}_v"] for n in range(1, CELLS + 1)} == {int(Quality.GOOD)}


def test_a_signal_sent_in_several_mux_values_must_be_mapped_by_mux() -> None:
    db = load_dbc(EXTENDED_MUX)
    by_name = CanChannelSpec(cells=("CellV_a",) * CELLS)
    _, problems = resolve_mapping(db, by_name, cells=CELLS, sensors=0)
    assert problems and "sends in mux values 0-4: the mux value says which cell it is" in problems[0]
    too_many = CanChannelSpec(cells=mux_indexed(["CellV_a", "CellV_b", "CellV_c"], CELLS, first_mux=1))
    _, problems = resolve_mapping(db, too_many, cells=CELLS, sensors=0)
    assert problems == [
        "signals: cell13_v maps signal 'CellV_a' in mux value 5, but the DBC sends it in mux values 0-4;"
        " check first_mux and the number of cells",
        "signals: cell14_v maps signal 'CellV_b' in mux value 5, but the DBC sends it in mux values 0-4;"
        " check first_mux and the number of cells",
    ]
