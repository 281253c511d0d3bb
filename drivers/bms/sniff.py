"""Name what a device sent when it was not the expected protocol. Pure.

A BMS driver that gets bytes but no valid frame asks ``identify`` whether those bytes hold valid
frames of another protocol (a Daly on a port configured for JBD, a Modbus RTU BMS, a
Pylontech-style ASCII BMS), so the operator reads one line saying what is on the wire instead of
"checksum error" forever. Bytes that hold no valid frame of any known protocol are what a wrong
baud rate or a noisy line produce.
"""

from __future__ import annotations

import re

from drivers.bms.daly.codec import DalyFrame, DalyStream
from drivers.bms.jbd.codec import JbdReply, JbdReplyStream
from drivers.modbus.codec import Frame, RtuFrameDecoder

JBD = "JBD"
DALY = "Daly"
MODBUS_RTU = "Modbus RTU"
ASCII_HEX = "ASCII-hex (Pylontech/Seplos style)"

_ASCII_FRAME = re.compile(rb"~[0-9A-Fa-f]{12,}\r")


def _has_jbd(data: bytes) -> bool:
    return any(isinstance(ev, JbdReply) for ev in JbdReplyStream().feed(data))


def _has_daly(data: bytes) -> bool:
    return any(isinstance(ev, DalyFrame) for ev in DalyStream().feed(data))


def _has_modbus(data: bytes) -> bool:
    return any(isinstance(ev, Frame) for ev in RtuFrameDecoder(expect="responses").feed(data))


_CHECKS = (
    (JBD, _has_jbd),
    (DALY, _has_daly),
    (MODBUS_RTU, _has_modbus),
    (ASCII_HEX, lambda data: _ASCII_FRAME.search(data) is not None),
)


def identify(data: bytes, *, expected: str) -> str | None:
    """The protocol other than ``expected`` that ``data`` holds valid frames of, if any."""
    for name, check in _CHECKS:
        if name != expected and check(data):
            return name
    return None


def describe_unframed(data: bytes, *, expected: str, baud: int) -> str:
    """One line saying what ``data`` (received in place of a valid ``expected`` reply) looks like."""
    other = identify(data, expected=expected)
    if other is not None:
        return (
            f"{len(data)} bytes with no valid {expected} frame, but valid {other} frames: the device speaks "
            f"{other}, not {expected}; check the device's kind: in the bench file"
        )
    return (
        f"{len(data)} bytes with no valid {expected} frame: wrong baud rate (configured {baud}), "
        "line noise or a bad connection"
    )
