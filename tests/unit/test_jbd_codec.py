"""JBD / Xiaoxiang codec: byte vectors, typed errors, stream resync, properties, simulated device."""

from __future__ import annotations

import json
import math
import os
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.bms import errors
from drivers.bms.errors import BmsFrameError, BmsStatusError
from drivers.bms.jbd import codec as jbd
from drivers.bms.model import AlarmLevel, AlarmName
from simulators.bms.jbd_device import JbdDeviceState, SimJbdDevice, jbd_reply
from simulators.models.snapshot import PackSnapshot

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "bms_jbd.json").read_text())
# BMS_PROP_EXAMPLES=5000 for a deeper search than the default run.
PROPS = settings(deadline=None, max_examples=int(os.environ.get("BMS_PROP_EXAMPLES", "200")))


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def temps_equal(got: tuple[float, ...], want: list[float | None]) -> bool:
    return len(got) == len(want) and all(
        math.isnan(g) if w is None else g == pytest.approx(w, abs=1e-9) for g, w in zip(got, want, strict=True)
    )


# --- byte vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize("vec", VECTORS["requests"], ids=lambda v: v["name"])
def test_request_vectors_encode_and_decode(vec):
    raw = hx(vec["hex"])
    data = hx(vec.get("data", ""))
    if vec["write"]:
        assert jbd.encode_write_request(vec["register"], data) == raw
    else:
        assert jbd.encode_read_request(vec["register"]) == raw
    assert jbd.decode_request(raw) == jbd.JbdRequest(register=vec["register"], data=data, write=vec["write"])


@pytest.mark.parametrize("vec", VECTORS["basic_info"], ids=lambda v: v["name"])
def test_basic_info_vectors(vec):
    reply = jbd.decode_reply(hx(vec["hex"]), register=jbd.JbdRegister.BASIC_INFO)
    assert reply.register == vec["register"]
    info = jbd.decode_basic_info(reply.payload)
    want = vec["expect"]
    for name in (
        "voltage_v",
        "current_a",
        "remaining_ah",
        "nominal_ah",
        "soc_pct",
    ):
        assert getattr(info, name) == pytest.approx(want[name], abs=1e-9), name
    for name in (
        "cycles",
        "balance_bits",
        "protection_bits",
        "software_version",
        "charge_fet",
        "discharge_fet",
        "cell_count",
    ):
        assert getattr(info, name) == want[name], name
    assert info.production_date == date.fromisoformat(want["production_date"])
    assert temps_equal(info.temperatures_c, want["temperatures_c"])
    if "alarms_set" in want:
        assert {a.value for a, lvl in info.alarms.items() if lvl is AlarmLevel.ALARM} == set(want["alarms_set"])
        assert [i + 1 for i, on in enumerate(info.balancing) if on] == want["balancing_cells"]


@pytest.mark.parametrize("vec", VECTORS["cell_voltages"], ids=lambda v: v["name"])
def test_cell_voltage_vectors(vec):
    payload = jbd.decode_reply(hx(vec["hex"]), register=jbd.JbdRegister.CELL_VOLTAGES).payload
    assert jbd.decode_cell_voltages(payload) == pytest.approx(vec["expect"], abs=1e-9)


def test_hardware_name_vector():
    vec = VECTORS["hardware_name"][0]
    payload = jbd.decode_reply(hx(vec["hex"]), register=jbd.JbdRegister.HARDWARE_NAME).payload
    assert jbd.decode_hardware_name(payload) == vec["expect"]


def test_status_error_reply_raises_device_exception_with_code():
    vec = VECTORS["error_replies"][0]
    reply = jbd.decode_reply(hx(vec["hex"]))  # without a register: a value, not an error
    assert (reply.status, reply.ok) == (0x80, False)
    with pytest.raises(BmsStatusError) as info:
        jbd.decode_reply(hx(vec["hex"]), register=vec["register"])
    assert info.value.code == vec["status"]
    assert info.value.register == 3


def test_reply_for_another_register_is_unexpected():
    raw = hx(VECTORS["cell_voltages"][1]["hex"])  # a register 0x04 reply
    with pytest.raises(errors.UnexpectedResponseError, match="0x04, expected 0x03"):
        jbd.decode_reply(raw, register=jbd.JbdRegister.BASIC_INFO)


@pytest.mark.parametrize("vec", VECTORS["bad_frames"], ids=lambda v: v["name"])
def test_bad_frames_raise_their_typed_error(vec):
    with pytest.raises(getattr(errors, vec["error"])):
        jbd.decode_reply(hx(vec["hex"]))


def test_checksum_error_carries_both_values():
    with pytest.raises(errors.ChecksumError) as info:
        jbd.decode_reply(hx(VECTORS["bad_frames"][0]["hex"]))
    assert (info.value.expected, info.value.received) == (0xFBFF, 0xFBFE)


def test_request_with_unknown_operation_byte_is_rejected():
    frame = hx("DD 00 03 00 FF FD 77")
    with pytest.raises(errors.UnexpectedResponseError, match="neither read"):
        jbd.decode_request(frame)


# --- payloads ---------------------------------------------------------------------------------


def test_every_protection_bit_maps_to_its_neutral_alarm_at_alarm_level():
    expected = [
        "cell_overvoltage",
        "cell_undervoltage",
        "pack_overvoltage",
        "pack_undervoltage",
        "charge_overtemperature",
        "charge_undertemperature",
        "discharge_overtemperature",
        "discharge_undertemperature",
        "charge_overcurrent",
        "discharge_overcurrent",
        "short_circuit",
        "internal_failure",
        "software_lock",
    ]
    for bit, name in enumerate(expected):
        alarms = jbd.protection_alarms(1 << bit)
        assert [a.value for a, lvl in alarms.items() if lvl] == [name]
        assert alarms[AlarmName(name)] is AlarmLevel.ALARM
    clear = jbd.protection_alarms(0)
    assert set(clear.values()) == {AlarmLevel.OK}
    assert AlarmName.FUSE not in clear and AlarmName.LOW_SOC not in clear  # JBD cannot report them


def test_protection_bits_for_inverts_the_mapping_and_ignores_unreportable_alarms():
    alarms = {AlarmName.SHORT_CIRCUIT: AlarmLevel.WARNING, AlarmName.FUSE: AlarmLevel.ALARM}
    assert jbd.protection_bits_for(alarms) == 1 << 10


def test_ntc_conversion_and_open_sentinels():
    assert jbd.ntc_to_celsius(2731) == 0.0
    assert jbd.ntc_to_celsius(2981) == 25.0
    assert math.isnan(jbd.ntc_to_celsius(0))
    assert math.isnan(jbd.ntc_to_celsius(0xFFFF))
    assert jbd.celsius_to_ntc(math.nan) == 0
    assert jbd.celsius_to_ntc(-10.5) == 2626


def test_basic_info_too_short_or_missing_ntcs_is_a_payload_error():
    payload = jbd.decode_reply(hx(VECTORS["basic_info"][0]["hex"])).payload
    with pytest.raises(errors.PayloadError, match="at least 23"):
        jbd.decode_basic_info(payload[:22])
    with pytest.raises(errors.PayloadError, match="announces 2 NTCs"):
        jbd.decode_basic_info(payload[:-1])


def test_basic_info_keeps_fields_newer_firmware_appends():
    payload = jbd.decode_reply(hx(VECTORS["basic_info"][0]["hex"])).payload + b"\x01\x02\x03"
    info = jbd.decode_basic_info(payload)
    assert info.extra == b"\x01\x02\x03"
    assert jbd.encode_basic_info(info) == payload


def test_cell_voltages_odd_payload_is_a_payload_error():
    with pytest.raises(errors.PayloadError):
        jbd.decode_cell_voltages(b"\x0c\xe4\x0c")


def test_encode_refuses_values_outside_their_field():
    info = jbd.decode_basic_info(jbd.decode_reply(hx(VECTORS["basic_info"][0]["hex"])).payload)
    with pytest.raises(ValueError, match="current_a"):
        jbd.encode_basic_info(_replace(info, current_a=400.0))


def _replace(info, **kw):
    from dataclasses import replace

    return replace(info, **kw)


def test_to_reading_combines_basic_info_and_cells():
    info = jbd.decode_basic_info(jbd.decode_reply(hx(VECTORS["basic_info"][2]["hex"])).payload)
    cells = tuple(3.3 + i / 1000 for i in range(17))
    reading = jbd.to_reading(info, cells)
    assert reading.current_a == -12.34
    assert reading.cell_voltages_v == cells
    assert reading.balancing[0] and reading.balancing[2] and reading.balancing[16]
    assert len(reading.balancing) == 17
    assert reading.alarm_level is AlarmLevel.ALARM
    assert reading.open_sensors == (2, 4)
    with pytest.raises(errors.PayloadError, match="17 cells"):
        jbd.to_reading(info, cells[:16])


# --- stream decoder ---------------------------------------------------------------------------

BASIC = hx(VECTORS["basic_info"][0]["hex"])
CELLS = hx(VECTORS["cell_voltages"][1]["hex"])


def replies(events):
    return [e for e in events if isinstance(e, jbd.JbdReply)]


def test_stream_assembles_a_frame_fed_byte_by_byte():
    stream = jbd.JbdReplyStream()
    events = []
    for i in range(len(BASIC)):
        events += stream.feed(BASIC[i : i + 1])
    assert events == [jbd.decode_reply(BASIC)]
    assert stream.pending == 0


def test_stream_splits_back_to_back_frames():
    events = jbd.JbdReplyStream().feed(BASIC + CELLS + BASIC)
    assert [e.register for e in events] == [3, 4, 3]


def test_stream_reports_garbage_and_resynchronises():
    events = jbd.JbdReplyStream().feed(b"\x00\x77junk" + BASIC)
    assert isinstance(events[0], errors.SkippedBytesError)
    assert events[0].raw == b"\x00\x77junk"
    assert replies(events) == [jbd.decode_reply(BASIC)]


def test_stream_reports_a_corrupt_frame_then_finds_the_next():
    bad = bytearray(BASIC)
    bad[10] ^= 0xFF
    events = jbd.JbdReplyStream().feed(bytes(bad) + CELLS)
    assert isinstance(events[0], errors.ChecksumError)
    assert events[0].raw == bytes(bad)
    assert replies(events) == [jbd.decode_reply(CELLS)]


def test_stream_does_not_stall_on_a_garbage_start_byte_with_a_large_length():
    # A stray 0xDD whose "length" would make the decoder wait for 255 bytes.
    events = jbd.JbdReplyStream().feed(b"\xdd\x00\x00\xff" + BASIC)
    assert replies(events) == [jbd.decode_reply(BASIC)]


def test_stream_flush_reports_a_truncated_frame():
    stream = jbd.JbdReplyStream()
    assert stream.feed(BASIC[:10]) == []
    assert stream.pending == 10
    (err,) = stream.flush()
    assert isinstance(err, errors.TruncatedFrameError)
    assert err.raw == BASIC[:10]
    assert stream.pending == 0


def test_request_stream_yields_requests():
    stream = jbd.JbdRequestStream()
    events = stream.feed(jbd.encode_read_request(3) + b"\x00" + jbd.encode_read_request(4))
    assert [e.register for e in events if isinstance(e, jbd.JbdRequest)] == [3, 4]


# --- properties -------------------------------------------------------------------------------


@PROPS
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20))
def test_any_bytes_give_only_replies_or_typed_errors(data, cuts):
    stream = jbd.JbdReplyStream()
    events, pos = [], 0
    for cut in [*cuts, len(data)]:
        events += stream.feed(data[pos : pos + cut])
        pos += cut
        assert stream.pending <= jbd.MAX_FRAME_LEN
    events += stream.feed(data[pos:]) + stream.flush()
    assert all(isinstance(e, jbd.JbdReply | BmsFrameError) for e in events)
    assert stream.pending == 0


@PROPS
@given(st.binary(max_size=300))
def test_decode_reply_raises_only_typed_errors(data):
    try:
        reply = jbd.decode_reply(data, register=3)
    except (BmsFrameError, BmsStatusError):
        return
    assert reply.status == 0


@PROPS
@given(st.binary(max_size=300))
def test_payload_decoders_raise_only_payload_errors(payload):
    for decode in (jbd.decode_basic_info, jbd.decode_cell_voltages, jbd.decode_hardware_name):
        try:
            decode(payload)
        except errors.PayloadError:
            pass


frames = st.builds(
    lambda reg, payload: jbd.encode_reply(reg, payload),
    st.sampled_from(list(jbd.JbdRegister)),
    st.binary(max_size=255),
)


@PROPS
@given(st.binary(max_size=300), frames)
def test_garbage_then_valid_frame_finds_the_frame(garbage, frame):
    stream = jbd.JbdReplyStream()
    events = stream.feed(garbage + frame)
    assert jbd.decode_reply(frame) in replies(events)


ntc = st.one_of(st.just(math.nan), st.integers(1, 0xFFFE).map(lambda r: (r - 2731) / 10))
basic_infos = st.builds(
    jbd.JbdBasicInfo,
    voltage_v=st.integers(0, 0xFFFF).map(lambda r: r / 100),
    current_a=st.integers(-0x8000, 0x7FFF).map(lambda r: r / 100),
    remaining_ah=st.integers(0, 0xFFFF).map(lambda r: r / 100),
    nominal_ah=st.integers(0, 0xFFFF).map(lambda r: r / 100),
    cycles=st.integers(0, 0xFFFF),
    production_date_raw=st.integers(0, 0xFFFF),
    balance_bits=st.integers(0, 0xFFFF_FFFF),
    protection_bits=st.integers(0, 0xFFFF),
    software_version=st.integers(0, 0xFF),
    soc_pct=st.integers(0, 100).map(float),
    charge_fet=st.booleans(),
    discharge_fet=st.booleans(),
    cell_count=st.integers(0, 32),
    temperatures_c=st.lists(ntc, max_size=8).map(tuple),
    extra=st.binary(max_size=8),
)


@PROPS
@given(basic_infos)
def test_basic_info_round_trips_through_a_reply_frame(info):
    frame = jbd.encode_reply(jbd.JbdRegister.BASIC_INFO, jbd.encode_basic_info(info))
    got = jbd.decode_basic_info(jbd.decode_reply(frame, register=jbd.JbdRegister.BASIC_INFO).payload)
    assert len(got.temperatures_c) == len(info.temperatures_c)
    assert all(same(a, b) for a, b in zip(got.temperatures_c, info.temperatures_c, strict=True))
    assert _replace(got, temperatures_c=()) == _replace(info, temperatures_c=())


@PROPS
@given(st.lists(st.integers(0, 0xFFFF).map(lambda mv: mv / 1000), max_size=127))
def test_cell_voltages_round_trip(cells):
    frame = jbd.encode_reply(jbd.JbdRegister.CELL_VOLTAGES, jbd.encode_cell_voltages(cells))
    assert jbd.decode_cell_voltages(jbd.decode_reply(frame, register=4).payload) == tuple(cells)


# --- simulated device -------------------------------------------------------------------------


def snapshot(**overrides) -> PackSnapshot:
    fields = dict(
        t_s=0.0,
        voltage_v=13.21,
        current_a=-20.5,
        soc=0.634,
        cell_voltages_v=(3.301, 3.305, 3.299, 3.305),
        cell_socs=(0.63, 0.64, 0.63, 0.64),
        cell_temperatures_c=(24.0, 25.1, 25.5, math.nan),
        ambient_c=22.0,
        remaining_ah=63.4,
        nominal_ah=100.0,
        balancing=(False, True, False, True),
    )
    fields.update(overrides)
    return PackSnapshot(**fields)


def poll(device: SimJbdDevice, snap: PackSnapshot, register: int) -> jbd.JbdReply:
    (reply,) = jbd.JbdReplyStream().feed(device.feed(jbd.encode_read_request(register), snap))
    return reply


def test_device_answers_what_the_driver_decodes_into_the_snapshot():
    device = SimJbdDevice(JbdDeviceState(ntc_cells=(0, 2, -1)))
    snap = snapshot()
    info = jbd.decode_basic_info(poll(device, snap, 3).payload_for(3))
    cells = jbd.decode_cell_voltages(poll(device, snap, 4).payload_for(4))
    reading = jbd.to_reading(info, cells)
    assert reading.voltage_v == 13.21
    assert reading.current_a == -20.5  # discharge stays negative end to end
    assert reading.soc_pct == 63.0
    assert reading.cell_voltages_v == snap.cell_voltages_v
    assert reading.temperatures_c[:2] == (24.0, 25.5)
    assert math.isnan(reading.temperatures_c[2])  # NaN in the snapshot = open thermistor
    assert reading.balancing == snap.balancing
    assert (reading.remaining_ah, reading.nominal_ah) == (63.4, 100.0)
    assert reading.alarm_level is AlarmLevel.OK
    assert jbd.decode_hardware_name(poll(device, snap, 5).payload_for(5)) == device.state.hardware_name


def test_device_reports_forced_protections_fets_and_open_ntc():
    state = JbdDeviceState(
        protection_bits=jbd.protection_bits_for({AlarmName.CELL_OVERVOLTAGE: AlarmLevel.ALARM}),
        charge_fet=False,
        open_ntcs=frozenset({0}),
    )
    info = jbd.decode_basic_info(poll(SimJbdDevice(state), snapshot(), 3).payload_for(3))
    assert info.alarms[AlarmName.CELL_OVERVOLTAGE] is AlarmLevel.ALARM
    assert (info.charge_fet, info.discharge_fet) == (False, True)
    assert math.isnan(info.temperatures_c[0])


def test_device_counts_cycles_from_its_offset_plus_the_packs_full_cycles():
    state = JbdDeviceState(cycles=100)
    info = jbd.decode_basic_info(poll(SimJbdDevice(state), snapshot(cycles=2.7), 3).payload_for(3))
    assert info.cycles == 102


def test_device_saturates_values_beyond_their_fields():
    info = jbd.decode_basic_info(poll(SimJbdDevice(), snapshot(current_a=-500.0, soc=1.2), 3).payload_for(3))
    assert info.current_a == -327.68
    assert info.soc_pct == 100.0


def test_device_refuses_unknown_registers_and_ignores_bad_frames():
    device = SimJbdDevice(JbdDeviceState(refused_registers=frozenset({5})))
    assert poll(device, snapshot(), 0x77).status == jbd.STATUS_ERROR
    assert poll(device, snapshot(), 5).status == jbd.STATUS_ERROR
    bad = bytearray(jbd.encode_read_request(3))
    bad[-2] ^= 1
    assert device.feed(bytes(bad), snapshot()) == b""


def test_device_acknowledges_writes_and_records_them():
    state = JbdDeviceState()
    reply = jbd_reply(jbd.encode_write_request(0x00, b"\x56\x78"), snapshot(), state)
    assert jbd.decode_reply(reply, register=0x00).payload == b""
    assert state.writes == [jbd.JbdRequest(register=0, data=b"\x56\x78", write=True)]


def test_device_faults_mute_and_corrupt_checksum():
    assert jbd_reply(jbd.encode_read_request(3), snapshot(), JbdDeviceState(mute=True)) == b""
    corrupt = jbd_reply(jbd.encode_read_request(3), snapshot(), JbdDeviceState(corrupt_checksum=True))
    with pytest.raises(errors.ChecksumError):
        jbd.decode_reply(corrupt)


def test_device_answers_requests_split_across_feeds():
    device = SimJbdDevice()
    request = jbd.encode_read_request(4)
    assert device.feed(request[:3], snapshot()) == b""
    out = device.feed(request[3:], snapshot())
    assert jbd.decode_reply(out, register=4)


@PROPS
@given(
    st.lists(st.integers(0, 5000).map(lambda mv: mv / 1000), min_size=1, max_size=32),
    st.floats(-300, 300).map(lambda a: round(a, 2)),
    st.floats(0, 1),
)
def test_device_round_trip_for_arbitrary_packs(cells, current, soc):
    n = len(cells)
    snap = snapshot(
        cell_voltages_v=tuple(cells),
        cell_socs=(soc,) * n,
        cell_temperatures_c=(25.0,) * n,
        balancing=tuple(i % 3 == 0 for i in range(n)),
        current_a=current,
        soc=soc,
        voltage_v=round(sum(cells), 2),
    )
    device = SimJbdDevice()
    info = jbd.decode_basic_info(poll(device, snap, 3).payload_for(3))
    got_cells = jbd.decode_cell_voltages(poll(device, snap, 4).payload_for(4))
    reading = jbd.to_reading(info, got_cells)
    assert reading.cell_voltages_v == tuple(cells)
    assert reading.current_a == pytest.approx(current, abs=0.005)
    assert reading.soc_pct == round(soc * 100)
    assert reading.balancing == snap.balancing
