"""Candidate decodings of raw register words, for a technician mapping an unknown device. Pure.

A new device's manual rarely says more than "float, address 0": every word is shown as u16 and
i16, and every pair of adjacent words as u32, i32 and f32 in both word orders (big: the first
word holds the high half, as Modbus usually sends; little: the low half first, as many PLCs do).
The decoding is the register map's own (``regmap.decode_value``), so what a technician reads here
is exactly what a register map with that type and order will record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.regmap import WORDS, Register, decode_value

SINGLE_WORD_TYPES = ("u16", "i16")
PAIR_TYPES = ("u32", "i32", "f32")
WORD_ORDERS = ("big", "little")


def candidate_register(type_: str, word_order: str = "big", *, address: int = 0) -> Register:
    """A bare register of ``type_`` (no scale, offset or sign) to decode words as."""
    return Register(
        name=f"{type_}_{word_order}",
        table="holding",
        address=address,
        type=type_,
        words=WORDS[type_],
        word_order=word_order,
        byte_order="big",
        scale=1.0,
        offset=0.0,
        unit="",
        negate=False,
        writable=False,
        range=None,
        bits=(),
        poll=True,
        invalid=frozenset(),
    )


_SINGLE = {t: candidate_register(t) for t in SINGLE_WORD_TYPES}
_PAIRS = {(t, order): candidate_register(t, order) for t in PAIR_TYPES for order in WORD_ORDERS}


@dataclass(frozen=True, slots=True)
class WordRow:
    """One register address: its raw word, and what it (and the word after it) could mean."""

    address: int
    word: int | None  # None: the device would not give this address
    single: dict[str, int]  # u16, i16
    pair: dict[str, float | int]  # "u32 big", "f32 little", ...; empty for the last word or a gap

    @property
    def hex(self) -> str:
        return "----" if self.word is None else f"{self.word:04x}"


def pair_columns() -> list[str]:
    return [f"{t} {order}" for t in PAIR_TYPES for order in WORD_ORDERS]


def decode_candidates(start: int, words: Sequence[int | None]) -> list[WordRow]:
    """Rows for ``words`` read from ``start`` (None for addresses the device refused)."""
    rows = []
    for k, word in enumerate(words):
        single: dict[str, int] = {}
        pair: dict[str, float | int] = {}
        if word is not None:
            single = {t: int(decode_value(reg, [word])) for t, reg in _SINGLE.items()}
            following = words[k + 1] if k + 1 < len(words) else None
            if following is not None:
                for (t, order), reg in _PAIRS.items():
                    value = decode_value(reg, [word, following])
                    pair[f"{t} {order}"] = value if t == "f32" else int(value)
        rows.append(WordRow(start + k, word, single, pair))
    return rows


def format_float(value: float) -> str:
    """A float candidate as a technician would recognise it; absurd magnitudes are not a reading."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and not 1e-6 <= abs(value) < 1e9:
        return "~"  # denormal or huge: the pair is not a float in this order
    return f"{value:.7g}"
