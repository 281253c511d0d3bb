"""Load a DBC file with cantools, turning its failures into one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daq.errors import ConfigError


def load_dbc(path: Path) -> Any:
    """The cantools Database of ``path``; ConfigError (one line: file, what is wrong) otherwise."""
    import cantools  # CAN benches only pay for it

    if not path.is_file():
        raise ConfigError(f"{path}: DBC file not found; the dbc: path is relative to the bench file")
    try:
        db = cantools.database.load_file(path, database_format="dbc", strict=True)
    except Exception as exc:  # cantools raises parse errors of several kinds (textparser, its own, ValueError)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"{path}: not a valid DBC file: {detail}; fix the file or use the one the supplier sent"
        ) from exc
    if not db.messages:
        raise ConfigError(f"{path}: the DBC file defines no messages (BO_ lines); is it the right file?")
    return db
