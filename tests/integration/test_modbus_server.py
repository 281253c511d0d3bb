"""The simulators' Modbus endpoints against pymodbus 3.16 clients, over real sockets and ptys.

Interoperability with an independent implementation: pymodbus's clients against our server over
Modbus/TCP, RTU framing over TCP, and RTU on a pseudo-terminal with a serial client (our own
Modbus/TCP client is tested against pymodbus's server in test_modbus_tcp_client.py). Every fault must be
visible to pymodbus as the matching error, and the server must keep serving afterwards. Raw-socket
tests pin the faulty bytes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from drivers.modbus.codec import (
    CrcError,
    ExceptionCode,
    ExceptionResponse,
    Frame,
    FrameError,
    FunctionCode,
    ReadRegistersResponse,
    ReadRequest,
    RtuFrameDecoder,
    Table,
    WriteSingleRegisterRequest,
    encode_rtu,
    encode_tcp,
    rtu_frame,
)
from simulators.modbus_faults import FaultPlan, ModbusFaults
from simulators.modbus_server import (
    IllegalValue,
    ModbusRtuPtyServer,
    ModbusTcpServer,
    RegisterImageUnit,
    execute,
)

CLIENT_TIMEOUT_S = 0.5  # faults make the client wait this out; generous for localhost replies
HOLDING = FunctionCode.READ_HOLDING_REGISTERS
Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def make_unit(*, base: int = 0, **kwargs: object) -> RegisterImageUnit:
    return RegisterImageUnit(
        holding={a: base + a * 10 for a in range(200)},
        input_registers={a: base + 1000 + a for a in range(50)},
        coils={a: a % 2 == 0 for a in range(2000)},
        discrete_inputs={a: a % 3 == 0 for a in range(64)},
        **kwargs,  # type: ignore[arg-type]
    )


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition with a deadline (server counters and pymodbus state have no events)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    # pymodbus finishes closing on the next loop turns; give it a bounded moment.
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: not (asyncio.all_tasks() - {current}), timeout_s=1.0)
    assert not [t.get_name() for t in asyncio.all_tasks() - {current}]


# ------------------------------------------------------------------------------- endpoints

TRANSPORTS = ["tcp", "rtu-over-tcp", "rtu-pty"]


@dataclass
class Bench:
    server: ModbusTcpServer | ModbusRtuPtyServer
    client: Client
    units: dict[int, RegisterImageUnit]
    connection_events: list[bool]
    packets_received: list[bytes]

    @property
    def faults(self) -> ModbusFaults:
        return self.server.faults


@contextlib.asynccontextmanager
async def bench(
    transport: str,
    units: dict[int, RegisterImageUnit] | None = None,
    *,
    timeout_s: float = CLIENT_TIMEOUT_S,
    **server_options: object,
) -> AsyncIterator[Bench]:
    units = units if units is not None else {1: make_unit()}
    events: list[bool] = []
    received: list[bytes] = []

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if not sending:
            received.append(data)
        return data

    server: ModbusTcpServer | ModbusRtuPtyServer
    if transport == "rtu-pty":
        server = ModbusRtuPtyServer(units, **server_options)  # type: ignore[arg-type]
    else:
        framing = "rtu" if transport == "rtu-over-tcp" else "socket"
        server = ModbusTcpServer(units, framing=framing, **server_options)  # type: ignore[arg-type]
    async with server:
        client: Client
        if isinstance(server, ModbusRtuPtyServer):
            client = AsyncModbusSerialClient(
                server.port_path, baudrate=19200, timeout=timeout_s, retries=0, trace_packet=trace_packet
            )
        else:
            client = AsyncModbusTcpClient(
                "127.0.0.1",
                port=server.port,
                framer=FramerType.RTU if server.framing == "rtu" else FramerType.SOCKET,
                timeout=timeout_s,
                retries=0,
                trace_connect=events.append,
                trace_packet=trace_packet,
            )
        assert await client.connect()
        try:
            yield Bench(server, client, units, events, received)
        finally:
            client.close()


async def read_ok(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, address: int, count: int, unit: int = 1
) -> list[int]:
    response = await client.read_holding_registers(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


# ------------------------------------------------------------------------- normal operation


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reads_every_table(transport: str) -> None:
    async with bench(transport) as b:
        assert await read_ok(b.client, 3, 4) == [30, 40, 50, 60]
        inputs = await b.client.read_input_registers(0, count=3, device_id=1)
        assert inputs.registers == [1000, 1001, 1002]
        coils = await b.client.read_coils(1, count=5, device_id=1)
        assert coils.bits[:5] == [False, True, False, True, False]
        discrete = await b.client.read_discrete_inputs(0, count=7, device_id=1)
        assert discrete.bits[:7] == [True, False, False, True, False, False, True]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_writes_every_kind_and_reads_them_back(transport: str) -> None:
    async with bench(transport) as b:
        assert not (await b.client.write_register(7, 0xBEEF, device_id=1)).isError()
        assert not (await b.client.write_registers(10, [1, 2, 3], device_id=1)).isError()
        assert not (await b.client.write_coil(1, True, device_id=1)).isError()
        assert not (await b.client.write_coils(20, [True, True, True], device_id=1)).isError()
        assert await read_ok(b.client, 7, 6) == [0xBEEF, 80, 90, 1, 2, 3]
        coils = await b.client.read_coils(20, count=3, device_id=1)
        assert coils.bits[:3] == [True, True, True]
        unit = b.units[1]
        assert unit.tables["holding"][7] == 0xBEEF
        assert unit.tables["coil"][1] is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_spec_maximum_transfers(transport: str) -> None:
    async with bench(transport) as b:
        assert await read_ok(b.client, 0, 125) == [a * 10 for a in range(125)]
        coils = await b.client.read_coils(0, count=2000, device_id=1)
        assert coils.bits[:2000] == [a % 2 == 0 for a in range(2000)]
        assert not (await b.client.write_registers(0, list(range(123)), device_id=1)).isError()
        assert await read_ok(b.client, 0, 123) == list(range(123))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unmapped_address_answers_illegal_data_address(transport: str) -> None:
    async with bench(transport) as b:
        response = await b.client.read_holding_registers(199, count=2, device_id=1)
        assert response.isError()
        assert response.exception_code == ExceptionCode.ILLEGAL_DATA_ADDRESS
        assert await read_ok(b.client, 199, 1) == [1990]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unsupported_function_answers_illegal_function(transport: str) -> None:
    async with bench(transport) as b:
        response = await b.client.read_exception_status(device_id=1)  # function 7
        assert response.isError()
        assert response.exception_code == ExceptionCode.ILLEGAL_FUNCTION
        assert await read_ok(b.client, 0, 1) == [0]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unit_can_refuse_a_write(transport: str) -> None:
    def refuse_large(table: Table, address: int, values: list[int] | list[bool]) -> None:
        if any(v > 1000 for v in values):
            raise IllegalValue(f"{table} {address}: above 1000")

    async with bench(transport, {1: make_unit(on_write=refuse_large)}) as b:
        response = await b.client.write_register(5, 5000, device_id=1)
        assert response.isError()
        assert response.exception_code == ExceptionCode.ILLEGAL_DATA_VALUE
        assert await read_ok(b.client, 5, 1) == [50]
        assert not (await b.client.write_register(5, 999, device_id=1)).isError()
        assert await read_ok(b.client, 5, 1) == [999]


class BrokenUnit:
    """A simulator bug: returns register values that do not fit 16 bits."""

    def read(self, table: Table, address: int, count: int) -> list[int]:
        return [-1] * count

    def write(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        raise RuntimeError("boom")


async def test_unit_bug_answers_server_device_failure_and_serving_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with bench("tcp", {1: BrokenUnit(), 2: make_unit()}) as b:  # type: ignore[dict-item]
        for response in (
            await b.client.read_holding_registers(0, count=2, device_id=1),
            await b.client.write_register(0, 1, device_id=1),
        ):
            assert response.isError()
            assert response.exception_code == ExceptionCode.SERVER_DEVICE_FAILURE
        assert await read_ok(b.client, 1, 1, unit=2) == [10]
    assert "failed on" in caplog.text


async def test_tcp_unknown_unit_answers_gateway_target_failed() -> None:
    async with bench("tcp") as b:
        response = await b.client.read_holding_registers(0, count=1, device_id=9)
        assert response.isError()
        assert response.exception_code == ExceptionCode.GATEWAY_TARGET_FAILED


@pytest.mark.parametrize("transport", ["rtu-over-tcp", "rtu-pty"])
async def test_rtu_unknown_unit_gets_no_reply(transport: str) -> None:
    async with bench(transport) as b:
        with pytest.raises(ModbusIOException):
            await b.client.read_holding_registers(0, count=1, device_id=9)
        assert await read_ok(b.client, 2, 1) == [20]
        assert b.server.stats.ignored == 1


async def test_many_concurrent_tcp_clients_get_their_own_answers() -> None:
    async with ModbusTcpServer({1: make_unit()}) as server:

        async def one_client(n: int) -> None:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=5, retries=0)
            assert await client.connect()
            try:
                for i in range(25):
                    address = (n * 25 + i) % 190
                    assert await read_ok(client, address, 3) == [address * 10, address * 10 + 10, address * 10 + 20]
            finally:
                client.close()

        async with asyncio.TaskGroup() as group:
            for n in range(10):
                group.create_task(one_client(n), name=f"client-{n}")
        assert server.stats.connections == 10
        assert server.stats.requests == 250


# ---------------------------------------------------------------------------------- pty bus


async def test_pty_bus_serves_two_units() -> None:
    units = {1: make_unit(), 2: make_unit(base=5)}
    async with bench("rtu-pty", units) as b:
        assert await read_ok(b.client, 0, 3, unit=1) == [0, 10, 20]
        assert await read_ok(b.client, 0, 3, unit=2) == [5, 15, 25]
        assert not (await b.client.write_register(0, 77, device_id=2)).isError()
        assert await read_ok(b.client, 0, 1, unit=2) == [77]
        assert await read_ok(b.client, 0, 1, unit=1) == [0]


async def test_pty_is_raw_so_control_bytes_pass_unchanged() -> None:
    # A cooked tty would translate CR/LF, swallow XON/XOFF and act on ^C and DEL.
    tricky = [0x0A0D, 0x1113, 0x7F03, 0x0D0A, 0x1A04]
    unit = RegisterImageUnit(holding=dict(enumerate(tricky)))
    async with bench("rtu-pty", {0x0A: unit}) as b:
        assert await read_ok(b.client, 0, 5, unit=0x0A) == tricky
        assert not (await b.client.write_registers(0, tricky[::-1], device_id=0x0A)).isError()
        assert [unit.tables["holding"][a] for a in range(5)] == tricky[::-1]


async def test_pty_broadcast_write_reaches_every_unit_and_gets_no_reply() -> None:
    units = {1: make_unit(), 2: make_unit(base=5)}
    async with bench("rtu-pty", units) as b:
        assert await b.client.write_register(3, 4242, device_id=0, no_response_expected=True) is None
        assert await read_ok(b.client, 3, 1, unit=1) == [4242]
        assert await read_ok(b.client, 3, 1, unit=2) == [4242]
        assert b.server.stats.replies == 2  # the two reads only


async def test_pty_bus_paced_at_9600_baud_still_answers() -> None:
    async with bench("rtu-pty", {1: make_unit(), 2: make_unit(base=5)}, baud=9600, timeout_s=3.0) as b:
        assert await read_ok(b.client, 0, 125, unit=2) == [5 + a * 10 for a in range(125)]
        assert await read_ok(b.client, 1, 1, unit=1) == [10]


async def test_per_unit_faults_on_one_bus() -> None:
    units = {1: make_unit(), 2: make_unit(base=5)}
    unit_faults = {2: ModbusFaults(silent=True)}
    async with bench("rtu-pty", units, unit_faults=unit_faults) as b:
        with pytest.raises(ModbusIOException):
            await b.client.read_holding_registers(0, count=1, device_id=2)
        assert await read_ok(b.client, 0, 1, unit=1) == [0]
        unit_faults[2].silent = False
        assert await read_ok(b.client, 0, 1, unit=2) == [5]


# ------------------------------------------------------------------------ faults via pymodbus


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exception_fault_reaches_client_as_its_code(transport: str) -> None:
    async with bench(transport) as b:
        b.faults.exception_next = 2
        b.faults.exception_code = ExceptionCode.SERVER_DEVICE_BUSY
        for _ in range(2):
            response = await b.client.read_holding_registers(0, count=1, device_id=1)
            assert response.isError()
            assert response.exception_code == ExceptionCode.SERVER_DEVICE_BUSY
        assert await read_ok(b.client, 0, 1) == [0]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exception_at_an_address_hits_only_requests_touching_it(transport: str) -> None:
    async with bench(transport) as b:
        b.faults.exception_at[("holding", 5)] = ExceptionCode.ILLEGAL_DATA_ADDRESS
        assert await read_ok(b.client, 0, 5) == [0, 10, 20, 30, 40]
        for response in (
            await b.client.read_holding_registers(4, count=3, device_id=1),
            await b.client.write_register(5, 1, device_id=1),
        ):
            assert response.isError()
            assert response.exception_code == ExceptionCode.ILLEGAL_DATA_ADDRESS
        assert b.units[1].tables["holding"][5] == 50  # a refused write is not executed
        inputs = await b.client.read_input_registers(5, count=1, device_id=1)  # other table
        assert inputs.registers == [1005]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["silent_next", "bad_crc_next", "truncate_next", "garbage_next"])
async def test_lost_or_damaged_reply_is_a_client_io_error_then_serving_continues(transport: str, fault: str) -> None:
    async with bench(transport) as b:
        setattr(b.faults, fault, 1)
        try:
            response = await b.client.read_holding_registers(0, count=3, device_id=1)
        except ModbusIOException:
            pass
        else:  # pymodbus may hunt past garbage; it must never deliver wrong values
            assert fault == "garbage_next"
            assert response.registers == [0, 10, 20]
        assert sum(b.faults.injected.values()) == 1
        assert await read_ok(b.client, 3, 2) == [30, 40]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_reply_within_timeout_arrives_and_beyond_it_times_out(transport: str) -> None:
    async with bench(transport) as b:
        b.faults.reply_delay_s = CLIENT_TIMEOUT_S / 5
        assert await read_ok(b.client, 1, 1) == [10]
        b.faults.reply_delay_s = CLIENT_TIMEOUT_S * 2
        with pytest.raises(ModbusIOException):
            await b.client.read_holding_registers(2, count=1, device_id=1)
        b.faults.reply_delay_s = 0
        # RTU has no transaction id: a reply arriving after the next request went out would be
        # taken as its answer. So let pymodbus receive (and drop) the late one first.
        received = len(b.packets_received)
        await wait_until(lambda: len(b.packets_received) > received)
        assert await read_ok(b.client, 3, 1) == [30]


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_dropped_connection_client_reconnects_and_is_served(transport: str) -> None:
    async with bench(transport) as b:
        b.faults.drop_connection_next = 1
        with pytest.raises(ModbusIOException):
            await b.client.read_holding_registers(0, count=1, device_id=1)
        assert False in b.connection_events  # pymodbus saw the connection go
        await wait_until(lambda: b.client.connected)
        assert await read_ok(b.client, 1, 1) == [10]
        assert b.server.stats.connections == 2


async def test_probabilistic_faults_are_deterministic_per_seed() -> None:
    outcomes = []
    for _ in range(2):
        async with bench("tcp", faults=ModbusFaults(seed=7, silence_rate=0.3), timeout_s=0.2) as b:
            run = []
            for _ in range(12):
                try:
                    await read_ok(b.client, 0, 1)
                    run.append(True)
                except ModbusIOException:
                    run.append(False)
            outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert True in outcomes[0] and False in outcomes[0]


# --------------------------------------------------------------------- faulty bytes on the wire


async def raw_exchange(port: int, request: bytes, size: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.readexactly(size)
    finally:
        writer.close()
        await writer.wait_closed()


READ_0_3 = ReadRequest(HOLDING, 0, 3)
GOOD_RTU_REPLY = encode_rtu(ReadRegistersResponse(HOLDING, (0, 10, 20)), unit_id=1)


async def test_rtu_bad_crc_bytes_and_client_decoder_view() -> None:
    async with ModbusTcpServer({1: make_unit()}, framing="rtu", faults=ModbusFaults(bad_crc_next=1)) as server:
        wire = await raw_exchange(server.port, encode_rtu(READ_0_3, unit_id=1), len(GOOD_RTU_REPLY))
    assert wire[:-2] == GOOD_RTU_REPLY[:-2]
    assert wire[-2:] == bytes(b ^ 0xFF for b in GOOD_RTU_REPLY[-2:])
    items = RtuFrameDecoder(expect="responses").feed(wire)
    assert items and all(isinstance(item, CrcError) for item in items)


async def test_rtu_garbage_bytes_precede_an_intact_reply() -> None:
    faults = ModbusFaults(garbage_next=1, garbage=b"\x01\x03\xf8\xff")
    async with ModbusTcpServer({1: make_unit()}, framing="rtu", faults=faults) as server:
        wire = await raw_exchange(server.port, encode_rtu(READ_0_3, unit_id=1), 4 + len(GOOD_RTU_REPLY))
    assert wire == b"\x01\x03\xf8\xff" + GOOD_RTU_REPLY
    items = RtuFrameDecoder(expect="responses").feed(wire)
    assert isinstance(items[0], FrameError)
    assert items[-1] == Frame(1, ReadRegistersResponse(HOLDING, (0, 10, 20)))


async def test_truncated_reply_is_a_prefix_and_the_next_reply_is_whole() -> None:
    faults = ModbusFaults(truncate_next=1, truncate_keep=5)
    async with ModbusTcpServer({1: make_unit()}, framing="rtu", faults=faults) as server:
        request = encode_rtu(READ_0_3, unit_id=1)
        wire = await raw_exchange(server.port, request + request, 5 + len(GOOD_RTU_REPLY))
    assert wire == GOOD_RTU_REPLY[:5] + GOOD_RTU_REPLY


async def test_tcp_bad_crc_fault_sends_a_bad_protocol_id() -> None:
    good = encode_tcp(ReadRegistersResponse(HOLDING, (0, 10, 20)), unit_id=1, transaction_id=0x1234)
    async with ModbusTcpServer({1: make_unit()}, faults=ModbusFaults(bad_crc_next=1)) as server:
        wire = await raw_exchange(server.port, encode_tcp(READ_0_3, unit_id=1, transaction_id=0x1234), len(good))
    assert wire == good[:2] + b"\xff\xff" + good[4:]


async def test_tcp_server_closes_a_connection_that_sends_a_bad_mbap_header() -> None:
    async with ModbusTcpServer({1: make_unit()}) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"\x00\x01\x00\x07\x00\x06\x01\x03\x00\x00\x00\x01")  # protocol id 7
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # EOF: the server hung up
        finally:
            writer.close()
            await writer.wait_closed()
        assert server.stats.frame_errors == 1


async def test_malformed_request_over_rtu_is_refused_with_its_code() -> None:
    too_many = bytes.fromhex("03 0000 007E")  # 126 registers
    refusal = encode_rtu(ExceptionResponse(3, ExceptionCode.ILLEGAL_DATA_VALUE), unit_id=1)
    async with ModbusTcpServer({1: make_unit()}, framing="rtu") as server:
        wire = await raw_exchange(server.port, rtu_frame(1, too_many), len(refusal))
        assert wire == refusal
        assert server.stats.refused == 1


# ----------------------------------------------------------------------- pure pieces of the server


def test_fault_plan_sequence_repeats_for_a_seed() -> None:
    def plans(seed: int) -> list[FaultPlan]:
        faults = ModbusFaults(seed=seed, crc_error_rate=0.3, truncate_rate=0.2, garbage_rate=0.2)
        return [faults.plan(READ_0_3) for _ in range(50)]

    assert plans(3) == plans(3)
    assert plans(3) != plans(4)


def test_fault_counters_count_down_and_precedence_holds() -> None:
    faults = ModbusFaults(silent_next=1, exception_next=1, bad_crc_next=2)
    assert faults.plan(READ_0_3).silent  # silence wins; exception and crc wait
    second = faults.plan(READ_0_3)
    assert second.exception_code == ExceptionCode.SERVER_DEVICE_BUSY and second.bad_crc
    assert faults.plan(READ_0_3).bad_crc
    assert faults.plan(READ_0_3) == FaultPlan()
    assert faults.injected == {"silent": 1, "exception": 1, "bad_crc": 2}


def test_execute_maps_refusals_to_exception_responses() -> None:
    unit = make_unit()
    assert execute(unit, WriteSingleRegisterRequest(500, 1)) == ExceptionResponse(6, ExceptionCode.ILLEGAL_DATA_ADDRESS)
    assert execute(unit, ReadRequest(FunctionCode.READ_INPUT_REGISTERS, 49, 1)) == ReadRegistersResponse(
        FunctionCode.READ_INPUT_REGISTERS, (1049,)
    )


async def test_stopping_with_a_delayed_reply_pending_leaves_nothing_running() -> None:
    server = ModbusTcpServer({1: make_unit()}, faults=ModbusFaults(reply_delay_s=60))
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(encode_tcp(READ_0_3, unit_id=1, transaction_id=1))
        await wait_until(lambda: server.stats.requests == 1)
        await server.stop()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed, the reply never sent
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stopping_the_pty_bus_with_a_delayed_reply_pending() -> None:
    server = ModbusRtuPtyServer({1: make_unit()}, faults=ModbusFaults(reply_delay_s=60))
    await server.start()
    client = AsyncModbusSerialClient(server.port_path, timeout=0.2, retries=0)
    assert await client.connect()
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=1, device_id=1)
        assert server.stats.requests == 1
    finally:
        client.close()
        await server.stop()
