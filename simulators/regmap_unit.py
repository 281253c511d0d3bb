"""Serve any simulated device over Modbus through its register map.

The device offers ``read(name)`` and ``write(name, value)`` in engineering units (+ = charge);
this unit translates table/address requests into those calls with the same pure register-map
code the driver decodes with, so the simulator speaks exactly the bytes the driver expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from drivers.modbus.regmap import BIT_TABLES, Register, RegisterMap, decode_value, encode_raw, encode_string
from simulators.modbus_server import IllegalAddress, IllegalValue


class NamedDevice(Protocol):
    def read(self, name: str) -> float | int | str: ...

    def write(self, name: str, value: float) -> None: ...


class RegmapUnit:
    """A ``ModbusUnit`` backed by a device with named registers."""

    def __init__(self, device: NamedDevice, regmap: RegisterMap) -> None:
        self.device = device
        self.regmap = regmap
        # address -> (register, word offset within it), per table
        self._cells: dict[str, dict[int, tuple[Register, int]]] = {
            t: {} for t in ("holding", "input", "coil", "discrete")
        }
        self._span: dict[str, tuple[int, int]] = {}
        for reg in regmap.registers:
            for k in range(reg.words):
                self._cells[reg.table][reg.address + k] = (reg, k)
        for table, cells in self._cells.items():
            if cells:
                self._span[table] = (min(cells), max(cells))

    def _check_span(self, table: str, address: int, count: int) -> None:
        span = self._span.get(table)
        if span is None or address < span[0] or address + count - 1 > span[1]:
            raise IllegalAddress(f"{table} {address}..{address + count - 1} is outside the register map")

    def read(self, table: str, address: int, count: int) -> list[int] | list[bool]:
        self._check_span(table, address, count)
        cells = self._cells[table]
        if table in BIT_TABLES:
            out_bits: list[bool] = []
            for a in range(address, address + count):
                hit = cells.get(a)
                out_bits.append(bool(self.device.read(hit[0].name)) if hit else False)
            return out_bits
        words: list[int] = []
        cache: dict[str, list[int]] = {}
        for a in range(address, address + count):
            hit = cells.get(a)
            if hit is None:
                words.append(0)  # holes inside the map read as 0 so coalesced block reads work
                continue
            reg, k = hit
            reg_words = cache.get(reg.name)
            if reg_words is None:
                value = self.device.read(reg.name)
                if reg.type == "string":
                    reg_words = encode_string(reg, str(value))
                else:
                    encoded = encode_raw(reg, float(value))
                    assert isinstance(encoded, list)
                    reg_words = encoded
                cache[reg.name] = reg_words
            words.append(reg_words[k])
        return words

    def write(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        self._check_span(table, address, len(values))
        cells = self._cells[table]
        if table in BIT_TABLES:
            for a, v in zip(range(address, address + len(values)), values, strict=True):
                hit = cells.get(a)
                if hit is None or not hit[0].writable:
                    raise IllegalAddress(f"coil {a} is not writable")
                self._write(hit[0], 1.0 if v else 0.0)
            return
        a = address
        end = address + len(values)
        while a < end:
            hit = cells.get(a)
            if hit is None or hit[1] != 0 or not hit[0].writable:
                raise IllegalAddress(f"{table} {a} is not the start of a writable register")
            reg = hit[0]
            if a + reg.words > end:
                raise IllegalValue(f"write to {reg.name} covers {end - a} of its {reg.words} registers")
            chunk = list(values[a - address : a - address + reg.words])

            self._write(reg, decode_value(reg, chunk))
            a += reg.words

    def _write(self, reg: Register, value: float) -> None:
        try:
            self.device.write(reg.name, value)
        except ValueError as exc:
            raise IllegalValue(str(exc)) from exc
