"""Register-map Modbus driver: a thin async shell over the Modbus clients.

The pure work (planning, decoding, range checks, framing) lives in ``regmap`` and ``codec``; this
module only sends requests (Modbus/TCP through ``tcp_client``, RTU through pymodbus) and maps
every failure onto the project's error tree at one boundary.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from daq.errors import (
    ConnectError,
    DeviceExceptionError,
    DriverError,
    ProtocolError,
    ResponseTimeoutError,
    SetpointRangeError,
    TransportError,
)
from daq.records import DeviceSchema, Quality
from drivers.modbus.codec import (
    READ_TABLES,
    WriteMultipleRegistersRequest,
    WriteSingleCoilRequest,
    WriteSingleRegisterRequest,
    decode_response,
    match_response,
    read_response_data,
    unpack_bits,
)
from drivers.modbus.regmap import (
    BIT_TABLES,
    ReadBlock,
    Register,
    RegisterMap,
    compile_block_decoder,
    decode_string,
    decode_value,
    plan_channels,
    plan_reads,
)
from drivers.modbus.tcp_client import ModbusTcpClient

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int
    framing: str = "socket"  # "socket" (Modbus TCP) or "rtu" (RTU frames over TCP)
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    port: str
    baud: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
    timeout_s: float = 1.0


Endpoint = TcpEndpoint | SerialEndpoint
WriteRequest = WriteSingleCoilRequest | WriteSingleRegisterRequest | WriteMultipleRegistersRequest


class ModbusLink:
    """One client for one endpoint, shared by every device behind it.

    Modbus/TCP goes through the project's own client (``drivers.modbus.tcp_client``, ADR 0016);
    RTU, on a serial port or framed over TCP, through pymodbus. The lock is the bus arbiter:
    every request on the link, reads and writes alike, goes through it, so devices sharing an
    RS-485 port (or a TCP gateway) never interleave frames.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.lock = asyncio.Lock()
        self._native: ModbusTcpClient | None = None
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def label(self) -> str:
        ep = self.endpoint
        if isinstance(ep, TcpEndpoint):
            return f"{ep.host}:{ep.port}" + (" (RTU over TCP)" if ep.framing == "rtu" else "")
        return f"{ep.port} @ {ep.baud} baud"

    @property
    def connected(self) -> bool:
        if self._native is not None:
            return self._native.connected
        return self._client is not None and self._client.connected

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        # Our poll engine owns retries and reconnects (with jittered backoff): switch pymodbus's off.
        common: dict[str, Any] = {"timeout": ep.timeout_s, "retries": 0, "reconnect_delay": 0}
        if isinstance(ep, TcpEndpoint):
            return AsyncModbusTcpClient(ep.host, port=ep.port, framer=FramerType.RTU, **common)
        return AsyncModbusSerialClient(
            ep.port,
            framer=FramerType.RTU,
            baudrate=ep.baud,
            parity=ep.parity,
            bytesize=ep.bytesize,
            stopbits=ep.stopbits,
            **common,
        )

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            self.close()
            ep = self.endpoint
            if isinstance(ep, TcpEndpoint) and ep.framing == "socket":
                native = ModbusTcpClient(ep.host, ep.port, timeout_s=ep.timeout_s, label=self.label)
                await native.connect()  # raises ConnectError naming the endpoint
                self._native = native
                return
            client = self._make_client()
            try:
                ok = await _guard(client.connect())
            except (OSError, ModbusException) as exc:
                client.close()
                raise ConnectError(f"cannot connect to {self.label}: {exc}") from exc
            if not ok:
                client.close()
                hint = (
                    "is the device powered and the host/port right?"
                    if isinstance(self.endpoint, TcpEndpoint)
                    else "does the port exist, and is no other program using it?"
                )
                raise ConnectError(f"cannot connect to {self.label}: {hint}")
            self._client = client

    def close(self) -> None:
        if self._native is not None:
            self._native.close()
            self._native = None
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self, table: str, address: int, count: int, *, unit: int) -> bytes | tuple[bool, ...]:
        """``count`` registers as ``2 * count`` big-endian bytes, or ``count`` bits, from ``table``."""
        if not self.connected:
            await self.connect()
        native = self._native
        if native is None:
            response = await self._pymodbus_call(_READ_METHOD[table], address, count=count, device_id=unit)
            if table in BIT_TABLES:
                return tuple(bool(b) for b in response.bits[:count])
            return struct.pack(f">{count}H", *response.registers)
        function = _READ_FUNCTION[table]
        async with self.lock:
            pdu = await native.read(unit, function, address, count)
        try:
            data = read_response_data(function, count, pdu)
        except DeviceExceptionError as exc:
            raise self._refused(exc.code, unit) from None
        except ProtocolError as exc:
            raise ProtocolError(f"{self.label}: {exc}") from None
        return data if function >= 3 else unpack_bits(data)[:count]

    async def write(self, request: WriteRequest, *, unit: int) -> None:
        """Send a write request and check the device's echo of it."""
        if not self.connected:
            await self.connect()
        native = self._native
        if native is None:
            await self._pymodbus_write(request, unit)
            return
        async with self.lock:
            pdu = await native.request(unit, request.encode())
        try:
            match_response(request, decode_response(pdu))
        except DeviceExceptionError as exc:
            raise self._refused(exc.code, unit) from None
        except ProtocolError as exc:
            raise ProtocolError(f"{self.label}: {exc}") from None

    async def _pymodbus_write(self, request: WriteRequest, unit: int) -> None:
        if isinstance(request, WriteSingleCoilRequest):
            await self._pymodbus_call("write_coil", request.address, request.value, device_id=unit)
        elif isinstance(request, WriteSingleRegisterRequest):
            await self._pymodbus_call("write_register", request.address, request.value, device_id=unit)
        else:
            await self._pymodbus_call("write_registers", request.address, list(request.values), device_id=unit)

    def _refused(self, code: int, unit: int) -> DeviceExceptionError:
        return DeviceExceptionError(
            f"{self.label}: device {unit} answered exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})",
            code=code,
        )

    async def _pymodbus_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Send one request through pymodbus under the arbiter lock and return the response PDU."""
        client = self._client
        if client is None or not client.connected:
            await self.connect()
            client = self._client
            assert client is not None
        fn: Callable[..., Awaitable[Any]] = getattr(client, method)
        async with self.lock:
            # Awaited directly (not through a wrapper coroutine): this runs several times per poll.
            try:
                response = await fn(*args, **kwargs)
            except (ModbusException, OSError, TimeoutError) as exc:
                _raise_if_cancelling()
                raise self._translate(exc) from exc
            _raise_if_cancelling()
        if response.isError():
            raise self._refused(int(getattr(response, "exception_code", 0) or 0), kwargs.get("device_id", 0))
        return response

    def _translate(self, exc: BaseException) -> DriverError:
        """pymodbus's (and the socket's) errors as the project's; a dead link is closed."""
        if isinstance(exc, ConnectionException):
            self.close()
            return TransportError(f"{self.label}: connection lost ({exc})")
        if isinstance(exc, ModbusIOException):
            text = str(exc)
            if "timeout" in text.lower() or "no response" in text.lower():
                return ResponseTimeoutError(f"{self.label}: no answer within {self.endpoint.timeout_s} s")
            return ProtocolError(f"{self.label}: {text}")
        if isinstance(exc, TimeoutError):
            return ResponseTimeoutError(f"{self.label}: no answer within {self.endpoint.timeout_s} s")
        if isinstance(exc, ModbusException):
            return ProtocolError(f"{self.label}: {exc}")
        self.close()
        return TransportError(f"{self.label}: {exc}")


def _raise_if_cancelling() -> None:
    """pymodbus catches ``CancelledError`` in places and turns it into its own error or even a
    normal return; a cancelled poll task would then live on. Re-raise when our task is cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _guard(awaitable: Awaitable[Any]) -> Any:
    """Await a pymodbus call without letting it swallow our task's cancellation (see above)."""
    try:
        result = await awaitable
    except (ModbusException, OSError, TimeoutError):
        _raise_if_cancelling()
        raise
    _raise_if_cancelling()
    return result


_READ_FUNCTION = {table: function for function, table in READ_TABLES.items()}
_READ_METHOD = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class ModbusDriver:
    """A device described by a register map, behind a ``ModbusLink``."""

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        regmap: RegisterMap,
        link: ModbusLink,
        unit_id: int = 1,
        max_registers_per_read: int = 100,
        max_gap: int = 8,
    ) -> None:
        self.name = name
        self.regmap = regmap
        self.link = link
        self.unit_id = unit_id
        self.blocks: list[ReadBlock] = plan_reads(regmap.polled, max_count=max_registers_per_read, max_gap=max_gap)
        self.schema = DeviceSchema(name, kind, plan_channels(self.blocks))
        # One decoder and one slice of the record per block, in plan order.
        self._decoders = []
        self._block_slices: list[tuple[int, int]] = []
        start = 0
        for block in self.blocks:
            n = sum(1 + len(r.bits) for r in block.registers)
            self._decoders.append(compile_block_decoder(block, start))
            self._block_slices.append((start, start + n))
            start += n
        # Per block, everything a poll needs: request, decoder, output slots, all-good qualities.
        self._plan = [
            (
                block.table,
                block.start,
                block.count,
                decode,
                lo,
                hi,
                bytes([int(Quality.GOOD)]) * (hi - lo),
            )
            for block, decode, (lo, hi) in zip(self.blocks, self._decoders, self._block_slices, strict=True)
        ]
        self.info: dict[str, str | float] = {}

    async def connect(self) -> None:
        await self.link.connect()
        await self._read_info()

    async def _read_info(self) -> None:
        for reg in self.regmap.info_registers:
            if reg.table in BIT_TABLES:
                continue
            try:
                data = await self.link.read(reg.table, reg.address, reg.words, unit=self.unit_id)
            except (DeviceExceptionError, ProtocolError):
                continue  # identification is a nicety; a device without it still polls
            assert isinstance(data, bytes)
            words = struct.unpack(f">{reg.words}H", data)
            self.info[reg.name] = decode_string(words) if reg.type == "string" else decode_value(reg, words)

    async def close(self) -> None:
        self.link.close()

    async def read(self, values: list[float], quality: bytearray) -> None:
        read = self.link.read
        unit = self.unit_id
        for table, start, count, decode, lo, hi, good in self._plan:
            try:
                raw = await read(table, start, count, unit=unit)
            except DeviceExceptionError:
                _mark(values, quality, lo, hi, Quality.DEVICE_EXCEPTION)
                continue
            except ProtocolError:
                _mark(values, quality, lo, hi, Quality.BAD_FRAME)
                continue
            except ResponseTimeoutError:
                _mark(values, quality, lo, len(values), Quality.TIMEOUT)
                raise
            except TransportError:
                _mark(values, quality, lo, len(values), Quality.COMM_LOST)
                raise
            quality[lo:hi] = good
            decode(raw, values, quality)

    def register(self, channel: str) -> Register:
        reg = self.regmap.by_name.get(channel)
        if reg is None:
            raise SetpointRangeError(
                f"{self.name}: no register named {channel!r} in regmap {self.regmap.name}; nothing was sent"
            )
        return reg

    async def write(self, channel: str, value: float) -> None:
        """Write a setpoint. Range-checked against the regmap before anything is sent."""
        reg = self.register(channel)
        if not reg.writable:
            raise SetpointRangeError(f"{self.name}: {channel} is not writable; nothing was sent")
        payload = reg.encode(value)
        request: WriteRequest
        if reg.table == "coil":
            request = WriteSingleCoilRequest(reg.address, bool(payload))
        elif isinstance(payload, list) and len(payload) == 1:
            request = WriteSingleRegisterRequest(reg.address, payload[0])
        else:
            assert isinstance(payload, list)
            request = WriteMultipleRegistersRequest(reg.address, tuple(payload))
        await self.link.write(request, unit=self.unit_id)

    async def read_channel(self, channel: str) -> float:
        """Read one register (or one named bit of a register) now: read-back after a write."""
        owner = self.regmap.bit_owner.get(channel)
        reg = owner[0] if owner is not None else self.register(channel)
        count = 1 if reg.table in BIT_TABLES else reg.words
        data = await self.link.read(reg.table, reg.address, count, unit=self.unit_id)
        if isinstance(data, tuple):
            return 1.0 if data[0] else 0.0
        value = decode_value(reg, struct.unpack(f">{reg.words}H", data))
        if owner is not None:
            return float((int(value) >> owner[1]) & 1)
        return value


def _mark(values: list[float], quality: bytearray, lo: int, hi: int, q: Quality) -> None:
    nan = float("nan")
    code = int(q)
    for i in range(lo, hi):
        values[i] = nan
        quality[i] = code
