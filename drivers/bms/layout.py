"""Where each part of a BMS reading goes in a ``bms_channels(cells, sensors)`` record. Pure.

A BMS answers a poll in several requests (JBD: basic info, cell voltages; Daly: one command per
quantity). When one of them fails, only its channels get a bad quality; the rest of the record
is still good data. ``BmsLayout`` knows the slot ranges and writes each part with the same
conventions as ``drivers.bms.model.reading_to_channels``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from daq import channels as std
from daq.records import Quality
from drivers.bms.model import (
    BALANCE_MASK,
    CHARGE_FET,
    DISCHARGE_FET,
    MAX_BALANCE_MASK_CELLS,
    AlarmLevel,
    AlarmName,
    alarm_channel,
    bms_channels,
)

NAN = math.nan
_GOOD = int(Quality.GOOD)
_OUT_OF_RANGE = int(Quality.OUT_OF_RANGE)


class BmsLayout:
    """Slot ranges of the channel groups of one BMS schema."""

    __slots__ = ("alarm_slots", "alarms", "balance", "cell_count", "cells", "fets", "pack", "sensor_count", "temps")

    def __init__(self, cells: int, sensors: int) -> None:
        index = {c.name: i for i, c in enumerate(bms_channels(cells, sensors))}
        self.cell_count = cells
        self.sensor_count = sensors
        self.pack = range(index[std.VOLTAGE], index[std.SOC] + 1)
        first_cell = index[std.SOC] + 1
        self.cells = range(first_cell, first_cell + cells)
        self.temps = range(self.cells.stop, self.cells.stop + sensors)
        self.balance = range(index[BALANCE_MASK], index[BALANCE_MASK] + 1)
        self.fets = range(index[CHARGE_FET], index[DISCHARGE_FET] + 1)
        self.alarms = range(index[std.ALARM_LEVEL], len(index))  # alarm_level, then one per AlarmName
        self.alarm_slots = tuple((name, index[alarm_channel(name)]) for name in AlarmName)

    @staticmethod
    def mark(values: list[float], quality: bytearray, slots: range, code: Quality) -> None:
        """No value for ``slots``: NaN with quality ``code``."""
        q = int(code)
        for i in slots:
            values[i] = NAN
            quality[i] = q

    def put_pack(
        self, values: list[float], quality: bytearray, *, voltage_v: float, current_a: float, soc_pct: float
    ) -> None:
        i = self.pack.start
        values[i : i + 3] = [voltage_v, current_a, soc_pct]
        quality[i : i + 3] = bytes(3)

    def _put_measurements(self, values: list[float], quality: bytearray, slots: range, got: Sequence[float]) -> None:
        # A slot the BMS did not fill, or filled with its "no reading" sentinel, is OUT_OF_RANGE.
        for k, i in enumerate(slots):
            v = got[k] if k < len(got) else NAN
            values[i] = v
            quality[i] = _OUT_OF_RANGE if math.isnan(v) else _GOOD

    def put_cells(self, values: list[float], quality: bytearray, cell_voltages_v: Sequence[float]) -> None:
        self._put_measurements(values, quality, self.cells, cell_voltages_v)

    def put_temperatures(self, values: list[float], quality: bytearray, temperatures_c: Sequence[float]) -> None:
        self._put_measurements(values, quality, self.temps, temperatures_c)

    def put_balance(self, values: list[float], quality: bytearray, balancing: Sequence[bool]) -> None:
        mask = 0
        for k, on in enumerate(balancing[:MAX_BALANCE_MASK_CELLS]):
            if on:
                mask |= 1 << k
        values[self.balance.start] = float(mask)
        quality[self.balance.start] = _GOOD

    def put_fets(self, values: list[float], quality: bytearray, *, charge: bool, discharge: bool) -> None:
        i = self.fets.start
        values[i] = 1.0 if charge else 0.0
        values[i + 1] = 1.0 if discharge else 0.0
        quality[i] = quality[i + 1] = _GOOD

    def put_alarms(self, values: list[float], quality: bytearray, alarms: Mapping[AlarmName, AlarmLevel]) -> None:
        """alarm_level = the worst reported alarm; an alarm the protocol cannot report is NaN (GOOD)."""
        values[self.alarms.start] = float(max(alarms.values(), default=AlarmLevel.OK))
        quality[self.alarms.start] = _GOOD
        for name, i in self.alarm_slots:
            level = alarms.get(name)
            values[i] = NAN if level is None else float(level)
            quality[i] = _GOOD
