"""The vendor-neutral BMS reading and its record channels."""

from __future__ import annotations

import math

import pytest

from daq.records import DeviceSchema, Quality
from drivers.bms.model import (
    ALARM_CHANNELS,
    AlarmLevel,
    AlarmName,
    BmsReading,
    bms_channels,
    reading_quality,
    reading_to_channels,
)


def make_reading(**overrides) -> BmsReading:
    fields = dict(
        voltage_v=13.2,
        current_a=-5.5,
        soc_pct=81.0,
        cell_voltages_v=(3.30, 3.31, 3.29, 3.30),
        temperatures_c=(24.5, math.nan),
        balancing=(False, True, False, True),
        charge_fet=True,
        discharge_fet=False,
        cycles=12,
        remaining_ah=80.5,
        nominal_ah=100.0,
        alarms={AlarmName.CELL_OVERVOLTAGE: AlarmLevel.WARNING, AlarmName.FUSE: AlarmLevel.OK},
    )
    fields.update(overrides)
    return BmsReading(**fields)


def test_alarm_names_are_the_domain_set_and_name_their_channels():
    assert [a.value for a in AlarmName] == [
        "cell_overvoltage",
        "cell_undervoltage",
        "pack_overvoltage",
        "pack_undervoltage",
        "low_soc",
        "charge_overcurrent",
        "discharge_overcurrent",
        "short_circuit",
        "cell_imbalance",
        "charge_overtemperature",
        "charge_undertemperature",
        "discharge_overtemperature",
        "discharge_undertemperature",
        "mos_overtemperature",
        "internal_failure",
        "fuse",
        "software_lock",
    ]
    assert ALARM_CHANNELS[0] == "alarm_cell_overvoltage"
    assert len(ALARM_CHANNELS) == len(AlarmName)


def test_alarm_levels_order_ok_warning_alarm():
    assert (AlarmLevel.OK, AlarmLevel.WARNING, AlarmLevel.ALARM) == (0, 1, 2)


def test_alarm_level_is_the_worst_reported_and_ok_when_none():
    assert make_reading().alarm_level is AlarmLevel.WARNING
    both = {AlarmName.LOW_SOC: AlarmLevel.WARNING, AlarmName.SHORT_CIRCUIT: AlarmLevel.ALARM}
    assert make_reading(alarms=both).alarm_level is AlarmLevel.ALARM
    assert make_reading(alarms={}).alarm_level is AlarmLevel.OK


def test_balance_mask_bit0_is_cell1_and_stops_at_32_cells():
    assert make_reading().balance_mask == 0b1010
    many = (True,) * 40
    assert make_reading(balancing=many).balance_mask == 0xFFFF_FFFF


def test_open_sensors_are_1_based_numbers_of_nan_temperatures():
    assert make_reading().open_sensors == (2,)


def test_channels_order_names_and_units():
    chans = bms_channels(4, 2)
    names = [c.name for c in chans]
    assert names[:3] == ["voltage_v", "current_a", "soc_pct"]
    assert names[3:7] == ["cell1_v", "cell2_v", "cell3_v", "cell4_v"]
    assert names[7:9] == ["temp1_c", "temp2_c"]
    assert names[9:13] == ["balance_mask", "charge_fet", "discharge_fet", "alarm_level"]
    assert names[13:] == list(ALARM_CHANNELS)
    units = {c.name: c.unit for c in chans}
    assert (units["voltage_v"], units["current_a"], units["cell1_v"], units["temp2_c"]) == ("V", "A", "V", "degC")
    DeviceSchema("bms-1", "bms", chans)  # names are unique: the schema index accepts them


def test_channels_reject_negative_counts():
    with pytest.raises(ValueError, match="cells"):
        bms_channels(-1, 0)


def test_reading_to_channels_matches_schema_positions():
    reading = make_reading()
    schema = DeviceSchema("bms-1", "bms", bms_channels(4, 2))
    values = reading_to_channels(reading, cells=4, sensors=2)
    assert len(values) == len(schema)
    v = dict(zip(schema.names, values, strict=True))
    assert v["voltage_v"] == 13.2
    assert v["current_a"] == -5.5
    assert v["cell3_v"] == 3.29
    assert v["temp1_c"] == 24.5
    assert math.isnan(v["temp2_c"])
    assert v["balance_mask"] == 10.0
    assert (v["charge_fet"], v["discharge_fet"]) == (1.0, 0.0)
    assert v["alarm_level"] == 1.0
    assert v["alarm_cell_overvoltage"] == 1.0
    assert v["alarm_fuse"] == 0.0
    # an alarm this BMS does not report is NaN, not a reassuring 0
    assert math.isnan(v["alarm_short_circuit"])


def test_reading_with_fewer_cells_is_nan_padded_and_extra_ones_dropped():
    reading = make_reading()
    padded = reading_to_channels(reading, cells=6, sensors=3)
    assert padded[3:9] == [3.30, 3.31, 3.29, 3.30, *padded[7:9]]
    assert all(math.isnan(x) for x in padded[7:9])
    assert math.isnan(padded[11])  # temp3_c
    cut = reading_to_channels(reading, cells=2, sensors=1)
    assert cut[3:6] == [3.30, 3.31, 24.5]
    assert len(cut) == len(bms_channels(2, 1))


def test_quality_flags_missing_cells_and_open_sensors_only():
    reading = make_reading()
    schema = DeviceSchema("bms-1", "bms", bms_channels(5, 2))
    quality = reading_quality(reading, cells=5, sensors=2)
    assert len(quality) == len(schema)
    bad = {schema.names[i] for i, q in enumerate(quality) if q != Quality.GOOD}
    assert bad == {"cell5_v", "temp2_c"}
    assert quality[schema.index["cell5_v"]] == Quality.OUT_OF_RANGE
