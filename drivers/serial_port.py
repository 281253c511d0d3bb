"""Pre-flight check of a serial port, so a wrong path or a busy port is one clear error at start."""

from __future__ import annotations

import os

import serial

from daq.errors import ConnectError


def check_serial_port(path: str) -> None:
    """Open and close ``path`` exclusively; raise ``ConnectError`` saying why it cannot be used."""
    if not os.path.exists(path):
        raise ConnectError(
            f"serial port {path} does not exist; check the cable and the device path (ls /dev/serial/by-id/)"
        )
    try:
        port = serial.Serial(path, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        text = str(exc)
        if "lock" in text.lower() or "busy" in text.lower():
            raise ConnectError(
                f"serial port {path} is in use by another program; stop it or pick another port"
            ) from exc
        if "ermission" in text:
            raise ConnectError(f"no permission to open serial port {path}; add your user to the dialout group") from exc
        raise ConnectError(f"cannot open serial port {path}: {text}") from exc
    port.close()
