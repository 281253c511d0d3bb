"""Modbus server endpoints for simulated devices: TCP, RTU over TCP, RTU on a pseudo-terminal.

Simulators plug in behaviour as ``ModbusUnit`` objects (one per unit id); the server does the
wire: decoding with the drivers' pure codec, routing by unit id, answering in order, and
injecting faults (``simulators.modbus_faults``) at the byte level.

Unit id routing, chosen to match real equipment:

- Modbus/TCP (``framing="socket"``): a request for a unit id we do not have is answered with
  exception 0x0B (gateway target device failed to respond), as a TCP-to-RTU gateway does.
- RTU (``framing="rtu"`` over TCP, and the pty bus): unknown unit ids get no reply (another
  device on the bus may own them); unit 0 is broadcast: writes go to every unit, nobody replies.

A request is executed when it arrives, so data-model effects keep request order even when the
reply is delayed. Replies on one connection (or the one pty bus) leave in request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, Protocol, Self, cast

from daq.errors import ProtocolError
from drivers.modbus.codec import (
    ExceptionCode,
    ExceptionResponse,
    Frame,
    FrameError,
    PduError,
    ReadBitsResponse,
    ReadRegistersResponse,
    ReadRequest,
    Request,
    Response,
    RtuFrameDecoder,
    Table,
    TcpFrameDecoder,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteMultipleRegistersResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
    rtu_char_time_s,
    rtu_frame,
    rtu_frame_gap_s,
    tcp_frame,
)
from simulators.modbus_faults import NO_FAULT, FaultPlan, Framing, ModbusFaults
from simulators.pty_link import PtyLink

logger = logging.getLogger(__name__)

BROADCAST_UNIT = 0


# ---------------------------------------------------------------------------- the data model


class UnitError(Exception):
    """Raised by a ``ModbusUnit`` to refuse a request; the client gets exception ``code``."""

    default_code: ClassVar[ExceptionCode] = ExceptionCode.SERVER_DEVICE_FAILURE

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        self.code = self.default_code if code is None else code
        super().__init__(message)


class IllegalFunction(UnitError):
    default_code = ExceptionCode.ILLEGAL_FUNCTION


class IllegalAddress(UnitError):
    default_code = ExceptionCode.ILLEGAL_DATA_ADDRESS


class IllegalValue(UnitError):
    default_code = ExceptionCode.ILLEGAL_DATA_VALUE


class DeviceFailure(UnitError):
    default_code = ExceptionCode.SERVER_DEVICE_FAILURE


class DeviceBusy(UnitError):
    default_code = ExceptionCode.SERVER_DEVICE_BUSY


class ModbusUnit(Protocol):
    """What a simulated device exposes to the server. Raise ``UnitError`` subclasses to refuse.

    ``read`` returns ``count`` ints 0..65535 for "holding"/"input", bools for "coil"/"discrete".
    ``write`` gets ints for "holding", bools for "coil".
    """

    def read(self, table: Table, address: int, count: int) -> Sequence[int] | Sequence[bool]: ...

    def write(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> None: ...


WriteCallback = Callable[[Table, int, list[int] | list[bool]], None]


class RegisterImageUnit:
    """A unit backed by four sparse tables; unmapped addresses answer "illegal data address".

    ``on_write(table, address, values)`` runs before a write is stored and may raise a
    ``UnitError`` to refuse it (e.g. a setpoint out of range).
    """

    def __init__(
        self,
        *,
        coils: dict[int, bool] | None = None,
        discrete_inputs: dict[int, bool] | None = None,
        holding: dict[int, int] | None = None,
        input_registers: dict[int, int] | None = None,
        on_write: WriteCallback | None = None,
    ) -> None:
        self.tables: dict[Table, dict[int, int] | dict[int, bool]] = {
            "coil": dict(coils or {}),
            "discrete": dict(discrete_inputs or {}),
            "holding": dict(holding or {}),
            "input": dict(input_registers or {}),
        }
        self.on_write = on_write

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        cells = self.tables[table]
        try:
            return [cells[a] for a in range(address, address + count)]  # type: ignore[return-value]
        except KeyError as exc:
            raise IllegalAddress(f"{table} address {exc.args[0]} is not mapped") from None

    def write(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        if table not in ("coil", "holding"):
            raise IllegalFunction(f"{table} table is read-only")
        cells = self.tables[table]
        for a in range(address, address + len(values)):
            if a not in cells:
                raise IllegalAddress(f"{table} address {a} is not mapped")
        if self.on_write is not None:
            self.on_write(table, address, list(values))
        for offset, value in enumerate(values):
            cells[address + offset] = value  # type: ignore[assignment]


def execute(unit: ModbusUnit, request: Request) -> Response:
    """Run ``request`` against ``unit``. Refusals and unit bugs become exception responses."""
    function = request.function
    try:
        if isinstance(request, ReadRequest):
            values = unit.read(request.table, request.address, request.count)
            if len(values) != request.count:
                raise DeviceFailure(f"unit returned {len(values)} values for a read of {request.count}")
            if function <= 2:
                return ReadBitsResponse(function, tuple(bool(v) for v in values))
            return ReadRegistersResponse(function, tuple(values))  # checks 0..65535
        if isinstance(request, WriteSingleCoilRequest):
            unit.write("coil", request.address, [request.value])
            return WriteSingleCoilResponse(request.address, request.value)
        if isinstance(request, WriteSingleRegisterRequest):
            unit.write("holding", request.address, [request.value])
            return WriteSingleRegisterResponse(request.address, request.value)
        if isinstance(request, WriteMultipleCoilsRequest):
            unit.write("coil", request.address, list(request.values))
            return WriteMultipleCoilsResponse(request.address, len(request.values))
        unit.write("holding", request.address, list(request.values))
        return WriteMultipleRegistersResponse(request.address, len(request.values))
    except UnitError as exc:
        return ExceptionResponse(function, exc.code)
    except Exception:
        logger.exception("unit %r failed on %s; answering server device failure", unit, request)
        return ExceptionResponse(function, ExceptionCode.SERVER_DEVICE_FAILURE)


# ------------------------------------------------------------------------------ request handling


@dataclass(slots=True)
class ServerStats:
    """Counters for tests and benchmarks."""

    requests: int = 0  # well-formed requests addressed to one of our units
    replies: int = 0  # replies handed to the transport (faulty ones included)
    refused: int = 0  # malformed requests answered with an exception
    frame_errors: int = 0  # garbage, bad CRC or bad MBAP header seen on the wire
    ignored: int = 0  # requests for unit ids we do not have, and RTU broadcasts
    connections: int = 0  # TCP connections accepted so far


@dataclass(frozen=True, slots=True)
class _Reply:
    data: bytes = b""
    delay_s: float = 0.0
    drop_connection: bool = False


_CLOSE = _Reply(drop_connection=True)


class _Dispatcher:
    """Turns decoded requests into reply bytes: routing, execution, faults. No I/O."""

    def __init__(
        self,
        units: dict[int, ModbusUnit],
        *,
        framing: Framing,
        can_drop: bool,
        faults: ModbusFaults,
        unit_faults: dict[int, ModbusFaults],
        stats: ServerStats,
    ) -> None:
        self.units = units
        self.framing = framing
        self.can_drop = can_drop  # a TCP connection can be dropped; the pty bus cannot
        self.faults = faults
        self.unit_faults = unit_faults
        self.stats = stats

    def reply_to(self, item: Frame | ProtocolError) -> _Reply | None:
        if isinstance(item, Frame):
            request = cast(Request, item.message)  # decoded by a requests decoder
            return self._answer(item.unit_id, item.transaction_id, request.function, request, None)
        if isinstance(item, PduError) and item.unit_id is not None:
            return self._answer(item.unit_id, item.transaction_id, item.function, None, item.exception_code)
        self.stats.frame_errors += 1
        # A bad MBAP header leaves a TCP stream unframed; RTU resynchronises by itself.
        return _CLOSE if self.framing == "socket" and isinstance(item, FrameError) else None

    def _answer(
        self,
        unit_id: int,
        transaction_id: int,
        function: int,
        request: Request | None,
        refusal: int | None,
    ) -> _Reply | None:
        """Reply to a request, or to a malformed one (``request`` None) with ``refusal``."""
        unit = self.units.get(unit_id)
        if unit is None:
            self.stats.ignored += 1
            if self.framing == "socket":
                return self._encode(
                    ExceptionResponse(function, ExceptionCode.GATEWAY_TARGET_FAILED), unit_id, transaction_id
                )
            if unit_id == BROADCAST_UNIT and request is not None and not isinstance(request, ReadRequest):
                for each in self.units.values():
                    execute(each, request)
            return None

        plan = self.unit_faults.get(unit_id, self.faults).plan(request)
        if plan.drop_connection:
            return _CLOSE if self.can_drop else None
        if plan.silent:
            return None
        response: Response
        if plan.exception_code is not None:
            response = ExceptionResponse(function, plan.exception_code)
        elif request is None:
            self.stats.refused += 1
            response = ExceptionResponse(function, refusal or ExceptionCode.ILLEGAL_FUNCTION)
        else:
            self.stats.requests += 1
            response = execute(unit, request)
        return self._encode(response, unit_id, transaction_id, plan)

    def _encode(self, response: Response, unit_id: int, transaction_id: int, plan: FaultPlan = NO_FAULT) -> _Reply:
        pdu = response.encode()
        if self.framing == "rtu":
            frame = rtu_frame(unit_id, pdu)
        else:
            frame = tcp_frame(transaction_id, unit_id, pdu)
        if plan is not NO_FAULT:
            frame = plan.mangle(frame, framing=self.framing)
        return _Reply(frame, plan.delay_s)


class _Session:
    """One byte stream (a TCP connection, or the pty bus): decode, answer in order, delay, close."""

    def __init__(
        self,
        dispatcher: _Dispatcher,
        *,
        send: Callable[[bytes], None],
        close: Callable[[], None],
        name: str,
        baud: int | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        decoder_type = RtuFrameDecoder if dispatcher.framing == "rtu" else TcpFrameDecoder
        self._decoder = decoder_type(expect="requests")
        self._send = send
        self._close = close
        self._name = name
        self._char_s = rtu_char_time_s(baud) if baud else 0.0
        self._gap_s = rtu_frame_gap_s(baud) if baud else 0.0
        self._queue: deque[_Reply] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def feed(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if self._closed:
                return
            reply = self._dispatcher.reply_to(item)
            if reply is None:
                continue
            if self._char_s:
                # A pty is instant: wait as long as the request and reply would take on the line.
                request_size = item.wire_size if isinstance(item, Frame) else 0
                wire_s = (request_size + len(reply.data)) * self._char_s + self._gap_s
                reply = _Reply(reply.data, reply.delay_s + wire_s, reply.drop_connection)
            if self._worker is None and reply.delay_s <= 0:
                self._deliver(reply)
            else:
                self._queue.append(reply)
                if self._worker is None:
                    self._worker = asyncio.get_running_loop().create_task(
                        self._deliver_queued(), name=f"{self._name}:replies"
                    )

    async def _deliver_queued(self) -> None:
        try:
            while self._queue and not self._closed:
                reply = self._queue.popleft()
                if reply.delay_s > 0:
                    await asyncio.sleep(reply.delay_s)
                self._deliver(reply)
        finally:
            self._worker = None

    def _deliver(self, reply: _Reply) -> None:
        if reply.drop_connection:
            self.close()
            self._close()
            return
        self._send(reply.data)
        self._dispatcher.stats.replies += 1

    def close(self) -> asyncio.Task[None] | None:
        """Stop answering; returns the reply task being cancelled, if any, to await."""
        self._closed = True
        self._queue.clear()
        worker = self._worker
        if worker is not None and worker is not asyncio.current_task():
            worker.cancel()
            return worker
        return None


async def _await_cancelled(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _server_parts(
    units: dict[int, ModbusUnit],
    framing: Framing,
    faults: ModbusFaults | None,
    unit_faults: dict[int, ModbusFaults] | None,
) -> tuple[ModbusFaults, dict[int, ModbusFaults], ServerStats]:
    if framing not in ("socket", "rtu"):
        raise ValueError(f'framing must be "socket" or "rtu", got {framing!r}')
    for unit_id in units:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id} not in 1..247")
    return (
        faults if faults is not None else ModbusFaults(),
        unit_faults if unit_faults is not None else {},  # kept, not copied: callers may add units later
        ServerStats(),
    )


# ------------------------------------------------------------------------------------- servers


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: ModbusTcpServer, name: str) -> None:
        self._server = server
        self._name = name
        self.transport: asyncio.Transport | None = None
        self.session: _Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.session = _Session(self._server.dispatcher, send=transport.write, close=transport.close, name=self._name)
        self._server.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        assert self.session is not None
        self.session.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.close()
        self._server.connection_closed(self)


class ModbusTcpServer:
    """Modbus over TCP for simulated devices; ``framing="rtu"`` serves RTU frames over TCP.

    Many concurrent connections; each is answered in its own request order. ``faults`` apply
    to every unit without an entry in ``unit_faults``; both can be changed while running.
    """

    def __init__(
        self,
        units: dict[int, ModbusUnit],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framing: Literal["socket", "rtu"] = "socket",
        faults: ModbusFaults | None = None,
        unit_faults: dict[int, ModbusFaults] | None = None,
    ) -> None:
        self.faults, self.unit_faults, self.stats = _server_parts(units, framing, faults, unit_faults)
        self.dispatcher = _Dispatcher(
            units,
            framing=framing,
            can_drop=True,
            faults=self.faults,
            unit_faults=self.unit_faults,
            stats=self.stats,
        )
        self.host = host
        self.port = port
        self.framing = framing
        self._server: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._names = itertools.count(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpConnection(self, f"modbus-tcp:{self.port}:conn{next(self._names)}"),
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("Modbus %s server on %s:%d, units %s", self.framing, self.host, self.port, sorted(self.units))

    @property
    def units(self) -> dict[int, ModbusUnit]:
        return self.dispatcher.units

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        workers = []
        for connection in list(self._connections):
            if connection.session is not None and (worker := connection.session.close()) is not None:
                workers.append(worker)
            if connection.transport is not None:
                connection.transport.close()
        await _await_cancelled(workers)
        await self._all_closed.wait()
        await server.wait_closed()

    def connection_opened(self, connection: _TcpConnection) -> None:
        self._connections.add(connection)
        self._all_closed.clear()
        self.stats.connections += 1

    def connection_closed(self, connection: _TcpConnection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_closed.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class ModbusRtuPtyServer:
    """Modbus RTU on a pseudo-terminal: one simulated RS-485 bus with every unit in ``units``.

    Clients open ``port_path`` (set by ``start``). With ``baud`` set, each reply is held back as
    long as the request and the reply would take on a real line at that rate (10 bits per
    character, 8N1) plus the 3.5-character inter-frame gap, because a pty ignores baud rates.
    ``drop_connection`` faults have no connection to drop here and act as silence.
    """

    def __init__(
        self,
        units: dict[int, ModbusUnit],
        *,
        baud: int | None = None,
        faults: ModbusFaults | None = None,
        unit_faults: dict[int, ModbusFaults] | None = None,
    ) -> None:
        if baud is not None and baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        self.faults, self.unit_faults, self.stats = _server_parts(units, "rtu", faults, unit_faults)
        self.dispatcher = _Dispatcher(
            units,
            framing="rtu",
            can_drop=False,
            faults=self.faults,
            unit_faults=self.unit_faults,
            stats=self.stats,
        )
        self.baud = baud
        self.port_path: str = ""
        self._link: PtyLink | None = None
        self._session: _Session | None = None

    @property
    def units(self) -> dict[int, ModbusUnit]:
        return self.dispatcher.units

    async def start(self) -> None:
        link = PtyLink()
        self._link = link
        self.port_path = link.port_path
        self._session = _Session(
            self.dispatcher,
            send=link.write,
            close=link.discard_output,
            name=f"modbus-pty:{link.port_path}",
            baud=self.baud,
        )
        link.start(self._session.feed)
        logger.info("Modbus RTU bus on %s, units %s", self.port_path, sorted(self.units))

    async def stop(self) -> None:
        if self._link is None:
            return
        link, self._link = self._link, None
        if self._session is not None and (worker := self._session.close()) is not None:
            await _await_cancelled([worker])
        link.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
