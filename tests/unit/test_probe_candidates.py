"""Candidate decodings for daq probe: the register map's own decoding, both word orders."""

from __future__ import annotations

import struct

from drivers.modbus.candidates import decode_candidates, format_float, pair_columns


def words_of(fmt: str, value: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">" + fmt, value)))


def test_a_big_endian_float_shows_in_the_f32_big_column_and_a_swapped_one_in_little() -> None:
    hi, lo = words_of("f", 53.25)
    rows = decode_candidates(0, [hi, lo, lo, hi])
    assert rows[0].pair["f32 big"] == 53.25
    assert rows[2].pair["f32 little"] == 53.25
    assert rows[0].pair["f32 little"] != 53.25


def test_integers_in_both_word_orders_and_signs() -> None:
    hi, lo = words_of("i", -123456)
    (row, last) = decode_candidates(100, [hi, lo])
    assert row.address == 100 and row.pair["i32 big"] == -123456 and row.pair["u32 big"] == 2**32 - 123456
    assert row.single == {"u16": hi, "i16": hi - 0x10000}
    assert last.pair == {}  # nothing follows the last word


def test_a_refused_address_has_no_decodings_and_breaks_its_neighbours_pair() -> None:
    rows = decode_candidates(0, [1, None, 2])
    assert rows[0].pair == {} and rows[1].word is None and rows[1].hex == "----" and rows[1].single == {}
    assert set(pair_columns()) == {f"{t} {o}" for t in ("u32", "i32", "f32") for o in ("big", "little")}


def test_absurd_floats_are_not_shown_as_readings() -> None:
    assert format_float(3.2e-41) == "~"
    assert format_float(4.1e12) == "~"
    assert format_float(0.0) == "0"
    assert format_float(53.14431381) == "53.14431"
    assert format_float(float("nan")) == "nan"
