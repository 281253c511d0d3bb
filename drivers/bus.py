"""The arbiter of one serial bus: every driver on a port sends through the same ``SerialBus``.

RS-485 is half duplex and shared: one request and its reply must finish before the next request
starts, and devices want the line quiet for a moment before they listen (Daly: ~20 ms; Modbus RTU:
3.5 character times). The bus holds an ``asyncio.Lock`` (FIFO, so a dead device costs the others
one timeout per request it makes, never more) and waits out the protocol's idle gap before each
request. Before sending, it drops whatever the line delivered meanwhile (a late reply to a timed
out request, padding frames some firmware adds), so every reply is read from a clean start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from daq.errors import ResponseTimeoutError
from drivers.serial_link import SerialLink

log = logging.getLogger(__name__)

Protocol = Literal["modbus", "jbd", "daly"]

DALY_IDLE_GAP_S = 0.020  # Daly wants ~20 ms of silence before a request (DOMAIN.md section 3)
RTU_FAST_GAP_S = 0.00175  # Modbus RTU: 3.5 characters, fixed at 1.75 ms above 19200 baud


def idle_gap_s(protocol: Protocol, *, baud: int, bits_per_char: int = 10) -> float:
    """Silence to leave on the line before a request.

    Modbus RTU's 3.5-character rule is used for JBD too (its documents name no gap): frames
    never abut, and the cost is a few milliseconds at 9600 baud.
    """
    if protocol == "daly":
        return DALY_IDLE_GAP_S
    if baud > 19200:
        return RTU_FAST_GAP_S
    return 3.5 * bits_per_char / baud


@dataclass(slots=True)
class BusStats:
    transactions: int = 0
    timeouts: int = 0
    flushed_bytes: int = 0  # bytes found on the line before a request (late replies, padding)


class SerialBus:
    """One shared serial port: lock, idle gap, flush, send, collect the reply."""

    def __init__(self, link: SerialLink, *, idle_gap_s: float = 0.0) -> None:
        self.link = link
        self.idle_gap_s = idle_gap_s
        self.lock = asyncio.Lock()
        self.stats = BusStats()
        self._users: set[str] = set()

    @property
    def label(self) -> str:
        return self.link.label

    def connect(self, user: str) -> None:
        """Open the port for ``user`` (a device name). Raises ``ConnectError``."""
        self._users.add(user)
        self.link.open()

    def release(self, user: str) -> None:
        """``user`` is done with the bus; the port closes when nobody uses it any more."""
        self._users.discard(user)
        if not self._users:
            self.link.close()

    def reset(self) -> None:
        """Close the port after a failure; the next transaction reopens it."""
        self.link.close()

    async def _wait_idle(self, gap_s: float, limit_s: float) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + limit_s  # a device that never stops talking must not block the bus
        while True:
            quiet_for = loop.time() - self.link.last_activity
            if quiet_for >= gap_s or loop.time() >= give_up:
                return
            await asyncio.sleep(gap_s - quiet_for)

    async def transact(self, request: bytes, consume: Callable[[bytes], bool], *, timeout_s: float) -> int:
        """Send ``request`` and feed the reply bytes to ``consume`` until it returns True.

        Returns the number of bytes received. Raises ``ResponseTimeoutError`` if none arrived,
        ``ConnectError``/``TransportError`` if the port cannot be opened or fails.
        """
        async with self.lock:
            self.link.open()
            await self._wait_idle(self.idle_gap_s, timeout_s)
            self.stats.flushed_bytes += self.link.flush_input()
            self.stats.transactions += 1
            await self.link.write(request)
            try:
                return await self.link.read_until(consume, timeout_s=timeout_s)
            except ResponseTimeoutError:
                self.stats.timeouts += 1
                raise
