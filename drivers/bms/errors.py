"""Typed errors of the BMS serial codecs (JBD, Daly), shared so a driver can catch them by kind.

ProtocolError (daq.errors)
└── BmsFrameError               one unusable frame; ``raw`` holds the offending bytes
    ├── StartByteError          the bytes do not begin with the protocol's start byte
    ├── TruncatedFrameError     fewer bytes than the frame header announces
    ├── LengthMismatchError     the length byte disagrees with the bytes that arrived
    ├── MissingEndByteError     no end byte where the length says it must be
    ├── ChecksumError           the checksum does not match (``expected``, ``received``)
    ├── UnexpectedResponseError a valid frame, but not the answer asked for (register,
    │                           command, address, frame number)
    ├── PayloadError            a valid frame whose payload cannot hold what it claims
    ├── SkippedBytesError       bytes dropped while a stream decoder hunted for a frame start
    ├── MissingFramesError      a multi-frame answer lacks frames (``missing`` numbers)
    └── DuplicateFrameError     a multi-frame answer repeated a frame (``frame_number``)
DeviceExceptionError (daq.errors)
└── BmsStatusError              the BMS answered with a non-zero status byte (``code``)
"""

from __future__ import annotations

from daq.errors import DeviceExceptionError, ProtocolError


class BmsFrameError(ProtocolError):
    """A BMS frame that cannot be used."""

    def __init__(self, message: str, *, raw: bytes = b"") -> None:
        self.raw = bytes(raw)
        super().__init__(message)


class StartByteError(BmsFrameError):
    """The bytes do not begin with the protocol's start byte."""


class TruncatedFrameError(BmsFrameError):
    """The frame ended before the length its header announces."""


class LengthMismatchError(BmsFrameError):
    """The length byte disagrees with the number of bytes in the frame."""


class MissingEndByteError(BmsFrameError):
    """The byte where the frame must end is not the end byte."""


class ChecksumError(BmsFrameError):
    """The frame's checksum does not match its content."""

    def __init__(self, message: str, *, raw: bytes = b"", expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        super().__init__(message, raw=raw)


class UnexpectedResponseError(BmsFrameError):
    """A valid frame that is not the answer that was asked for."""


class PayloadError(BmsFrameError):
    """A valid frame whose payload is too short or inconsistent for its content."""


class SkippedBytesError(BmsFrameError):
    """Bytes a stream decoder discarded while looking for the start of a frame."""


class MissingFramesError(BmsFrameError):
    """A multi-frame answer is incomplete."""

    def __init__(self, message: str, *, missing: tuple[int, ...]) -> None:
        self.missing = missing
        super().__init__(message)


class DuplicateFrameError(BmsFrameError):
    """A multi-frame answer contained the same frame number twice."""

    def __init__(self, message: str, *, raw: bytes = b"", frame_number: int) -> None:
        self.frame_number = frame_number
        super().__init__(message, raw=raw)


class BmsStatusError(DeviceExceptionError):
    """The BMS answered, with a status byte that says the request failed."""

    def __init__(self, message: str, *, code: int, register: int) -> None:
        self.register = register
        super().__init__(message, code=code)
