"""Modbus/TCP client: the project's codec over an asyncio protocol (ADR 0016).

A thin I/O shell: frames are built and checked by ``drivers.modbus.codec``; this module only
writes them, matches answers to requests by transaction id and turns the socket's failures into
the project's errors. A reply that arrives after its request timed out carries a transaction id
nobody waits for any more and is dropped, so a slow device can never answer the wrong request.

Why not pymodbus here: its client decodes a register response one ``struct.unpack`` per register
and runs a transaction manager per request; for a 64-value poll that was about half of the
bench's CPU per poll (docs/benchmarks.md). Modbus RTU (serial, or RTU frames over TCP) still
goes through pymodbus.
"""

from __future__ import annotations

import asyncio

from daq.errors import ConnectError, ProtocolError, ResponseTimeoutError, TransportError
from drivers.modbus.codec import split_mbap_frames, tcp_frame, tcp_read_frame


class ModbusTcpClient:
    """One TCP connection to a Modbus/TCP server; requests may overlap (transaction ids)."""

    def __init__(self, host: str, port: int, *, timeout_s: float, label: str) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.label = label
        self.late_replies = 0  # answers that came after their request had timed out
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._tid = 0
        self._buffer = bytearray()

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                transport, _ = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        except TimeoutError:
            raise ConnectError(f"cannot connect to {self.label}: no answer within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.label}: {exc.strerror or exc}") from None
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_pending(TransportError(f"{self.label}: connection closed"))

    async def read(self, unit_id: int, function: int, address: int, count: int) -> bytes:
        """The response PDU to a read request (function 1-4), matched by transaction id."""
        tid = self._next_tid()
        return await self._exchange(tid, unit_id, tcp_read_frame(tid, unit_id, function, address, count))

    async def request(self, unit_id: int, pdu: bytes) -> bytes:
        """The response PDU to any request PDU (writes, identification reads)."""
        tid = self._next_tid()
        return await self._exchange(tid, unit_id, tcp_frame(tid, unit_id, pdu))

    def _next_tid(self) -> int:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        return tid

    async def _exchange(self, tid: int, unit_id: int, frame: bytes) -> bytes:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise TransportError(f"{self.label}: not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._pending[tid] = future
        timer = loop.call_later(self.timeout_s, _expire, future)
        try:
            transport.write(frame)
            answered_unit, pdu = await future
        except TimeoutError:
            if self._buffer:  # part of a frame came: the stream's framing cannot be trusted any more
                self._lost(ProtocolError(f"{self.label}: incomplete reply ({len(self._buffer)} bytes)"))
            raise ResponseTimeoutError(f"{self.label}: no answer within {self.timeout_s} s") from None
        finally:
            timer.cancel()
            if self._pending.get(tid) is future:
                del self._pending[tid]
        if answered_unit != unit_id:
            raise ProtocolError(f"{self.label}: asked unit {unit_id}, unit {answered_unit} answered")
        return pdu

    # -- protocol callbacks --------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        self._buffer += data
        frames, lost = split_mbap_frames(self._buffer)
        pending = self._pending
        for tid, unit_id, pdu in frames:
            future = pending.pop(tid, None)
            if future is not None and not future.done():
                future.set_result((unit_id, pdu))
            else:
                self.late_replies += 1
        if lost is not None:  # the stream cannot be resynchronised: drop the link
            self._lost(ProtocolError(f"{self.label}: {lost}"))

    def _lost(self, exc: BaseException | None) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        reason = str(exc) if exc is not None else "closed by the device"
        self._fail_pending(TransportError(f"{self.label}: connection lost ({reason})"))
        self._buffer.clear()

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


def _expire(future: asyncio.Future[tuple[int, bytes]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Protocol(asyncio.Protocol):
    def __init__(self, client: ModbusTcpClient) -> None:
        self._client = client
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client._transport is self._transport:  # not an old connection closing late
            self._client._lost(exc)
