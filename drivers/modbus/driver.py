"""Register-map Modbus driver: a thin async shell over pymodbus.

The pure work (planning, decoding, range checks) lives in ``regmap``; this module only sends
requests and maps pymodbus's errors onto the project's error tree at one boundary.
"""

from __future__ import annotations

import asyncio
import logging
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


class ModbusLink:
    """One pymodbus client for one endpoint, shared by every device behind it.

    The lock is the bus arbiter: every request on the link, reads and writes alike, goes through
    it, so devices sharing an RS-485 port (or a TCP gateway) never interleave frames.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.lock = asyncio.Lock()
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
        return self._client is not None and self._client.connected

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        # Our poll engine owns retries and reconnects (with jittered backoff): switch pymodbus's off.
        common: dict[str, Any] = {"timeout": ep.timeout_s, "retries": 0, "reconnect_delay": 0}
        if isinstance(ep, TcpEndpoint):
            framer = FramerType.RTU if ep.framing == "rtu" else FramerType.SOCKET
            return AsyncModbusTcpClient(ep.host, port=ep.port, framer=framer, **common)
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
            if self._client is not None:
                self._client.close()
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
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def is_rtu(self) -> bool:
        return isinstance(self.endpoint, SerialEndpoint) or self.endpoint.framing == "rtu"

    async def _quiet_after_timeout(self) -> None:
        """RTU frames carry no transaction id: a reply arriving late would be taken as the answer to
        the next request. Keep the bus quiet a little longer (still holding the arbiter) so it lands
        before the next request resets the receive buffer."""
        if self.is_rtu:
            await asyncio.sleep(min(0.1, self.endpoint.timeout_s / 2))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Send one request under the arbiter lock and return the response PDU."""
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
            code = int(getattr(response, "exception_code", 0) or 0)
            raise DeviceExceptionError(
                f"{self.label}: device {kwargs.get('device_id')} answered exception {code} "
                f"({EXCEPTION_NAMES.get(code, 'unknown')})",
                code=code,
            )
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
                _READ_METHOD[block.table],
                block.start,
                block.count,
                block.table in BIT_TABLES,
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
                response = await self.link.call(
                    _READ_METHOD[reg.table], reg.address, count=reg.words, device_id=self.unit_id
                )
            except (DeviceExceptionError, ProtocolError):
                continue  # identification is a nicety; a device without it still polls
            words = response.registers
            self.info[reg.name] = decode_string(words) if reg.type == "string" else decode_value(reg, words)

    async def close(self) -> None:
        self.link.close()

    async def read(self, values: list[float], quality: bytearray) -> None:
        call = self.link.call
        unit = self.unit_id
        for method, start, count, bits, decode, lo, hi, good in self._plan:
            try:
                response = await call(method, start, count=count, device_id=unit)
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
            decode(response.bits if bits else response.registers, values, quality)

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
        if reg.table == "coil":
            await self.link.call("write_coil", reg.address, bool(payload), device_id=self.unit_id)
        elif isinstance(payload, list) and len(payload) == 1:
            await self.link.call("write_register", reg.address, payload[0], device_id=self.unit_id)
        else:
            assert isinstance(payload, list)
            await self.link.call("write_registers", reg.address, payload, device_id=self.unit_id)

    async def read_channel(self, channel: str) -> float:
        """Read one register (or one named bit of a register) now: read-back after a write."""
        owner = self.regmap.bit_owner.get(channel)
        if owner is not None:
            reg, bit = owner
            response = await self.link.call(
                _READ_METHOD[reg.table], reg.address, count=reg.words, device_id=self.unit_id
            )
            return float((int(decode_value(reg, response.registers)) >> bit) & 1)
        reg = self.register(channel)
        response = await self.link.call(_READ_METHOD[reg.table], reg.address, count=reg.words, device_id=self.unit_id)
        if reg.table in BIT_TABLES:
            return 1.0 if response.bits[0] else 0.0
        return decode_value(reg, response.registers)


def _mark(values: list[float], quality: bytearray, lo: int, hi: int, q: Quality) -> None:
    nan = float("nan")
    code = int(q)
    for i in range(lo, hi):
        values[i] = nan
        quality[i] = code
