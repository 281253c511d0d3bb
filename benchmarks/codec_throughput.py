"""Frames per second of the pure BMS codecs, decode and encode, on this machine.

Run: ``python benchmarks/codec_throughput.py`` (from the repository root). Prints a markdown table.
Decode covers framing + checksum + payload decoding (from bytes to typed values); encode covers
the reverse (what the simulated device does per reply). For comparison, a 9600-baud line carries
about 960 bytes/s: a 32-cell JBD poll (two replies, ~110 bytes) takes ~0.12 s on the wire.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.bms.daly import codec as daly
from drivers.bms.jbd import codec as jbd

CELLS = 32
MIN_SECONDS = 0.3


def rate(fn: Callable[[], object], frames_per_call: int) -> float:
    """Frames per second of ``fn``, timed over at least MIN_SECONDS."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS:
            return calls * frames_per_call / elapsed
        calls *= 2


def jbd_cases() -> list[tuple[str, int, Callable[[], object], Callable[[], object]]]:
    info = jbd.JbdBasicInfo(
        voltage_v=105.6,
        current_a=-12.34,
        remaining_ah=45.67,
        nominal_ah=100.0,
        cycles=12,
        production_date_raw=0x2F65,
        balance_bits=0x0001_0005,
        protection_bits=0,
        software_version=0x21,
        soc_pct=46.0,
        charge_fet=True,
        discharge_fet=True,
        cell_count=CELLS,
        temperatures_c=(25.0, 25.5, 26.0, 24.8),
    )
    basic_frame = jbd.encode_reply(jbd.JbdRegister.BASIC_INFO, jbd.encode_basic_info(info))
    cells = tuple(3.3 + i / 1000 for i in range(CELLS))
    cells_frame = jbd.encode_reply(jbd.JbdRegister.CELL_VOLTAGES, jbd.encode_cell_voltages(cells))

    def decode_basic() -> object:
        return jbd.decode_basic_info(jbd.decode_reply(basic_frame, register=jbd.JbdRegister.BASIC_INFO).payload)

    def decode_cells() -> object:
        return jbd.decode_cell_voltages(jbd.decode_reply(cells_frame, register=jbd.JbdRegister.CELL_VOLTAGES).payload)

    return [
        (
            "JBD basic info (0x03)",
            1,
            decode_basic,
            lambda: jbd.encode_reply(jbd.JbdRegister.BASIC_INFO, jbd.encode_basic_info(info)),
        ),
        (
            f"JBD cell voltages (0x04, {CELLS} cells)",
            1,
            decode_cells,
            lambda: jbd.encode_reply(jbd.JbdRegister.CELL_VOLTAGES, jbd.encode_cell_voltages(cells)),
        ),
    ]


def daly_cases() -> list[tuple[str, int, Callable[[], object], Callable[[], object]]]:
    pack = daly.DalyPack(voltage_v=105.6, acquisition_voltage_v=105.6, current_a=-12.3, soc_pct=46.2)
    pack_frame = daly.encode_reply(daly.DalyCommand.PACK, daly.encode_pack(pack))
    cells = tuple(3.3 + i / 1000 for i in range(CELLS))
    n_frames = daly.cell_frame_count(CELLS)

    def encode_cells() -> bytes:
        return b"".join(
            daly.encode_reply(daly.DalyCommand.CELL_VOLTAGES, daly.encode_cell_frame(n + 1, cells[3 * n : 3 * n + 3]))
            for n in range(n_frames)
        )

    cells_bytes = encode_cells()

    def decode_cells() -> object:
        frames = daly.DalyStream().feed(cells_bytes)
        return daly.assemble_cell_voltages(frames, CELLS)  # type: ignore[arg-type]

    return [
        (
            "Daly pack (0x90)",
            1,
            lambda: daly.decode_pack(daly.decode_reply(pack_frame, command=daly.DalyCommand.PACK).data),
            lambda: daly.encode_reply(daly.DalyCommand.PACK, daly.encode_pack(pack)),
        ),
        (
            f"Daly cell query (0x95, {CELLS} cells = {n_frames} frames, stream + assemble)",
            n_frames,
            decode_cells,
            encode_cells,
        ),
    ]


def main() -> None:
    rows = []
    for name, frames_per_call, decode, encode in [*jbd_cases(), *daly_cases()]:
        decode_fps = rate(decode, frames_per_call)
        encode_fps = rate(encode, frames_per_call)
        rows.append((name, decode_fps, encode_fps, decode_fps / frames_per_call))
    print(f"Python {sys.version.split()[0]}, {CELLS}-cell pack\n")
    print("| codec / message | decode frames/s | encode frames/s | decoded answers/s |")
    print("|---|---:|---:|---:|")
    for name, dec, enc, answers in rows:
        print(f"| {name} | {dec:,.0f} | {enc:,.0f} | {answers:,.0f} |")


if __name__ == "__main__":
    main()
