"""Read a configuration file, turning every way it can fail into one clear ConfigError line.

Every file kind (bench file, register map, profile, limit set, time-series CSV) comes through
``read_config_text``: missing files, folders, unreadable files, binary files, other encodings and
files far too large to be a configuration all end in one line that names the file and the fix.
YAML files then go through ``read_yaml_mapping``, which also refuses alias bombs (a few anchors
that expand to millions of values) with one line, before any schema check sees them.
"""

from __future__ import annotations

import codecs
import stat
from pathlib import Path
from typing import Any

import yaml

from daq.errors import ConfigError

# libyaml's safe loader when PyYAML was built with it (10x faster on a 200-device bench file)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The largest shipped bench (200 devices) is ~60 kB; anything this big is not a hand-written config.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Values a loaded document may expand to, aliases counted each time they are used. A 200-device
# bench file has ~10k; a "billion laughs" file has 9**9.
MAX_EXPANDED_VALUES = 100_000

# Byte-order marks we decode rather than refuse: editors on lab PCs write UTF-8 with a BOM and
# (Windows Notepad's "Unicode") UTF-16. UTF-32 marks first: they begin with the UTF-16 ones.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode(path: Path, data: bytes, what: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{path}: starts like a {encoding} text file but byte {exc.start} is not valid {encoding}; "
                    f"save the {what} as UTF-8"
                ) from None
    if b"\x00" in data[:8192]:
        raise ConfigError(f"{path}: is a binary file, not a {what}; check the path (a {what} is a UTF-8 text file)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; "
            f"save the {what} as UTF-8 (or check that this is the right file)"
        ) from None


def read_config_text(path: Path, what: str, *, not_found_hint: str = "check the path") -> str:
    """The text of a configuration file. ``what`` names the file kind in messages ("bench file")."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: is a folder, expected a {what}")
        if not stat.S_ISREG(mode):  # a FIFO or device would block the read forever
            raise ConfigError(f"{path}: is not a regular file (a pipe, socket or device), expected a {what}")
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found; {not_found_hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a {what}") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read {what}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB, far too large for a {what}; "
            "check the path"
        )
    return _decode(path, data, what)


def _expanded_size_exceeds(data: Any, limit: int) -> bool:
    """Whether ``data`` has more than ``limit`` values, counting a shared (aliased) node each time
    it is used. Iterative with an early stop, so a bomb or a self-referencing alias costs ``limit``."""
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def read_yaml_mapping(path: Path, what: str, *, mapping_hint: str = "") -> dict[str, Any]:
    """The file's top-level mapping. ``what`` names the file kind in messages ("bench file")."""
    text = read_config_text(path, what)
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: not valid YAML (YAML syntax error: {problem}); fix the indentation or quoting there"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a {what}; check the file") from None
    if _expanded_size_exceeds(data, MAX_EXPANDED_VALUES):
        raise ConfigError(
            f"{path}: expands to more than {MAX_EXPANDED_VALUES:,} values through YAML aliases (*name); "
            f"a {what} does not need that many: remove the repeated aliases"
        )
    if not isinstance(data, dict):
        hint = f"; {mapping_hint}" if mapping_hint else ""
        raise ConfigError(f"{path}: a {what} must be a mapping of keys, not {type(data).__name__}{hint}")
    return data
