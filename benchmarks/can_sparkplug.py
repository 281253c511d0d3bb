"""CAN frame decoding and Sparkplug B payload encoding, per second on this machine.

Run: ``python benchmarks/can_sparkplug.py`` (from the repository root). Prints a markdown table.
Each figure is also given as a ratio to a baseline measured in the same run: CAN decoding against
the wire's frame rate at 500 kbit/s (about 4,000 8-byte frames/s at full load), Sparkplug DDATA
encoding against the MQTT sink's JSON payload of the same record.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daq.records import DeviceSchema, Record
from daq.sinks.mqtt_payload import RecordPayloads
from daq.sinks.sparkplug.payloads import EdgeNodeSession, SparkplugTopics
from drivers.bms.model import AlarmName
from drivers.can.dbc import load_dbc
from drivers.can.mapping import (
    CanChannelSpec,
    CanFrameAssembler,
    CanFrameEncoder,
    SignalSpec,
    expand_signal_names,
    resolve_mapping,
)

MIN_SECONDS = 0.5
CELLS, SENSORS = 14, 2
CAN_FRAMES_PER_S_500K = 500_000 / 125  # an 8-byte standard frame with stuffing is about 125 bits


def rate(fn: Callable[[], object], per_call: int = 1) -> float:
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS:
            return calls * per_call / elapsed
        calls *= 2


def main() -> None:
    db = load_dbc(Path(__file__).resolve().parents[1] / "configs" / "dbc" / "demo_pack.dbc")
    spec = CanChannelSpec(
        cells=expand_signal_names("Cell{n:02d}_Voltage", CELLS),
        temperatures=expand_signal_names("Temp{n}", SENSORS),
        voltage_v=SignalSpec("PackVoltage"),
        current_a=SignalSpec("PackCurrent", discharge_positive=True),
        soc_pct=SignalSpec("PackSOC"),
        alarms=((AlarmName.CELL_OVERVOLTAGE, "AlarmCellOV"),),
    )
    mapping, problems = resolve_mapping(db, spec, cells=CELLS, sensors=SENSORS)
    assert mapping is not None, problems
    values = [3.7 if c.name.startswith("cell") else 1.0 for c in mapping.channels]
    frames = [(s.frame_id, CanFrameEncoder(mapping).encode(s, values)) for s in mapping.sources]
    assembler = CanFrameAssembler(mapping)

    def decode_all() -> None:
        for frame_id, data in frames:
            assembler.update(frame_id, data, 0.0)

    n = len(mapping.channels)
    out_v, out_q = [math.nan] * n, bytearray(n)
    decode = rate(decode_all, len(frames))
    assemble = rate(lambda: assembler.fill(out_v, out_q, 0.0))

    schema = DeviceSchema("bms-can", "bms", mapping.channels)
    record = Record(schema, time.time_ns(), values, bytes(n), "run", 1, 1, 1)
    session = EdgeNodeSession(SparkplugTopics("lab", "bench"))
    session.add_device(schema)
    json_payloads = RecordPayloads("bench")
    sparkplug = rate(lambda: session.ddata(record, t_ms=0, historical=False))
    json_rate = rate(lambda: json_payloads.encode(record, historical=False))
    sp_bytes = len(session.ddata(record, t_ms=0, historical=False))
    json_bytes = len(json_payloads.encode(record, historical=False))

    print("| what | per second | baseline (same run) | ratio |")
    print("|---|---:|---|---:|")
    print(
        f"| CAN frame decode (demo DBC, {len(frames)} frames a cycle) | {decode:,.0f} frames |"
        f" 500 kbit/s bus at 100 % load: {CAN_FRAMES_PER_S_500K:,.0f} frames | {decode / CAN_FRAMES_PER_S_500K:.1f}x |"
    )
    print(f"| CAN record assembly ({n} channels) | {assemble:,.0f} records | - | - |")
    print(
        f"| Sparkplug DDATA encode ({n} metrics, {sp_bytes} bytes) | {sparkplug:,.0f} records |"
        f" MQTT JSON payload ({json_bytes} bytes): {json_rate:,.0f} records | {sparkplug / json_rate:.2f}x |"
    )


if __name__ == "__main__":
    main()
