"""A pseudo-terminal pair standing in for a serial line, for simulated serial devices.

The simulator owns the master side; a client (pyserial, pymodbus) opens ``port_path``, the slave
tty, as if it were ``/dev/ttyUSB0``. Both sides are raw (no echo, no newline translation). We keep
our own descriptor of the slave open for the link's lifetime so the master never sees a hang-up
(EIO) while no client has the port open; clients may come and go.

A pty moves bytes instantly whatever baud rate the client sets; pacing, if wanted, is the
simulator's job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)

_READ_SIZE = 4096


class PtyLink:
    """Master side of a raw pty pair, read and written from the running event loop."""

    def __init__(self) -> None:
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self._master_fd, False)
        self.port_path: str = os.ttyname(self._slave_fd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self._pending = bytearray()
        self._closed = False

    def start(self, on_data: Callable[[bytes], None]) -> None:
        """Call ``on_data`` from the event loop with every chunk the client writes."""
        self._loop = asyncio.get_running_loop()
        self._on_data = on_data
        self._loop.add_reader(self._master_fd, self._read_ready)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client; never blocks (the pty buffer is a few KiB)."""
        if self._closed or not data:
            return
        if self._pending:
            self._pending += data
            return
        written = self._write_some(data)
        if written < len(data):
            self._pending += data[written:]
            if self._loop is not None:
                self._loop.add_writer(self._master_fd, self._write_ready)

    def discard_output(self) -> None:
        """Drop bytes queued but not yet handed to the pty."""
        if self._pending and self._loop is not None:
            self._loop.remove_writer(self._master_fd)
        self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._master_fd)
            self._loop.remove_writer(self._master_fd)
        os.close(self._master_fd)
        os.close(self._slave_fd)

    def __enter__(self) -> PtyLink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write_some(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self._master_fd, data)
        except BlockingIOError:
            return 0

    def _write_ready(self) -> None:
        written = self._write_some(self._pending)
        del self._pending[:written]
        if not self._pending and self._loop is not None:
            self._loop.remove_writer(self._master_fd)

    def _read_ready(self) -> None:
        try:
            data = os.read(self._master_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO if every slave descriptor closed; ours stays open, so rare
            logger.warning("pty %s: read failed (%s); no longer reading", self.port_path, exc)
            if self._loop is not None:
                self._loop.remove_reader(self._master_fd)
            return
        if data and self._on_data is not None:
            self._on_data(data)
