"""Register maps: decoding of every type and word/byte order, planning, range refusal, file errors."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from daq.errors import ConfigError, SetpointRangeError
from daq.records import Quality
from drivers.modbus.regmap import (
    RegisterMap,
    RegisterMapFile,
    compile_block_decoder,
    decode_value,
    encode_raw,
    load_regmap,
    plan_channels,
    plan_reads,
)

REPO = Path(__file__).resolve().parents[2]


def regmap(*regs: dict, **top: object) -> RegisterMap:
    return RegisterMap(RegisterMapFile.model_validate({"name": "t", "registers": list(regs), **top}))


def words_of(fmt: str, value: float, *, word_order: str, byte_order: str) -> list[int]:
    """Build the words a device would hold, independently of the code under test."""
    data = struct.pack(">" + fmt, value)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if word_order == "little":
        words.reverse()
    return words


CASES = [
    ("u16", "H", 65000),
    ("i16", "h", -1234),
    ("u32", "I", 4_000_000_000),
    ("i32", "i", -2_000_000_000),
    ("u64", "Q", 2**63 + 12345),
    ("i64", "q", -(2**62) - 7),
    ("f32", "f", -12.5),
    ("f64", "d", 3.141592653589793),
]


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize(("vtype", "fmt", "value"), CASES)
def test_decode_every_type_and_order(vtype: str, fmt: str, value: float, word_order: str, byte_order: str) -> None:
    rm = regmap(
        {
            "name": "x",
            "table": "holding",
            "address": 10,
            "type": vtype,
            "word_order": word_order,
            "byte_order": byte_order,
        }
    )
    reg = rm.by_name["x"]
    words = words_of(fmt, value, word_order=word_order, byte_order=byte_order)
    assert decode_value(reg, words) == pytest.approx(value)
    # The block decoder (the hot path) must agree with the one-off decoder.
    (block,) = plan_reads(rm.polled)
    decode = compile_block_decoder(block, 0)
    values, quality = [math.nan], bytearray(1)
    decode(words, values, quality)
    assert values[0] == pytest.approx(value)
    # And encoding is the exact inverse for exact values.
    assert encode_raw(reg, value) == words


def test_scale_offset_and_discharge_positive_sign() -> None:
    rm = regmap(
        {
            "name": "current_a",
            "table": "input",
            "address": 0,
            "type": "i32",
            "scale": 0.001,
            "offset": 0.5,
            "sign": "discharge_positive",
            "unit": "A",
        }
    )
    reg = rm.by_name["current_a"]
    # device says +10.0 A discharge (raw 9500 with offset 0.5) -> we report -10.0 A (discharging)
    assert decode_value(reg, [0, 9500]) == pytest.approx(-10.0)


def test_bit_field_channels_follow_their_register() -> None:
    rm = regmap({"name": "state", "table": "input", "address": 3, "type": "u16", "bits": {"on": 0, "alarm": 15}})
    blocks = plan_reads(rm.polled)
    assert [c.name for c in plan_channels(blocks)] == ["state", "on", "alarm"]
    values, quality = [math.nan] * 3, bytearray(3)
    compile_block_decoder(blocks[0], 0)([0x8001], values, quality)
    assert values == [0x8001, 1.0, 1.0]


def test_invalid_sentinel_marks_out_of_range() -> None:
    rm = regmap(
        {"name": "t_c", "table": "input", "address": 0, "type": "i16", "scale": 0.1, "invalid": [-32768]},
        {"name": "v", "table": "input", "address": 1, "type": "u16"},
    )
    (block,) = plan_reads(rm.polled)
    values, quality = [0.0, 0.0], bytearray(2)
    compile_block_decoder(block, 0)([0x8000, 7], values, quality)
    assert math.isnan(values[0]) and quality[0] == Quality.OUT_OF_RANGE
    assert values[1] == 7 and quality[1] == Quality.GOOD


def test_planning_coalesces_within_limits_and_never_splits_a_value() -> None:
    rm = regmap(
        {"name": "a", "table": "holding", "address": 0, "type": "u16"},
        {"name": "b", "table": "holding", "address": 2, "type": "f32"},  # gap 1 -> merged
        {"name": "c", "table": "holding", "address": 20, "type": "u16"},  # gap 16 > 8 -> new block
        {"name": "d", "table": "holding", "address": 21, "type": "f64"},  # 21..24
        {"name": "e", "table": "input", "address": 0, "type": "u16"},  # other table, other block
        {"name": "f", "table": "coil", "address": 5, "type": "bit"},
    )
    blocks = plan_reads(rm.polled, max_count=5, max_gap=8)
    spans = [(b.table, b.start, b.count) for b in blocks]
    assert spans == [("coil", 5, 1), ("holding", 0, 4), ("holding", 20, 5), ("input", 0, 1)]
    # With max_count 4 the f64 at 21 cannot join c at 20 (would need 5 words): no split, new block.
    blocks = plan_reads(rm.polled, max_count=4, max_gap=8)
    assert ("holding", 21, 4) in [(b.table, b.start, b.count) for b in blocks]
    for b in blocks:
        for r in b.registers:
            assert b.start <= r.address and r.address + r.words <= b.start + b.count


def test_value_longer_than_max_count_is_a_config_error() -> None:
    rm = regmap({"name": "d", "table": "holding", "address": 0, "type": "f64"})
    with pytest.raises(ConfigError, match="spans 4 registers"):
        plan_reads(rm.polled, max_count=3)


def test_write_outside_range_is_refused_before_sending() -> None:
    rm = regmap(
        {
            "name": "i_set",
            "table": "holding",
            "address": 0,
            "type": "i32",
            "scale": 0.001,
            "writable": True,
            "range": [-300, 300],
            "unit": "A",
        }
    )
    reg = rm.by_name["i_set"]
    assert reg.encode(-12.5) == encode_raw(reg, -12.5)
    with pytest.raises(SetpointRangeError, match=r"i_set=301 A is outside the allowed range \[-300, 300\]"):
        reg.encode(301)
    with pytest.raises(SetpointRangeError, match="not a finite number"):
        reg.encode(float("nan"))


@pytest.mark.parametrize(
    ("regs", "message"),
    [
        (
            [
                {"name": "a", "table": "holding", "address": 0, "type": "u32"},
                {"name": "b", "table": "holding", "address": 1, "type": "u16"},
            ],
            "overlap",
        ),
        ([{"name": "a", "table": "holding", "address": 65535, "type": "u32"}], "runs past 65535"),
        ([{"name": "a", "table": "holding", "address": 0, "type": "u16", "writable": True}], "needs range"),
        (
            [{"name": "a", "table": "input", "address": 0, "type": "u16", "writable": True, "range": [0, 1]}],
            "read-only",
        ),
        ([{"name": "a", "table": "coil", "address": 0, "type": "u16"}], "use type: bit"),
        ([{"name": "a", "table": "holding", "address": 0, "type": "u16", "bits": {"x": 16}}], "outside the 16-bit"),
        ([{"name": "a", "table": "holding", "address": 0, "type": "u16", "colour": "red"}], "Extra inputs"),
    ],
)
def test_bad_register_maps_are_rejected(regs: list[dict], message: str) -> None:
    with pytest.raises(Exception, match=message):
        regmap(*regs)


def test_regmap_file_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nregisters:\n  - {name: v, table: holdin, address: 0, type: u16}\n")
    with pytest.raises(ConfigError) as err:
        load_regmap(bad)
    (line,) = err.value.problems
    assert str(bad) in line and "registers[0](v).table" in line and "holding" in line
    with pytest.raises(ConfigError, match="not found"):
        load_regmap(tmp_path / "missing.yaml")


def test_shipped_regmaps_load() -> None:
    for path in sorted((REPO / "configs" / "regmaps").glob("*.yaml")):
        rm = load_regmap(path)
        assert rm.polled, path
