"""The project's Modbus/TCP client (``ModbusLink`` on a socket endpoint) over real sockets.

Interoperability is proven against pymodbus's own server (a third-party implementation of the
same protocol), and every failure against the simulator's fault injection: exceptions, silence,
damaged and late replies, a dropped connection and a stream that loses its framing. After each
fault the link must answer the next request with that request's own data.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer as PymodbusTcpServer

from daq.errors import ConnectError, DeviceExceptionError, ProtocolError, ResponseTimeoutError, TransportError
from drivers.modbus.codec import (
    ExceptionCode,
    WriteMultipleRegistersRequest,
    WriteSingleCoilRequest,
    WriteSingleRegisterRequest,
    tcp_frame,
)
from drivers.modbus.driver import ModbusLink, TcpEndpoint
from simulators.modbus_faults import ModbusFaults
from simulators.modbus_server import ModbusTcpServer, RegisterImageUnit
from tests.servers import free_port

TIMEOUT_S = 0.4


def words(data: bytes | tuple[bool, ...]) -> list[int]:
    assert isinstance(data, bytes)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def make_unit() -> RegisterImageUnit:
    return RegisterImageUnit(
        holding={a: a * 10 for a in range(200)},
        input_registers={a: 1000 + a for a in range(130)},
        coils={a: a % 2 == 0 for a in range(40)},
        discrete_inputs={a: a % 3 == 0 for a in range(40)},
    )


@contextlib.asynccontextmanager
async def simulator_link(**faults: object) -> AsyncIterator[tuple[ModbusLink, ModbusTcpServer, RegisterImageUnit]]:
    unit = make_unit()
    async with ModbusTcpServer({1: unit}, faults=ModbusFaults(**faults)) as server:  # type: ignore[arg-type]
        link = ModbusLink(TcpEndpoint("127.0.0.1", server.port, timeout_s=TIMEOUT_S))
        await link.connect()
        try:
            yield link, server, unit
        finally:
            link.close()


# --------------------------------------------------------------------------- interoperability


@contextlib.asynccontextmanager
async def pymodbus_server() -> AsyncIterator[int]:
    """pymodbus's server on a free port. Its data blocks are addressed from 1 (address + 1)."""
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [a % 2 == 1 for a in range(100)]),
        di=ModbusSequentialDataBlock(1, [a % 3 == 0 for a in range(100)]),
        hr=ModbusSequentialDataBlock(1, [7 * a for a in range(200)]),
        ir=ModbusSequentialDataBlock(1, [40000 + a for a in range(200)]),
    )
    port = free_port()
    server = PymodbusTcpServer(ModbusServerContext(devices={3: device}, single=False), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.01)
        yield port
    finally:
        await server.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reads_and_writes_against_pymodbus_server() -> None:
    async with pymodbus_server() as port:
        link = ModbusLink(TcpEndpoint("127.0.0.1", port, timeout_s=2.0))
        try:
            assert words(await link.read("holding", 0, 125, unit=3)) == [7 * a for a in range(125)]
            assert words(await link.read("input", 10, 3, unit=3)) == [40010, 40011, 40012]
            assert await link.read("coil", 0, 11, unit=3) == tuple(a % 2 == 1 for a in range(11))
            assert await link.read("discrete", 5, 4, unit=3) == (False, True, False, False)
            await link.write(WriteSingleRegisterRequest(4, 0xBEEF), unit=3)
            await link.write(WriteMultipleRegistersRequest(20, (1, 2, 65535)), unit=3)
            await link.write(WriteSingleCoilRequest(0, True), unit=3)
            assert words(await link.read("holding", 20, 3, unit=3)) == [1, 2, 65535]
            # What we wrote, as pymodbus's own client reads it back.
            other = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0)
            assert await other.connect()
            try:
                assert (await other.read_holding_registers(4, count=1, device_id=3)).registers == [0xBEEF]
                assert (await other.read_coils(0, count=1, device_id=3)).bits[0] is True
            finally:
                other.close()
            assert await link.read("coil", 0, 1, unit=3) == (True,)
            with pytest.raises(DeviceExceptionError) as refused:
                await link.read("holding", 190, 30, unit=3)  # past the end of the block
            assert refused.value.code == ExceptionCode.ILLEGAL_DATA_ADDRESS
            assert f"127.0.0.1:{port}: device 3 answered exception 2 (illegal data address)" in str(refused.value)
        finally:
            link.close()


async def test_overlapping_requests_on_one_connection_get_their_own_answers() -> None:
    async with simulator_link() as (link, _, _):
        native = link._native
        assert native is not None
        # Bypass the link's arbiter lock: many requests in flight, answers matched by transaction id.
        pdus = await asyncio.gather(*(native.read(1, 3, a, 2) for a in range(60)))
        assert [words(p[2:]) for p in pdus] == [[10 * a, 10 * (a + 1)] for a in range(60)]


# ------------------------------------------------------------------------------------ faults


async def test_exception_response_is_a_device_exception_with_its_code_and_serving_continues() -> None:
    async with simulator_link(exception_next=1, exception_code=ExceptionCode.SERVER_DEVICE_BUSY) as (link, _, _):
        with pytest.raises(DeviceExceptionError) as refused:
            await link.read("holding", 0, 2, unit=1)
        assert refused.value.code == ExceptionCode.SERVER_DEVICE_BUSY
        assert "answered exception 6 (server device busy)" in str(refused.value)
        assert words(await link.read("holding", 1, 2, unit=1)) == [10, 20]


async def test_refused_write_is_a_device_exception_and_changes_nothing() -> None:
    async with simulator_link() as (link, server, unit):
        server.faults.exception_at[("holding", 5)] = ExceptionCode.ILLEGAL_DATA_ADDRESS
        with pytest.raises(DeviceExceptionError):
            await link.write(WriteSingleRegisterRequest(5, 1), unit=1)
        assert unit.tables["holding"][5] == 50
        await link.write(WriteSingleRegisterRequest(6, 1), unit=1)
        assert unit.tables["holding"][6] == 1


async def test_silence_is_a_timeout_and_the_late_reply_never_answers_the_next_request() -> None:
    async with simulator_link() as (link, server, _):
        server.faults.reply_delay_s = TIMEOUT_S * 1.5
        with pytest.raises(ResponseTimeoutError, match="no answer within"):
            await link.read("holding", 2, 1, unit=1)
        server.faults.reply_delay_s = 0
        # The late answer (address 2) arrives while this request (address 7) waits: it is dropped.
        assert words(await link.read("holding", 7, 1, unit=1)) == [70]
        native = link._native
        assert native is not None
        async with asyncio.timeout(5):
            while native.late_replies < 1:  # noqa: ASYNC110 (a counter, no event to wait on)
                await asyncio.sleep(0.01)
        assert native.late_replies == 1
        assert words(await link.read("holding", 8, 1, unit=1)) == [80]


async def test_unanswered_request_times_out_and_the_link_stays_usable() -> None:
    async with simulator_link(silent_next=1) as (link, _, _):
        with pytest.raises(ResponseTimeoutError):
            await link.read("input", 0, 4, unit=1)
        assert words(await link.read("input", 0, 4, unit=1)) == [1000, 1001, 1002, 1003]


async def test_truncated_reply_times_out_drops_the_link_and_is_never_taken_for_data() -> None:
    async with simulator_link(truncate_next=1, truncate_keep=9) as (link, _, _):
        with pytest.raises(ResponseTimeoutError):
            await link.read("holding", 0, 3, unit=1)
        # The partial frame would corrupt the next reply's framing: the link is dropped instead.
        assert not link.connected
        assert words(await link.read("holding", 3, 2, unit=1)) == [30, 40]


async def test_bad_mbap_header_drops_the_link_and_a_reconnect_serves_again() -> None:
    async with simulator_link(bad_crc_next=1) as (link, server, _):  # over TCP: a bad protocol id
        with pytest.raises(TransportError, match="bad MBAP header"):
            await link.read("holding", 0, 3, unit=1)
        assert not link.connected
        assert words(await link.read("holding", 0, 3, unit=1)) == [0, 10, 20]  # read() reconnects
        assert server.stats.connections == 2


async def test_dropped_connection_is_a_transport_error_then_reconnects() -> None:
    async with simulator_link(drop_connection_next=1) as (link, server, _):
        with pytest.raises(TransportError, match="connection lost"):
            await link.read("holding", 0, 1, unit=1)
        assert not link.connected
        assert words(await link.read("holding", 1, 1, unit=1)) == [10]
        assert server.stats.connections == 2


async def test_unit_without_a_device_behind_the_gateway_is_refused_with_its_code() -> None:
    async with simulator_link() as (link, _, _):
        with pytest.raises(DeviceExceptionError) as refused:
            await link.read("holding", 0, 1, unit=9)
        assert refused.value.code == ExceptionCode.GATEWAY_TARGET_FAILED


async def test_answer_from_another_unit_is_a_protocol_error_not_data() -> None:
    handler_done = asyncio.Event()

    async def wrong_unit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                await reader.readexactly(length - 1)
                writer.write(tcp_frame(tid, unit + 1, bytes([3, 2, 0, 42])))
        writer.close()
        handler_done.set()

    server = await asyncio.start_server(wrong_unit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ModbusLink(TcpEndpoint("127.0.0.1", port, timeout_s=TIMEOUT_S))
    try:
        with pytest.raises(ProtocolError, match="asked unit 1, unit 2 answered"):
            await link.read("holding", 0, 1, unit=1)
    finally:
        link.close()
        async with asyncio.timeout(5):
            await handler_done.wait()  # the handler sees our close as EOF
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_one_connect_error_naming_the_endpoint() -> None:
    port = free_port()
    link = ModbusLink(TcpEndpoint("127.0.0.1", port, timeout_s=TIMEOUT_S))
    with pytest.raises(ConnectError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        await link.read("holding", 0, 1, unit=1)
    assert not link.connected


async def test_cancelled_read_leaves_no_pending_request() -> None:
    async with simulator_link() as (link, server, _):
        server.faults.reply_delay_s = TIMEOUT_S / 2
        task = asyncio.create_task(link.read("holding", 0, 1, unit=1))
        await asyncio.sleep(TIMEOUT_S / 8)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        native = link._native
        assert native is not None and not native._pending
        server.faults.reply_delay_s = 0
        assert words(await link.read("holding", 4, 1, unit=1)) == [40]
