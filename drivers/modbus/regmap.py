"""Register maps: which values a Modbus device holds, where, and how to decode them. Pure.

A register map is a data file (``configs/regmaps/*.yaml``) validated here. From it we derive
the device's channels, a read plan (blocks that coalesce nearby registers without ever splitting
one value across two requests) and fast decoders from raw 16-bit words to engineering values.

Engineering value = raw * scale + offset, then negated when the device counts current
discharge-positive (``sign: discharge_positive``), so every value past this module is + = charge.
``range`` (allowed setpoint range) is in those normalised engineering units.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daq.channels import canonical_unit
from daq.config.errors import format_validation_error
from daq.config.yamlfile import read_yaml_mapping
from daq.errors import ConfigError, SetpointRangeError
from daq.records import Channel, Quality
from daq.resources import locate

Table = Literal["holding", "input", "coil", "discrete"]
ValueType = Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bit", "string"]
Order = Literal["big", "little"]

WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "f32": 2, "f64": 4, "bit": 1}
STRUCT_CHAR = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q", "f32": "f", "f64": "d"}
INT_BOUNDS = {
    "u16": (0, 2**16 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
BIT_TABLES = ("coil", "discrete")
WORD_TABLES = ("holding", "input")


class RegisterSpec(BaseModel):
    """One register (or group of registers holding one value) as written in a regmap file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: ValueType
    length: Annotated[int | None, Field(ge=1, le=125)] = None  # registers, for strings
    word_order: Order | None = None
    byte_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    sign: Literal["charge_positive", "discharge_positive"] | None = None
    writable: bool = False
    range: tuple[float, float] | None = None
    bits: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], Annotated[int, Field(ge=0, le=63)]] | None = None
    poll: bool = True
    invalid: list[int] = Field(default_factory=list)  # raw sentinel values, e.g. an open thermistor

    @field_validator("unit")
    @classmethod
    def _one_spelling(cls, unit: str) -> str:
        return canonical_unit(unit)  # a degree-sign C or plain "C" in a vendor map: degC in every table and export

    @model_validator(mode="after")
    def _consistent(self) -> RegisterSpec:
        if self.table in BIT_TABLES and self.type != "bit":
            raise ValueError(f"a {self.table} holds single bits: use type: bit (got {self.type})")
        if self.type == "bit" and self.table not in BIT_TABLES:
            raise ValueError("type bit is for coil or discrete tables; use bits: {...} for a bit field")
        if self.type == "string":
            if self.length is None:
                raise ValueError("a string needs length: (number of 16-bit registers)")
            if self.writable:
                raise ValueError("strings cannot be writable")
        elif self.length is not None:
            raise ValueError("length: applies to strings only")
        if self.bits is not None:
            if self.type not in ("u16", "u32", "u64", "i16", "i32", "i64"):
                raise ValueError("bits: needs an integer register type")
            width = WORDS[self.type] * 16
            for bit_name, index in self.bits.items():
                if index >= width:
                    raise ValueError(f"bit {bit_name}={index} is outside the {width}-bit {self.type}")
        if self.sign is not None and self.type in ("bit", "string"):
            raise ValueError("sign: applies to numeric values only")
        if self.range is not None:
            lo, hi = self.range
            if lo > hi:
                raise ValueError(f"range [{lo}, {hi}] has min above max")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} registers are read-only; writable: true needs holding or coil")
        if self.writable and self.type not in ("bit",) and self.range is None:
            raise ValueError("a writable numeric register needs range: [min, max] (setpoints are range-checked)")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def words(self) -> int:
        if self.type == "string":
            assert self.length is not None
            return self.length
        return WORDS[self.type]


class RegisterMapFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    word_order: Order = "big"
    byte_order: Order = "big"
    registers: list[RegisterSpec]

    @model_validator(mode="after")
    def _no_overlap(self) -> RegisterMapFile:
        names: set[str] = set()
        for reg in self.registers:
            for n in [reg.name, *(reg.bits or {})]:
                if n in names:
                    raise ValueError(f"channel name {n!r} is defined twice")
                names.add(n)
        by_table: dict[str, list[RegisterSpec]] = {}
        for reg in self.registers:
            if reg.address + reg.words > 65536:
                raise ValueError(f"register {reg.name}: address {reg.address} + {reg.words} words runs past 65535")
            by_table.setdefault(reg.table, []).append(reg)
        for table, regs in by_table.items():
            regs = sorted(regs, key=lambda r: r.address)
            for a, b in itertools.pairwise(regs):
                if b.address < a.address + a.words:
                    raise ValueError(
                        f"{table} registers {a.name} ({a.address}..{a.address + a.words - 1}) and "
                        f"{b.name} ({b.address}) overlap"
                    )
        return self


# ---------------------------------------------------------------------------------------------
# Compiled, hot-path form


@dataclass(frozen=True, slots=True)
class Register:
    """A register ready for decoding and encoding."""

    name: str
    table: str
    address: int
    type: str
    words: int
    word_order: str
    byte_order: str
    scale: float
    offset: float
    unit: str
    negate: bool
    writable: bool
    range: tuple[float, float] | None
    bits: tuple[tuple[str, int], ...]
    poll: bool
    invalid: frozenset[int]

    def to_engineering(self, raw: float) -> float:
        value = raw * self.scale + self.offset
        return 0.0 - value if self.negate else value

    def encode(self, value: float) -> list[int] | bool:
        """Engineering value -> raw words (or a coil state). Refuses values outside ``range``."""
        if isinstance(value, bool) or self.type == "bit":
            if self.range is not None or value in (0, 1, True, False):
                return bool(value)
            raise SetpointRangeError(f"{self.name}: a bit takes 0 or 1, not {value}; nothing was sent")
        if not self.writable:
            raise SetpointRangeError(f"{self.name} is not writable in the register map; nothing was sent")
        if not math.isfinite(value):
            raise SetpointRangeError(f"{self.name}={value} is not a finite number; nothing was sent")
        if self.range is not None:
            lo, hi = self.range
            if not lo <= value <= hi:
                unit = f" {self.unit}" if self.unit else ""
                raise SetpointRangeError(
                    f"{self.name}={value:g}{unit} is outside the allowed range [{lo:g}, {hi:g}]{unit} "
                    f"({self.table} register {self.address}); nothing was sent"
                )
        return encode_raw(self, value)


def encode_raw(reg: Register, value: float) -> list[int] | bool:
    """Engineering value -> words, with no range check (simulators fill their images with it)."""
    if reg.type == "bit":
        return bool(value)
    device_value = -value if reg.negate else value
    # Keep integers exact (64-bit counters do not survive a round trip through float division).
    raw: float = (
        device_value
        if isinstance(device_value, int) and reg.scale == 1 and reg.offset == 0
        else (device_value - reg.offset) / reg.scale
    )
    if reg.type in ("f32", "f64"):
        data = struct.pack(">" + STRUCT_CHAR[reg.type], raw)
    else:
        lo, hi = INT_BOUNDS[reg.type]
        iraw = min(max(round(raw), lo), hi)
        data = struct.pack(">" + STRUCT_CHAR[reg.type], iraw)
    return _bytes_to_words(reg, data)


def encode_string(reg: Register, text: str) -> list[int]:
    data = text.encode("ascii", "replace")[: reg.words * 2].ljust(reg.words * 2, b"\0")
    return list(struct.unpack(f">{reg.words}H", data))


def decode_string(words: Sequence[int]) -> str:
    return struct.pack(f">{len(words)}H", *words).rstrip(b"\0 ").decode("ascii", "replace")


def _bytes_to_words(reg: Register, data: bytes) -> list[int]:
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if reg.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if reg.word_order == "little":
        words.reverse()
    return words


def _words_to_raw(reg: Register, words: Sequence[int]) -> float:
    ws = list(words)
    if reg.word_order == "little":
        ws.reverse()
    if reg.byte_order == "little":
        ws = [((w & 0xFF) << 8) | (w >> 8) for w in ws]
    return struct.unpack(">" + STRUCT_CHAR[reg.type], struct.pack(f">{len(ws)}H", *ws))[0]


def decode_value(reg: Register, words: Sequence[int]) -> float:
    """Raw words of one register -> engineering value (for tests and one-off reads)."""
    return reg.to_engineering(_words_to_raw(reg, words))


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: ``count`` registers (or bits) from ``start`` in ``table``."""

    table: str
    start: int
    count: int
    registers: tuple[Register, ...]


class RegisterMap:
    """A validated register map, compiled for decoding."""

    def __init__(self, spec: RegisterMapFile, *, source: str = "") -> None:
        self.name = spec.name
        self.description = spec.description
        self.source = source
        self.registers: tuple[Register, ...] = tuple(
            Register(
                name=r.name,
                table=r.table,
                address=r.address,
                type=r.type,
                words=r.words,
                word_order=r.word_order or spec.word_order,
                byte_order=r.byte_order or spec.byte_order,
                scale=r.scale,
                offset=r.offset,
                unit=r.unit,
                negate=r.sign == "discharge_positive",
                writable=r.writable,
                range=r.range,
                bits=tuple((r.bits or {}).items()),
                poll=r.poll,
                invalid=frozenset(r.invalid),
            )
            for r in spec.registers
        )
        self.by_name = {r.name: r for r in self.registers}
        # bit-field channel -> (register holding it, bit index)
        self.bit_owner = {bit_name: (r, bit) for r in self.registers for bit_name, bit in r.bits}

    @property
    def polled(self) -> tuple[Register, ...]:
        return tuple(r for r in self.registers if r.poll and r.type != "string")

    @property
    def info_registers(self) -> tuple[Register, ...]:
        """Identification values read once at connect: strings and unpolled registers."""
        return tuple(r for r in self.registers if not r.poll or r.type == "string")


def load_regmap(path: str | Path) -> RegisterMap:
    """Read and validate a register map file (or ``builtin:NAME``, a shipped one)."""
    path = locate(path, "regmap")
    data = read_yaml_mapping(path, "register map file")
    try:
        spec = RegisterMapFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), data, model=RegisterMapFile)) from exc
    return RegisterMap(spec, source=str(path))


# ---------------------------------------------------------------------------------------------
# Planning and decoding


def plan_reads(
    registers: Sequence[Register], *, max_count: int = 100, max_gap: int = 8, max_bits: int = 2000
) -> list[ReadBlock]:
    """Coalesce registers of one table into as few requests as the limits allow.

    Registers are merged while the block stays within ``max_count`` words (``max_bits`` for coils
    and discrete inputs) and the hole between two registers is at most ``max_gap``. A value is never
    split: a register longer than the limit is an error.
    """
    blocks: list[ReadBlock] = []
    by_table: dict[str, list[Register]] = {}
    for reg in registers:
        by_table.setdefault(reg.table, []).append(reg)
    for table in ("coil", "discrete", "holding", "input"):
        regs = sorted(by_table.get(table, []), key=lambda r: r.address)
        limit = max_bits if table in BIT_TABLES else max_count
        current: list[Register] = []
        start = end = 0
        for reg in regs:
            if reg.words > limit:
                raise ConfigError(
                    f"register {reg.name} spans {reg.words} registers, more than max_registers_per_read={limit}"
                )
            reg_end = reg.address + reg.words
            if current and reg.address - end <= max_gap and reg_end - start <= limit:
                current.append(reg)
                end = max(end, reg_end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [reg], reg.address, reg_end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks


DecodeFn = Callable[[bytes | Sequence[int] | Sequence[bool], list[float], bytearray], None]


def compile_block_decoder(block: ReadBlock, first_index: int) -> DecodeFn:
    """A function that decodes one block's raw words into ``values[first_index:...]`` in place.

    Registers arrive as the response's big-endian bytes (or as a sequence of words); bits as a
    sequence of booleans. It also writes qualities (OUT_OF_RANGE for a sentinel raw value). Built
    once per block, so the per-poll cost is a single ``struct.unpack`` plus the scaling.
    """
    if block.table in BIT_TABLES:
        offsets = [(reg.address - block.start) for reg in block.registers]
        count = len(offsets)

        def decode_bits(raw: bytes | Sequence[int] | Sequence[bool], values: list[float], quality: bytearray) -> None:
            for k in range(count):
                values[first_index + k] = 1.0 if raw[offsets[k]] else 0.0

        return decode_bits

    # One struct format for the whole block: simple when every value is big-endian in both orders.
    simple = all(r.word_order == "big" and r.byte_order == "big" for r in block.registers)
    fmt = ">"
    pos = block.start
    for reg in block.registers:
        if reg.address > pos:
            fmt += f"{2 * (reg.address - pos)}x"
        fmt += STRUCT_CHAR[reg.type] if simple else f"{2 * reg.words}s"
        pos = reg.address + reg.words
    if pos < block.start + block.count:
        fmt += f"{2 * (block.start + block.count - pos)}x"
    unpack = struct.Struct(fmt).unpack
    words_fmt = struct.Struct(f">{block.count}H").pack
    regs = block.registers
    # Output slot of each register: its value, then its bits.
    slots: list[int] = []
    idx = first_index
    for reg in regs:
        slots.append(idx)
        idx += 1 + len(reg.bits)
    end_index = idx
    # The sign flip folds into scale and offset: -(r*s + o) == r*(-s) + (0.0 - o), exactly, and
    # ``0.0 - o`` keeps a zero reading +0.0 as before. One list comprehension then scales the block.
    scales = [-r.scale if r.negate else r.scale for r in regs]
    offsets = [0.0 - r.offset if r.negate else r.offset + 0.0 for r in regs]
    contiguous = end_index - first_index == len(regs)  # no bit fields: values land side by side
    reordered = [] if simple else list(enumerate(regs))  # word/byte order other than big/big
    sentinels = [(j, slots[j], r.invalid) for j, r in enumerate(regs) if r.invalid]
    bit_fields = [(slots[j], j, r.bits) for j, r in enumerate(regs) if r.bits]
    bad = int(Quality.OUT_OF_RANGE)
    nan = math.nan

    def decode_words(raw: bytes | Sequence[int] | Sequence[bool], values: list[float], quality: bytearray) -> None:
        fields = unpack(raw if type(raw) is bytes else words_fmt(*raw))
        if reordered:
            fields = tuple(
                _words_to_raw(reg, struct.unpack(f">{reg.words}H", f))
                for (_, reg), f in zip(reordered, fields, strict=True)
            )
        scaled = [f * s + o for f, s, o in zip(fields, scales, offsets, strict=True)]
        if contiguous:
            values[first_index:end_index] = scaled
        else:
            for i, v in zip(slots, scaled, strict=True):
                values[i] = v
        for j, i, invalid in sentinels:
            if fields[j] in invalid:
                values[i] = nan
                quality[i] = bad
        for i, j, bits in bit_fields:
            word = int(fields[j])
            for k, (_, bit) in enumerate(bits, start=1):
                values[i + k] = float((word >> bit) & 1)

    return decode_words


def plan_channels(blocks: Sequence[ReadBlock]) -> tuple[Channel, ...]:
    """Channels in record order (the order the block decoders write): each register, then its bits."""
    out: list[Channel] = []
    for block in blocks:
        for reg in block.registers:
            out.append(Channel(reg.name, reg.unit, reg.writable))
            out.extend(Channel(bit_name, "") for bit_name, _ in reg.bits)
    return tuple(out)
