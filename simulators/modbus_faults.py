"""Fault injection settings for the simulated Modbus endpoints.

A ``ModbusFaults`` is a plain mutable object that tests and bench files change while the server
runs; the server asks it for a ``FaultPlan`` once per request it would answer. Three kinds of
setting, freely combined:

- ``*_next`` counters: the next N replies get the fault, each firing decrements the counter;
- ``*_rate`` probabilities per reply, drawn from a generator seeded with ``seed`` (same seed and
  same request sequence give the same faults);
- steady settings: ``silent``, ``reply_delay_s``, ``exception_at``.

Precedence for one request: drop connection > silence > exception > (delay, garbage, bad CRC,
truncation, which combine). A dropped, silent or refused request is not executed, as if it had
been lost or rejected before reaching the device's data. ``injected`` counts what fired.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from drivers.modbus.codec import ExceptionCode, ReadRequest, Request, Table

Framing = Literal["socket", "rtu"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to do wrong with one reply."""

    drop_connection: bool = False  # close the TCP connection instead of answering
    silent: bool = False  # no reply at all
    exception_code: int | None = None  # answer with this exception instead of executing
    delay_s: float = 0.0  # wait this long before sending
    garbage: bytes = b""  # sent just before the reply
    bad_crc: bool = False  # RTU: CRC bytes inverted; MBAP (no CRC): protocol id set to 0xFFFF
    truncate: bool = False  # send only the first ``truncate_keep`` bytes (None: half the frame)
    truncate_keep: int | None = None

    def mangle(self, frame: bytes, *, framing: Framing) -> bytes:
        """The bytes to send for the well-formed reply ``frame``."""
        if self.bad_crc:
            if framing == "rtu":
                frame = frame[:-2] + bytes((frame[-2] ^ 0xFF, frame[-1] ^ 0xFF))
            else:
                frame = frame[:2] + b"\xff\xff" + frame[4:]
        if self.truncate:
            keep = len(frame) // 2 if self.truncate_keep is None else self.truncate_keep
            frame = frame[: max(1, min(keep, len(frame) - 1))]
        return self.garbage + frame


NO_FAULT = FaultPlan()


def _touches(request: Request, table: Table, address: int) -> bool:
    if request.table != table:
        return False
    if isinstance(request, ReadRequest):
        return request.address <= address < request.address + request.count
    count = len(values) if (values := getattr(request, "values", None)) is not None else 1
    return request.address <= address < request.address + count


@dataclass(slots=True)
class ModbusFaults:
    """Faults for one server or one unit; mutate fields at run time."""

    seed: int = 0
    # next N replies
    drop_connection_next: int = 0
    silent_next: int = 0
    exception_next: int = 0
    bad_crc_next: int = 0
    truncate_next: int = 0
    garbage_next: int = 0
    # probability per reply, 0..1
    silence_rate: float = 0.0
    crc_error_rate: float = 0.0
    truncate_rate: float = 0.0
    garbage_rate: float = 0.0
    # steady settings
    silent: bool = False
    reply_delay_s: float = 0.0
    exception_code: int = ExceptionCode.SERVER_DEVICE_BUSY  # what ``exception_next`` answers
    exception_at: dict[tuple[Table, int], int] = field(default_factory=dict)  # (table, addr) -> code
    garbage: bytes | None = None  # None: ``garbage_length`` seeded random bytes per reply
    garbage_length: int = 8
    truncate_keep: int | None = None  # bytes kept of a truncated reply; None: half of it
    injected: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def _fires(self, counter: str, rate: float) -> bool:
        remaining = getattr(self, counter)
        if remaining > 0:
            setattr(self, counter, remaining - 1)
            return True
        return rate > 0 and self._rng.random() < rate

    def plan(self, request: Request | None) -> FaultPlan:
        """The faults for the reply to ``request`` (None: a request the server refuses as malformed)."""
        if self._fires("drop_connection_next", 0.0):
            self.injected["drop_connection"] += 1
            return FaultPlan(drop_connection=True)
        if self.silent or self._fires("silent_next", self.silence_rate):
            self.injected["silent"] += 1
            return FaultPlan(silent=True)

        exception_code = None
        if request is not None and self.exception_at:
            for (table, address), code in self.exception_at.items():
                if _touches(request, table, address):
                    exception_code = code
                    break
        if exception_code is None and self._fires("exception_next", 0.0):
            exception_code = self.exception_code
        if exception_code is not None:
            self.injected["exception"] += 1

        garbage = b""
        if self._fires("garbage_next", self.garbage_rate):
            garbage = self.garbage if self.garbage is not None else self._rng.randbytes(self.garbage_length)
            self.injected["garbage"] += 1
        bad_crc = self._fires("bad_crc_next", self.crc_error_rate)
        if bad_crc:
            self.injected["bad_crc"] += 1
        truncate = self._fires("truncate_next", self.truncate_rate)
        if truncate:
            self.injected["truncate"] += 1
        if self.reply_delay_s > 0:
            self.injected["delay"] += 1

        if not (exception_code is not None or garbage or bad_crc or truncate or self.reply_delay_s > 0):
            return NO_FAULT
        return FaultPlan(
            exception_code=exception_code,
            delay_s=self.reply_delay_s,
            garbage=garbage,
            bad_crc=bad_crc,
            truncate=truncate,
            truncate_keep=self.truncate_keep,
        )
