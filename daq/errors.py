"""The project's one error tree.

    DaqError
    ├── ConfigError                 a bench, regmap, limit or profile file is wrong (user error)
    ├── DriverError                 talking to a device failed
    │   ├── TransportError          connect, timeout, connection lost, port busy
    │   │   ├── ConnectError
    │   │   └── ResponseTimeoutError
    │   ├── ProtocolError           bad frame, bad checksum, unexpected response
    │   ├── DeviceExceptionError    the device answered with an exception code
    │   ├── SetpointRangeError      a write was refused before sending: value outside its range
    │   └── InterlockError          a command refused because a safety trip is latched
    ├── DeviceLimitError            device-side limits could not be written or did not read back
    ├── JournalError                the local store cannot be opened or written
    └── SinkError                   MQTT / InfluxDB delivery problem

A safety trip is an event, not an exception. User errors (ConfigError and friends) are printed
by the CLI as one line with no traceback; ``str(err)`` must therefore name what, where and how to fix.
"""

from __future__ import annotations


class DaqError(Exception):
    """Base of every error this project raises on purpose."""


_CONTROL_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7F, 0x85, 0x2028, 0x2029)}


class ConfigError(DaqError):
    """A configuration file is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        lines = [problems] if isinstance(problems, str) else list(problems)
        # One line per problem, whatever a file's keys or values hold (a key with a newline in it).
        self.problems = [line.translate(_CONTROL_ESCAPES) for line in lines]
        super().__init__("\n".join(self.problems))


class DriverError(DaqError):
    """Talking to a device failed."""


class TransportError(DriverError):
    """The link to a device is down or did not answer."""


class ConnectError(TransportError):
    """Cannot open the link (refused, unreachable, serial port missing or busy)."""


class ResponseTimeoutError(TransportError):
    """The device did not answer in time."""


class ProtocolError(DriverError):
    """A frame was malformed, failed its checksum or did not match the request."""


class DeviceExceptionError(DriverError):
    """The device answered with an exception (e.g. a Modbus exception code)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


class SetpointRangeError(DriverError):
    """A setpoint outside the register's allowed range; nothing was sent."""


class InterlockError(DriverError):
    """A command refused because a safety trip is latched; nothing was sent."""


class DeviceLimitError(DaqError):
    """Device limits could not be written or did not read back: the bench must not start."""


class JournalError(DaqError):
    """The journal cannot be opened or written."""


class SinkError(DaqError):
    """A sink (MQTT, InfluxDB) could not deliver."""
