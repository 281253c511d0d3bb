"""Modbus application protocol: PDUs, TCP (MBAP) and RTU framing, stream decoders. Pure.

Both directions live here so a simulator speaks exactly the bytes a driver expects:

- messages: one frozen dataclass per request / response kind, each with ``encode() -> bytes``
  (the PDU: function code + data); ``decode_request`` / ``decode_response`` go the other way;
- framing: ``tcp_frame`` (7-byte MBAP header + PDU) and ``rtu_frame`` (unit + PDU + CRC-16, low
  byte first);
- stream decoders: ``TcpFrameDecoder`` and ``RtuFrameDecoder`` are fed bytes as they arrive and
  return complete ``Frame`` objects and typed errors, never raise and never hold more than one
  maximum-size frame. ``expect="requests"`` is the server side, ``expect="responses"`` the client.

Errors (all ``daq.errors.ProtocolError``): ``FrameError`` for bytes that are not a frame (bad
MBAP header, garbage), ``CrcError`` for an RTU frame with a wrong checksum, ``PduError`` for a
well-framed request a server must refuse with its ``exception_code``. A client turns an exception
response into ``daq.errors.DeviceExceptionError`` with ``match_response``.

Limits follow the Modbus application protocol specification v1.1b3: reads of at most 2000 bits
or 125 registers, writes of at most 1968 bits or 123 registers, addresses 0..65535.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Literal

from daq.errors import DeviceExceptionError, ProtocolError

Table = Literal["coil", "discrete", "holding", "input"]
Expect = Literal["requests", "responses"]

MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123
MAX_PDU_SIZE = 253
MBAP_SIZE = 7  # transaction id, protocol id, length, unit id
MAX_RTU_FRAME_SIZE = 256  # unit + PDU + CRC
RTU_MIN_FRAME_SIZE = 4  # unit + function + CRC (an exception reply is 5)


class FunctionCode(IntEnum):
    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16


class ExceptionCode(IntEnum):
    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    SERVER_DEVICE_BUSY = 6
    MEMORY_PARITY_ERROR = 8
    GATEWAY_PATH_UNAVAILABLE = 10
    GATEWAY_TARGET_FAILED = 11


READ_TABLES: dict[int, Table] = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_COIL_ON = 0xFF00
_COIL_OFF = 0x0000


# --------------------------------------------------------------------------------------- errors


class FrameError(ProtocolError):
    """Bytes that do not form a valid frame: bad MBAP header, bad length, garbage on the line."""


class CrcError(FrameError):
    """An RTU frame whose CRC-16 does not match its contents."""


class PduError(ProtocolError):
    """A well-framed request whose PDU is invalid; a server answers it with ``exception_code``.

    Stream decoders fill in ``unit_id`` and ``transaction_id`` so the server can address the reply.
    """

    def __init__(
        self,
        message: str,
        *,
        function: int,
        exception_code: ExceptionCode,
        unit_id: int | None = None,
        transaction_id: int = 0,
    ) -> None:
        self.function = function
        self.exception_code = exception_code
        self.unit_id = unit_id
        self.transaction_id = transaction_id
        super().__init__(message)


class UnexpectedResponseError(ProtocolError):
    """A well-formed response that does not answer the request that was sent."""


# ------------------------------------------------------------------------------------------ CRC


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). Sent low byte first.

    Over a whole frame including its CRC bytes the result is 0, which is how frames are checked.
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


# ------------------------------------------------------------------------------------- messages


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be 0..65535, got {value}")


def _check_span(address: int, count: int, maximum: int) -> None:
    _check_u16("address", address)
    if not 1 <= count <= maximum:
        raise ValueError(f"count must be 1..{maximum}, got {count}")
    if address + count > 0x10000:
        raise ValueError(f"address {address} + count {count} runs past 65535")


def _check_registers(values: tuple[int, ...]) -> None:
    for value in values:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register values must be 0..65535, got {value}")


def pack_bits(bits: Sequence[bool]) -> bytes:
    """Bits packed eight to a byte, first bit in the least significant position (Modbus order)."""
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i >> 3] |= 1 << (i & 7)
    return bytes(packed)


def unpack_bits(data: bytes) -> tuple[bool, ...]:
    """All ``8 * len(data)`` bits, first bit from the least significant position."""
    return tuple(bool(byte >> i & 1) for byte in data for i in range(8))


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Function 1, 2, 3 or 4: read ``count`` bits or registers from ``address``."""

    function: FunctionCode
    address: int
    count: int

    def __post_init__(self) -> None:
        if self.function not in READ_TABLES:
            raise ValueError(f"not a read function code: {self.function}")
        object.__setattr__(self, "function", FunctionCode(self.function))
        limit = MAX_READ_BITS if self.function <= 2 else MAX_READ_REGISTERS
        _check_span(self.address, self.count, limit)

    @property
    def table(self) -> Table:
        return READ_TABLES[self.function]

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.count)


@dataclass(frozen=True, slots=True)
class WriteSingleCoilRequest:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_SINGLE_COIL
    table: ClassVar[Table] = "coil"
    address: int
    value: bool

    def __post_init__(self) -> None:
        _check_u16("address", self.address)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, _COIL_ON if self.value else _COIL_OFF)


@dataclass(frozen=True, slots=True)
class WriteSingleRegisterRequest:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_SINGLE_REGISTER
    table: ClassVar[Table] = "holding"
    address: int
    value: int

    def __post_init__(self) -> None:
        _check_u16("address", self.address)
        _check_u16("value", self.value)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.value)


@dataclass(frozen=True, slots=True)
class WriteMultipleCoilsRequest:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_MULTIPLE_COILS
    table: ClassVar[Table] = "coil"
    address: int
    values: tuple[bool, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        _check_span(self.address, len(self.values), MAX_WRITE_BITS)

    def encode(self) -> bytes:
        packed = pack_bits(self.values)
        header = struct.pack(">BHHB", self.function, self.address, len(self.values), len(packed))
        return header + packed


@dataclass(frozen=True, slots=True)
class WriteMultipleRegistersRequest:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_MULTIPLE_REGISTERS
    table: ClassVar[Table] = "holding"
    address: int
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        _check_span(self.address, len(self.values), MAX_WRITE_REGISTERS)
        _check_registers(self.values)

    def encode(self) -> bytes:
        n = len(self.values)
        return struct.pack(f">BHHB{n}H", self.function, self.address, n, 2 * n, *self.values)


@dataclass(frozen=True, slots=True)
class ReadBitsResponse:
    """Answer to function 1 or 2.

    The wire carries whole bytes only, so decoded ``values`` hold ``8 * byte_count`` bits, the
    tail being padding; ``match_response`` trims them to the requested count.
    """

    function: FunctionCode
    values: tuple[bool, ...]

    def __post_init__(self) -> None:
        if self.function not in (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS):
            raise ValueError(f"not a bit read function code: {self.function}")
        object.__setattr__(self, "function", FunctionCode(self.function))
        object.__setattr__(self, "values", tuple(self.values))
        if not 1 <= len(self.values) <= MAX_READ_BITS:
            raise ValueError(f"a bit read answers 1..{MAX_READ_BITS} bits, got {len(self.values)}")

    def encode(self) -> bytes:
        packed = pack_bits(self.values)
        return bytes((self.function, len(packed))) + packed


@dataclass(frozen=True, slots=True)
class ReadRegistersResponse:
    """Answer to function 3 or 4."""

    function: FunctionCode
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.function not in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
            raise ValueError(f"not a register read function code: {self.function}")
        object.__setattr__(self, "function", FunctionCode(self.function))
        object.__setattr__(self, "values", tuple(self.values))
        if not 1 <= len(self.values) <= MAX_READ_REGISTERS:
            raise ValueError(f"a register read answers 1..{MAX_READ_REGISTERS} registers")
        _check_registers(self.values)

    def encode(self) -> bytes:
        n = len(self.values)
        return struct.pack(f">BB{n}H", self.function, 2 * n, *self.values)


@dataclass(frozen=True, slots=True)
class WriteSingleCoilResponse:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_SINGLE_COIL
    address: int
    value: bool

    def __post_init__(self) -> None:
        _check_u16("address", self.address)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, _COIL_ON if self.value else _COIL_OFF)


@dataclass(frozen=True, slots=True)
class WriteSingleRegisterResponse:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_SINGLE_REGISTER
    address: int
    value: int

    def __post_init__(self) -> None:
        _check_u16("address", self.address)
        _check_u16("value", self.value)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.value)


@dataclass(frozen=True, slots=True)
class WriteMultipleCoilsResponse:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_MULTIPLE_COILS
    address: int
    count: int

    def __post_init__(self) -> None:
        _check_span(self.address, self.count, MAX_WRITE_BITS)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.count)


@dataclass(frozen=True, slots=True)
class WriteMultipleRegistersResponse:
    function: ClassVar[FunctionCode] = FunctionCode.WRITE_MULTIPLE_REGISTERS
    address: int
    count: int

    def __post_init__(self) -> None:
        _check_span(self.address, self.count, MAX_WRITE_REGISTERS)

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.function, self.address, self.count)


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """A refusal: ``function`` is the requested function code (sent as ``function | 0x80``)."""

    function: int
    code: int

    def __post_init__(self) -> None:
        if not 1 <= self.function <= 0x7F:
            raise ValueError(f"function code must be 1..127, got {self.function}")
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"exception code must be 0..255, got {self.code}")

    @property
    def exception(self) -> ExceptionCode | None:
        """The standard meaning of ``code``, if it has one."""
        try:
            return ExceptionCode(self.code)
        except ValueError:
            return None

    @property
    def description(self) -> str:
        """``code`` in words: "illegal data address", or "non-standard code"."""
        meaning = self.exception
        return meaning.name.lower().replace("_", " ") if meaning else "non-standard code"

    def encode(self) -> bytes:
        return bytes((self.function | 0x80, self.code))


Request = (
    ReadRequest
    | WriteSingleCoilRequest
    | WriteSingleRegisterRequest
    | WriteMultipleCoilsRequest
    | WriteMultipleRegistersRequest
)
Response = (
    ReadBitsResponse
    | ReadRegistersResponse
    | WriteSingleCoilResponse
    | WriteSingleRegisterResponse
    | WriteMultipleCoilsResponse
    | WriteMultipleRegistersResponse
    | ExceptionResponse
)
Message = Request | Response


# ----------------------------------------------------------------------------- PDU decoding


def _refuse(function: int, code: ExceptionCode, why: str) -> PduError:
    return PduError(f"function {function}: {why}", function=function, exception_code=code)


def _span_error(function: int, address: int, count: int, maximum: int) -> PduError | None:
    """The spec's checks in its order: quantity first (code 3), then address range (code 2)."""
    if not 1 <= count <= maximum:
        return _refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE, f"count {count} not in 1..{maximum}")
    if address + count > 0x10000:
        return _refuse(function, ExceptionCode.ILLEGAL_DATA_ADDRESS, f"address {address} + count {count} past 65535")
    return None


def decode_request(pdu: bytes) -> Request:
    """A request PDU (function code + data) as a message; ``PduError`` says how to refuse it."""
    if not pdu:
        raise FrameError("empty PDU: no function code")
    function = pdu[0]
    if function not in _REQUEST_FUNCTIONS:
        raise _refuse(function, ExceptionCode.ILLEGAL_FUNCTION, "function code not supported")
    if len(pdu) < 5:
        raise _refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE, f"PDU of {len(pdu)} bytes is too short")
    address, word = struct.unpack_from(">HH", pdu, 1)
    if function <= 4:
        if len(pdu) != 5:
            raise _refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE, f"PDU of {len(pdu)} bytes, expected 5")
        limit = MAX_READ_BITS if function <= 2 else MAX_READ_REGISTERS
        if error := _span_error(function, address, word, limit):
            raise error
        return ReadRequest(FunctionCode(function), address, word)
    if function == FunctionCode.WRITE_SINGLE_COIL:
        if len(pdu) != 5 or word not in (_COIL_ON, _COIL_OFF):
            raise _refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE, f"coil value {word:#06x}")
        return WriteSingleCoilRequest(address, word == _COIL_ON)
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        if len(pdu) != 5:
            raise _refuse(function, ExceptionCode.ILLEGAL_DATA_VALUE, f"PDU of {len(pdu)} bytes, expected 5")
        return WriteSingleRegisterRequest(address, word)
    # 15 / 16: address, count, byte count, data
    count = word
    byte_count = pdu[5] if len(pdu) > 5 else -1
    is_coils = function == FunctionCode.WRITE_MULTIPLE_COILS
    expected_bytes = (count + 7) // 8 if is_coils else 2 * count
    if byte_count != expected_bytes or len(pdu) != 6 + byte_count:
        raise _refuse(
            function,
            ExceptionCode.ILLEGAL_DATA_VALUE,
            f"byte count {byte_count} / PDU of {len(pdu)} bytes does not fit count {count}",
        )
    if error := _span_error(function, address, count, MAX_WRITE_BITS if is_coils else MAX_WRITE_REGISTERS):
        raise error
    if is_coils:
        return WriteMultipleCoilsRequest(address, unpack_bits(pdu[6:])[:count])
    return WriteMultipleRegistersRequest(address, struct.unpack_from(f">{count}H", pdu, 6))


def decode_response(pdu: bytes) -> Response:
    """A response PDU as a message; ``FrameError`` if it is malformed."""
    if not pdu:
        raise FrameError("empty PDU: no function code")
    function = pdu[0]
    if function & 0x80:
        if len(pdu) != 2 or function == 0x80:
            raise FrameError(f"exception response of {len(pdu)} bytes for function {function:#04x}")
        return ExceptionResponse(function & 0x7F, pdu[1])
    if function in READ_TABLES:
        if len(pdu) < 2 or pdu[1] != len(pdu) - 2 or pdu[1] == 0:
            raise FrameError(f"function {function}: byte count does not match a PDU of {len(pdu)} bytes")
        if function <= 2:
            if pdu[1] > (MAX_READ_BITS + 7) // 8:
                raise FrameError(f"function {function}: byte count {pdu[1]} above the limit")
            return ReadBitsResponse(FunctionCode(function), unpack_bits(pdu[2:]))
        if pdu[1] % 2 or pdu[1] > 2 * MAX_READ_REGISTERS:
            raise FrameError(f"function {function}: byte count {pdu[1]} is not 2..250 and even")
        return ReadRegistersResponse(FunctionCode(function), struct.unpack_from(f">{pdu[1] // 2}H", pdu, 2))
    if function not in _REQUEST_FUNCTIONS:
        raise FrameError(f"function code {function} not supported")
    if len(pdu) != 5:
        raise FrameError(f"function {function}: response PDU of {len(pdu)} bytes, expected 5")
    address, word = struct.unpack_from(">HH", pdu, 1)
    try:
        if function == FunctionCode.WRITE_SINGLE_COIL:
            if word not in (_COIL_ON, _COIL_OFF):
                raise FrameError(f"coil value {word:#06x} in write echo")
            return WriteSingleCoilResponse(address, word == _COIL_ON)
        if function == FunctionCode.WRITE_SINGLE_REGISTER:
            return WriteSingleRegisterResponse(address, word)
        if function == FunctionCode.WRITE_MULTIPLE_COILS:
            return WriteMultipleCoilsResponse(address, word)
        return WriteMultipleRegistersResponse(address, word)
    except ValueError as exc:  # count or span out of the spec's range
        raise FrameError(f"function {function}: {exc}") from None


_REQUEST_FUNCTIONS = frozenset(int(fc) for fc in FunctionCode)


def match_response(request: Request, response: Response) -> Response:
    """Check that ``response`` answers ``request``; bit reads come back trimmed to the count.

    Raises ``DeviceExceptionError`` (with ``code``) for an exception response and
    ``UnexpectedResponseError`` for an answer to some other request.
    """
    if response.function != request.function:
        raise UnexpectedResponseError(
            f"sent function {request.function}, got an answer to function {response.function}"
        )
    if isinstance(response, ExceptionResponse):
        raise DeviceExceptionError(
            f"Modbus exception {response.code} ({response.description}) for function {request.function}"
            f" at address {request.address}",
            code=response.code,
        )
    if isinstance(request, ReadRequest):
        if isinstance(response, ReadBitsResponse):
            if len(response.values) != 8 * ((request.count + 7) // 8):
                raise UnexpectedResponseError(f"asked for {request.count} bits, got {len(response.values)}")
            return ReadBitsResponse(response.function, response.values[: request.count])
        if isinstance(response, ReadRegistersResponse) and len(response.values) == request.count:
            return response
        raise UnexpectedResponseError(f"asked for {request.count} registers, got {response}")
    if isinstance(request, WriteMultipleCoilsRequest | WriteMultipleRegistersRequest):
        answered = (getattr(response, "address", None), getattr(response, "count", None))
        if answered != (request.address, len(request.values)):
            raise UnexpectedResponseError(f"write of {request} acknowledged as {response}")
        return response
    answered = (getattr(response, "address", None), getattr(response, "value", None))
    if answered != (request.address, request.value):
        raise UnexpectedResponseError(f"write of {request} echoed as {response}")
    return response


# ---------------------------------------------------------------------------- client fast path

_TCP_READ_FRAME = struct.Struct(">HHHBBHH")


def tcp_read_frame(transaction_id: int, unit_id: int, function: int, address: int, count: int) -> bytes:
    """A whole Modbus/TCP read request (MBAP header + PDU) in one ``pack``: a poll's hot path.

    The caller has checked the span (a register map's read plan is checked when it is built)."""
    return _TCP_READ_FRAME.pack(transaction_id, 0, 6, unit_id, function, address, count)


def read_response_data(function: int, count: int, pdu: bytes) -> bytes:
    """The data bytes of a response PDU answering a read of ``count`` items with ``function``.

    Registers come back as ``2 * count`` big-endian bytes, bits packed ``(count + 7) // 8`` to
    the byte. Raises ``DeviceExceptionError`` for an exception response, ``FrameError`` for a PDU
    whose byte count does not match, ``UnexpectedResponseError`` for an answer to another function.
    """
    if pdu and pdu[0] == function:
        expected = 2 * count if function >= 3 else (count + 7) // 8
        if len(pdu) == expected + 2 and pdu[1] == expected:
            return pdu[2:]
        raise FrameError(f"function {function}: asked for {count} items, the response holds {len(pdu) - 2} bytes")
    response = decode_response(pdu)
    if isinstance(response, ExceptionResponse) and response.function == function:
        raise DeviceExceptionError(f"Modbus exception {response.code} ({response.description})", code=response.code)
    raise UnexpectedResponseError(f"sent function {function}, got an answer to function {response.function}")


# -------------------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``transaction_id`` is the MBAP one (0 for RTU)."""

    unit_id: int
    message: Message
    transaction_id: int = 0
    wire_size: int = field(default=0, compare=False)  # bytes it took on the wire, header included


def tcp_frame(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    """MBAP header + PDU. The length field counts the unit id and the PDU."""
    return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit_id) + pdu


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """Unit id + PDU + CRC-16 (low byte first)."""
    body = bytes((unit_id,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def encode_tcp(message: Message, *, unit_id: int, transaction_id: int) -> bytes:
    return tcp_frame(transaction_id, unit_id, message.encode())


def encode_rtu(message: Message, *, unit_id: int) -> bytes:
    return rtu_frame(unit_id, message.encode())


def rtu_char_time_s(baud: int, *, bits_per_char: int = 10) -> float:
    """Time one character takes on the line (8N1 = 10 bits: start, 8 data, stop)."""
    return bits_per_char / baud


def rtu_frame_gap_s(baud: int, *, bits_per_char: int = 10) -> float:
    """Silence that ends an RTU frame: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * rtu_char_time_s(baud, bits_per_char=bits_per_char)


# ------------------------------------------------------------------------------ stream decoders


class TcpFrameDecoder:
    """Splits a TCP byte stream into MBAP frames.

    A bad MBAP header (protocol id not 0, length outside 2..254) means the stream has lost its
    framing and cannot be resynchronised: everything buffered is dropped and a ``FrameError``
    returned, and the caller should close the connection (what Modbus/TCP devices do).
    """

    def __init__(self, *, expect: Expect) -> None:
        self._decode = decode_request if expect == "requests" else decode_response
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (at most one maximum-size frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        self._buffer += data
        frames, lost = split_mbap_frames(self._buffer)
        out: list[Frame | ProtocolError] = []
        for transaction_id, unit_id, pdu in frames:
            try:
                out.append(Frame(unit_id, self._decode(pdu), transaction_id, MBAP_SIZE + len(pdu)))
            except PduError as exc:
                exc.unit_id, exc.transaction_id = unit_id, transaction_id
                out.append(exc)
            except FrameError as exc:
                out.append(exc)
        if lost is not None:
            out.append(lost)
        return out


_MBAP_HEADER = struct.Struct(">HHHB")


def split_mbap_frames(buffer: bytearray) -> tuple[list[tuple[int, int, bytes]], FrameError | None]:
    """Take every complete MBAP frame off the front of ``buffer``: ``(transaction id, unit id, PDU)``.

    An incomplete frame stays in the buffer for the next bytes. A bad header (protocol id not 0,
    length outside 2..254) means the stream has lost its framing: the buffer is emptied and the
    error returned beside the frames before it.
    """
    frames: list[tuple[int, int, bytes]] = []
    pos, available = 0, len(buffer)
    while available - pos >= MBAP_SIZE:
        transaction_id, protocol_id, length, unit_id = _MBAP_HEADER.unpack_from(buffer, pos)
        if protocol_id != 0 or not 2 <= length <= MAX_PDU_SIZE + 1:
            del buffer[:]
            return frames, FrameError(f"bad MBAP header (protocol id {protocol_id}, length {length}): stream lost")
        end = pos + 6 + length
        if end > available:
            break
        frames.append((transaction_id, unit_id, bytes(buffer[pos + MBAP_SIZE : end])))
        pos = end
    del buffer[:pos]
    return frames, None


# Frame sizes of standard requests we do not serve, so a server can still find their end and
# answer "illegal function": fixed sizes, and (position of byte count, bytes before it + CRC).
_UNSUPPORTED_FIXED_SIZE = {7: 4, 8: 8, 11: 4, 12: 4, 17: 4, 22: 10, 24: 6, 43: 7}
_UNSUPPORTED_COUNTED = {20: 2, 21: 2, 23: 10}


def _rtu_request_size(buffer: bytearray, pos: int, available: int) -> int:
    """Frame size of the request starting at ``pos``: >0 size, 0 need more bytes, -1 not a frame."""
    function = buffer[pos + 1]
    if 1 <= function <= 6:
        return 8
    if function in (15, 16):
        if available < 7:
            return 0
        byte_count = buffer[pos + 6]
        limit = (MAX_WRITE_BITS + 7) // 8 if function == 15 else 2 * MAX_WRITE_REGISTERS
        return 9 + byte_count if 1 <= byte_count <= limit else -1
    if function in _UNSUPPORTED_FIXED_SIZE:
        return _UNSUPPORTED_FIXED_SIZE[function]
    if function in _UNSUPPORTED_COUNTED:
        count_at = _UNSUPPORTED_COUNTED[function]
        if available <= count_at:
            return 0
        size = count_at + 3 + buffer[pos + count_at]
        return size if size <= MAX_RTU_FRAME_SIZE else -1
    return -1


def _rtu_response_size(buffer: bytearray, pos: int, available: int) -> int:
    """Frame size of the response starting at ``pos``: >0 size, 0 need more bytes, -1 not a frame."""
    function = buffer[pos + 1]
    if function & 0x80:
        return 5 if function != 0x80 else -1
    if 1 <= function <= 4:
        byte_count = buffer[pos + 2]  # available >= 4, so present
        if byte_count == 0 or byte_count > 2 * MAX_READ_REGISTERS or (function >= 3 and byte_count % 2):
            return -1
        return 5 + byte_count
    if function in (5, 6, 15, 16):
        return 8
    return -1


class RtuFrameDecoder:
    """Splits an RTU byte stream into frames; resynchronises after garbage and bad CRCs.

    RTU has no length field: the size follows from the function code (and for some functions a
    byte count), and differs between requests and responses, hence ``expect``. A candidate whose
    CRC fails is dropped one byte at a time. A candidate still incomplete while a complete,
    CRC-valid frame follows it is garbage too (a bus carries one frame at a time), so a long
    bogus "length" in noise cannot stall the frames behind it. Each run of dropped bytes is
    reported once: ``CrcError`` if a CRC check failed in it, else ``FrameError``.
    """

    def __init__(self, *, expect: Expect) -> None:
        self._requests = expect == "requests"
        self._size = _rtu_request_size if self._requests else _rtu_response_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (at most one maximum-size frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        buffer = self._buffer
        buffer += data
        out: list[Frame | ProtocolError] = []
        available = len(buffer)
        pos = 0
        dropped = 0
        crc_failed = False
        while available - pos >= RTU_MIN_FRAME_SIZE:
            size = self._size(buffer, pos, available - pos)
            if size < 0:
                pos += 1
                dropped += 1
                continue
            if size == 0 or pos + size > available:
                following = self._next_complete_frame(pos + 1, available)
                if following < 0:
                    break
                dropped += following - pos
                pos = following
                continue
            end = pos + size
            if crc16(buffer[pos:end]):
                pos += 1
                dropped += 1
                crc_failed = True
                continue
            if dropped:
                out.append(self._dropped_error(dropped, crc_failed))
                dropped, crc_failed = 0, False
            out.append(self._frame(bytes(buffer[pos:end])))
            pos = end
        if dropped:
            out.append(self._dropped_error(dropped, crc_failed))
        del buffer[:pos]
        return out

    def _next_complete_frame(self, start: int, available: int) -> int:
        return self._next_complete_frame_in(self._buffer, start=start, available=available)

    def _next_complete_frame_in(self, buffer: bytes | bytearray, *, start: int, available: int | None = None) -> int:
        """Offset of the first complete, CRC-valid frame in ``buffer`` from ``start`` on, or -1."""
        available = len(buffer) if available is None else available
        for pos in range(start, available - RTU_MIN_FRAME_SIZE + 1):
            size = self._size(buffer, pos, available - pos)
            if size > 0 and pos + size <= available and not crc16(buffer[pos : pos + size]):
                return pos
        return -1

    @staticmethod
    def _dropped_error(dropped: int, crc_failed: bool) -> FrameError:
        if crc_failed:
            return CrcError(f"CRC mismatch: dropped {dropped} bytes while resynchronising")
        return FrameError(f"dropped {dropped} bytes that do not start a frame")

    def _frame(self, frame: bytes) -> Frame | ProtocolError:
        unit_id = frame[0]
        pdu = frame[1:-2]
        try:
            if self._requests:
                return Frame(unit_id, decode_request(pdu), 0, len(frame))
            return Frame(unit_id, decode_response(pdu), 0, len(frame))
        except PduError as exc:
            exc.unit_id = unit_id
            return exc
        except FrameError as exc:
            return exc
