"""A thin async transport over one serial port (RS-485 / RS-232 / UART), for the BMS drivers.

pyserial opens and configures the port (exclusively, so two programs never share a bus by
accident); after that the event loop watches the descriptor with ``add_reader`` and bytes move
with plain non-blocking ``os.read``/``os.write``, so no thread and no polling. Errors leave this
module as the project's own: ``ConnectError`` (missing, busy or forbidden port),
``TransportError`` (the port went away while open) and ``ResponseTimeoutError``.

Bytes that arrive while nobody reads are kept (up to ``MAX_BUFFERED``) until ``flush_input``;
``last_activity`` says when the line last carried a byte either way, for the bus arbiter's idle gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
from collections.abc import Callable

import serial

from daq.errors import ConnectError, ResponseTimeoutError, TransportError

log = logging.getLogger(__name__)

MAX_BUFFERED = 65536  # a chatty device with nobody reading must not grow memory without bound
_READ_SIZE = 4096


def bits_per_char(*, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits one character takes on the line: start bit, data bits, parity bit, stop bits."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def open_error(path: str, exc: serial.SerialException | OSError) -> ConnectError:
    """One clear line for a port that cannot be opened."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or not os.path.exists(path):
        return ConnectError(
            f"serial port {path} does not exist; check the cable and the device path (ls /dev/serial/by-id/)"
        )
    if code in (errno.EAGAIN, errno.EBUSY) or "lock" in text.lower() or "busy" in text.lower():
        return ConnectError(f"serial port {path} is in use by another program; stop it or pick another port")
    if code == errno.EACCES or "ermission" in text:
        return ConnectError(f"no permission to open serial port {path}; add your user to the dialout group")
    return ConnectError(f"cannot open serial port {path}: {text}")


class SerialLink:
    """One open serial port, read and written from the running event loop.

    Not safe for concurrent requests on its own: every user of a shared port goes through one
    ``drivers.bus.SerialBus``, which serialises transactions.
    """

    def __init__(self, port: str, *, baud: int = 9600, parity: str = "N", bytesize: int = 8, stopbits: int = 1) -> None:
        self.port = port
        self.baud = baud
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        self.last_activity = 0.0  # loop time of the last byte sent or received
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._failure: TransportError | None = None
        self.received = 0  # bytes received since open, for statistics

    @property
    def label(self) -> str:
        return f"{self.port} @ {self.baud} baud"

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def char_time_s(self) -> float:
        return bits_per_char(bytesize=self.bytesize, parity=self.parity, stopbits=self.stopbits) / self.baud

    def open(self) -> None:
        """Open the port exclusively (no-op if open). Raises ``ConnectError`` saying why not."""
        if self._serial is not None:
            return
        loop = asyncio.get_running_loop()
        if not os.path.exists(self.port):
            raise open_error(self.port, FileNotFoundError(errno.ENOENT, "no such file", self.port))
        try:
            port = serial.Serial(
                self.port,
                baudrate=self.baud,
                parity=self.parity,
                bytesize=self.bytesize,
                stopbits=self.stopbits,
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise open_error(self.port, exc) from exc
        fd = port.fileno()
        os.set_blocking(fd, False)
        self._serial, self._fd, self._loop = port, fd, loop
        self._buffer.clear()
        self._failure = None
        self._arrived = asyncio.Event()
        self.last_activity = loop.time()
        loop.add_reader(fd, self._readable)
        log.debug("opened %s", self.label)

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()
        self._fd = -1
        self._buffer.clear()
        self._arrived.set()  # wake a reader so it sees the link is closed
        log.debug("closed %s", self.label)

    def _fail(self, exc: OSError | None) -> None:
        why = f"{exc.strerror or exc}" if exc is not None else "the port was hung up"
        self._failure = TransportError(f"serial port {self.port}: lost ({why}); unplugged adapter?")
        log.debug("%s: %s", self.label, self._failure)
        self.close()

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the adapter went away, or the other end of a pty closed
            self._fail(exc)
            return
        if not data:
            self._fail(None)
            return
        assert self._loop is not None
        self.last_activity = self._loop.time()
        self.received += len(data)
        self._buffer += data
        if len(self._buffer) > MAX_BUFFERED:
            del self._buffer[: len(self._buffer) - MAX_BUFFERED]
        self._arrived.set()

    def _check_open(self) -> None:
        if self._serial is None:
            raise self._failure or TransportError(f"serial port {self.port} is not open")

    def flush_input(self) -> int:
        """Drop every byte received so far (late replies, padding frames); return how many."""
        self._check_open()
        dropped = len(self._buffer)
        self._buffer.clear()
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(self._fd, termios.TCIFLUSH)
        while True:  # bytes the kernel had already handed over but the loop has not read yet
            try:
                data = os.read(self._fd, _READ_SIZE)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            dropped += len(data)
        self._arrived.clear()
        return dropped

    async def write(self, data: bytes) -> None:
        """Send ``data`` completely; raises ``TransportError`` if the port fails."""
        self._check_open()
        assert self._loop is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._fail(exc)
                self._check_open()
                return
            view = view[written:]
            if view:
                ready = self._loop.create_future()
                self._loop.add_writer(self._fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    if self._serial is not None:
                        self._loop.remove_writer(self._fd)
        self.last_activity = self._loop.time()

    async def read_until(self, consume: Callable[[bytes], bool], *, timeout_s: float) -> int:
        """Hand every received chunk to ``consume`` until it returns True; return bytes consumed.

        Raises ``ResponseTimeoutError`` if nothing at all arrived within ``timeout_s``. If bytes
        arrived but ``consume`` never said done by then, returns normally (the caller knows what
        it got and reports a framing problem rather than silence).
        """
        self._check_open()
        assert self._loop is not None
        deadline = self._loop.time() + timeout_s
        taken = 0
        while True:
            if self._buffer:
                chunk = bytes(self._buffer)
                self._buffer.clear()
                taken += len(chunk)
                if consume(chunk):
                    return taken
            self._arrived.clear()
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
            self._check_open()
        if taken == 0:
            raise ResponseTimeoutError(f"{self.label}: no answer within {timeout_s:g} s")
        return taken
