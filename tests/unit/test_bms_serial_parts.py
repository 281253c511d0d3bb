"""Pure parts of the serial BMS path: record layout, protocol sniffing, the simulated line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq.records import Quality
from drivers.bms.daly import codec as daly
from drivers.bms.jbd import codec as jbd
from drivers.bms.layout import BmsLayout
from drivers.bms.model import AlarmLevel, AlarmName, BmsReading, reading_quality, reading_to_channels
from drivers.bms.sniff import DALY, JBD, MODBUS_RTU, describe_unframed, identify
from drivers.modbus.codec import ReadRegistersResponse, rtu_frame
from simulators.bms_bus import corrupt_checksum, module_snapshot, resample_uart, sensor_positions
from simulators.models.snapshot import PackSnapshot


def reading(cells: int = 5, temps: tuple[float, ...] = (21.0, math.nan)) -> BmsReading:
    return BmsReading(
        voltage_v=18.5,
        current_a=-3.2,
        soc_pct=61.0,
        cell_voltages_v=tuple(3.6 + i / 100 for i in range(cells)),
        temperatures_c=temps,
        balancing=(True, False, True, False, False)[:cells],
        charge_fet=True,
        discharge_fet=False,
        cycles=3,
        remaining_ah=10.0,
        nominal_ah=20.0,
        alarms={AlarmName.CELL_OVERVOLTAGE: AlarmLevel.WARNING, AlarmName.SHORT_CIRCUIT: AlarmLevel.OK},
    )


@pytest.mark.parametrize(("cells", "sensors"), [(5, 2), (7, 3), (3, 0)])
def test_layout_fills_the_same_record_as_the_model(cells: int, sensors: int) -> None:
    r = reading(5)
    layout = BmsLayout(cells, sensors)
    n = len(reading_to_channels(r, cells=cells, sensors=sensors))
    values, quality = [0.0] * n, bytearray([9]) * n
    layout.put_pack(values, quality, voltage_v=r.voltage_v, current_a=r.current_a, soc_pct=r.soc_pct)
    layout.put_cells(values, quality, r.cell_voltages_v)
    layout.put_temperatures(values, quality, r.temperatures_c)
    layout.put_balance(values, quality, r.balancing)
    layout.put_fets(values, quality, charge=r.charge_fet, discharge=r.discharge_fet)
    layout.put_alarms(values, quality, r.alarms)
    expected = reading_to_channels(r, cells=cells, sensors=sensors)
    assert [repr(v) for v in values] == [repr(v) for v in expected]  # repr: NaN compares equal to NaN
    assert bytes(quality) == reading_quality(r, cells=cells, sensors=sensors)


def test_layout_marks_only_the_failed_part() -> None:
    layout = BmsLayout(4, 2)
    n = 3 + 4 + 2 + 4 + len(AlarmName)
    values, quality = [1.0] * n, bytearray(n)
    layout.mark(values, quality, layout.cells, Quality.BAD_FRAME)
    assert [quality[i] for i in layout.cells] == [int(Quality.BAD_FRAME)] * 4
    assert all(math.isnan(values[i]) for i in layout.cells)
    assert quality[layout.pack.start] == 0 and quality[layout.temps.start] == 0


SNAP = PackSnapshot(
    t_s=1.0,
    voltage_v=14.8,
    current_a=2.0,
    soc=0.5,
    cell_voltages_v=(3.6, 3.7, 3.8, 3.7),
    cell_socs=(0.4, 0.5, 0.6, 0.5),
    cell_temperatures_c=(20.0, 21.0, 22.0, 23.0),
    ambient_c=25.0,
    remaining_ah=10.0,
    nominal_ah=20.0,
    balancing=(False, False, True, False),
)


def test_module_snapshot_is_its_slice_of_the_pack() -> None:
    m = module_snapshot(SNAP, 2, 2)
    assert m.cell_voltages_v == (3.8, 3.7) and m.voltage_v == pytest.approx(7.5)
    assert m.soc == pytest.approx(0.55) and m.cell_temperatures_c == (22.0, 23.0)
    assert m.balancing == (True, False) and m.current_a == 2.0
    assert module_snapshot(SNAP, 0, 4) is SNAP


def test_sensor_positions_spread_over_the_module() -> None:
    assert sensor_positions(14, 2) == (0, 13)
    assert sensor_positions(32, 4) == (0, 10, 21, 31)
    assert sensor_positions(8, 1) == (0,) and sensor_positions(8, 0) == ()


FRAME = jbd.encode_reply(jbd.JbdRegister.CELL_VOLTAGES, jbd.encode_cell_voltages([3.7, 3.71]))


@given(st.binary(min_size=1, max_size=64), st.sampled_from([1200, 2400, 9600, 19200, 115200]))
def test_same_rate_or_within_uart_tolerance_reads_every_byte(data: bytes, baud: int) -> None:
    assert resample_uart(data, tx_baud=baud, rx_baud=baud) == data
    assert resample_uart(data, tx_baud=baud, rx_baud=round(baud * 1.01)) == data


@pytest.mark.parametrize("rx", [4800, 19200, 115200])
def test_wrong_rate_turns_a_frame_into_garbage(rx: int) -> None:
    garbled = resample_uart(FRAME, tx_baud=9600, rx_baud=rx)
    assert garbled != FRAME
    assert not any(isinstance(ev, jbd.JbdReply) for ev in jbd.JbdReplyStream().feed(garbled))


def test_a_fast_receiver_sees_zero_bytes_for_each_slow_character() -> None:
    # Every start bit lasts 12 receiver bit times: the receiver reads it all as data bits of 0.
    assert set(resample_uart(b"\x55\xaa", tx_baud=9600, rx_baud=115200)) == {0}


def test_corrupted_checksums_fail_the_codec_check() -> None:
    with pytest.raises(jbd.ChecksumError):
        jbd.decode_reply(corrupt_checksum("jbd", FRAME))
    frame = daly.encode_reply(daly.DalyCommand.PACK, bytes(8))
    with pytest.raises(daly.ChecksumError):
        daly.decode_frame(corrupt_checksum("daly", frame))


def test_identify_names_the_protocol_of_foreign_frames() -> None:
    daly_frame = daly.encode_reply(daly.DalyCommand.PACK, bytes(8))
    modbus_frame = rtu_frame(1, ReadRegistersResponse(3, (1, 2, 3)).encode())
    assert identify(b"\x00\x13" + daly_frame, expected=JBD) == DALY
    assert identify(FRAME, expected=DALY) == JBD
    assert identify(modbus_frame, expected=JBD) == MODBUS_RTU
    assert identify(b"~20014A420000FDA2\r", expected=JBD) is not None
    assert identify(FRAME, expected=JBD) is None  # the expected protocol is not "foreign"


@given(st.binary(max_size=200))
def test_describe_never_fails_and_always_names_the_configured_rate(data: bytes) -> None:
    line = describe_unframed(data, expected=JBD, baud=9600)
    assert f"{len(data)} bytes" in line
    assert ("wrong baud rate (configured 9600)" in line) or ("speaks" in line)
