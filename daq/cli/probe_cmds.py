"""``daq probe``: read a live Modbus device's registers, the technician's first tool on a new device.

Read-only by construction: only read requests (function codes 1-4) are ever sent, through the same
pymodbus link the bench uses. Two modes:

- a register range (``--table``, ``--start``, ``--count``): raw words with candidate decodings
  (u16/i16, and u32/i32/f32 in both word orders), to find where a device keeps what;
- ``--regmap FILE``: every channel of a register map decoded once, to check a map before a bench
  records with it;
- ``--bench FILE [--device NAME]``: a device of a bench file, reached and decoded as the bench
  would (its transport, unit id, timeout and register map); with ``--table/--start/--count`` its
  raw range instead.

A dead link, nothing listening or a wrong unit id is one line and exit 2 (the CLI's user-error path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import struct
from typing import Any

from daq.config.bench import ModbusDeviceConfig, SerialTransportConfig, TcpTransportConfig
from daq.config.loader import load_bench
from daq.errors import ConfigError, DaqError, DeviceExceptionError, ResponseTimeoutError
from daq.records import Quality
from drivers.modbus.candidates import decode_candidates, format_float, pair_columns
from drivers.modbus.codec import MAX_READ_BITS, MAX_READ_REGISTERS
from drivers.modbus.driver import EXCEPTION_NAMES, ModbusDriver, ModbusLink, SerialEndpoint, TcpEndpoint
from drivers.modbus.regmap import BIT_TABLES, load_regmap

GATEWAY_EXCEPTIONS = (10, 11)  # no device behind the gateway at that unit id
ILLEGAL_ADDRESS = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="read a live Modbus device's registers (read-only): raw words with candidate decodings, or a regmap",
        description="Read-only: sends read requests only. Example: daq probe --host 192.168.10.20 --table input"
        " --start 0 --count 20; daq probe --serial /dev/ttyUSB0 --baud 19200 --unit 3 --regmap my_cycler.yaml",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP device or serial gateway (IP address or name)")
    where.add_argument("--serial", metavar="PORT", help="Modbus RTU serial port, e.g. /dev/ttyUSB0")
    where.add_argument("--bench", metavar="FILE", help="probe a Modbus device of this bench file, as it is configured")
    p.add_argument("--device", help="with --bench: which Modbus device (needed when the bench has several)")
    p.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    p.add_argument("--framing", choices=["socket", "rtu"], default="socket", help="TCP: rtu for RTU over TCP")
    p.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")
    p.add_argument("--parity", choices=["N", "E", "O"], default="N")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    p.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    p.add_argument("--unit", type=int, help="Modbus unit id / slave address (default 1)")
    p.add_argument("--timeout", type=float, help="seconds to wait for each answer (default 1)")
    p.add_argument("--table", choices=["holding", "input", "coil", "discrete"], help="default holding")
    p.add_argument("--start", type=int, help="first address (0-based, as on the wire; default 0)")
    p.add_argument("--count", type=int, help="how many registers or bits (default 20)")
    p.add_argument("--regmap", help="decode every channel of this register map once (a file or builtin:NAME)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_probe)


def _fill_defaults(args: argparse.Namespace) -> None:
    """Options left out: from the bench file's device (``--bench``), else the documented defaults."""
    range_asked = any(getattr(args, k) is not None for k in ("table", "start", "count"))
    if args.bench:
        _from_bench(args, decode_map=not range_asked and not args.regmap)
    elif args.device:
        raise ConfigError("--device names a device of a bench file: pass --bench FILE too")
    for key, default in (("unit", 1), ("timeout", 1.0), ("table", "holding"), ("start", 0), ("count", 20)):
        if getattr(args, key) is None:
            setattr(args, key, default)


def _from_bench(args: argparse.Namespace, *, decode_map: bool) -> None:
    loaded = load_bench(args.bench)
    modbus = [d for d in loaded.config.devices if isinstance(d, ModbusDeviceConfig)]
    names = ", ".join(d.name for d in modbus) or "none"
    if args.device is None and len(modbus) != 1:
        raise ConfigError(f"{args.bench}: pass --device NAME to choose a Modbus device (it has: {names})")
    dev = modbus[0] if args.device is None else next((d for d in modbus if d.name == args.device), None)
    if dev is None:
        raise ConfigError(f"{args.bench}: no Modbus device named {args.device!r} (it has: {names})")
    transport = dev.transport
    simulated = transport.simulator if isinstance(transport, TcpTransportConfig) else None
    if isinstance(transport, SerialTransportConfig) and transport.port.startswith("sim:"):
        simulated = transport.port[4:]
    if simulated:
        raise ConfigError(
            f"{args.bench}: {dev.name} is reached through the in-process simulator {simulated}; run"
            f" `daq sim {args.bench}` and probe the address it prints with --host/--port or --serial"
        )
    if isinstance(transport, TcpTransportConfig):
        args.host, args.port, args.framing = transport.host, transport.port, transport.framing
    else:
        args.serial, args.baud, args.parity = transport.port, transport.baud, transport.parity
        args.bytesize, args.stopbits = transport.bytesize, transport.stopbits
    args.unit = dev.unit_id if args.unit is None else args.unit
    args.timeout = dev.timeout_s if args.timeout is None else args.timeout
    if decode_map:
        args.regmap = str(loaded.resolve(dev.regmap, "regmap"))


def _check_args(args: argparse.Namespace) -> None:
    problems = []
    if not 0 <= args.unit <= 247:
        problems.append(f"--unit {args.unit}: a Modbus unit id is 0..247")
    if not 0 < args.timeout <= 60:
        problems.append(f"--timeout {args.timeout}: give 0 < seconds <= 60")
    if not 0 <= args.start <= 0xFFFF:
        problems.append(f"--start {args.start}: addresses are 0..65535")
    if args.count < 1 or args.start + args.count > 0x10000:
        problems.append(f"--count {args.count}: give 1 or more, ending at address 65535 at the latest")
    if not 0 < args.port <= 65535:
        problems.append(f"--port {args.port}: give 1..65535")
    if problems:
        raise ConfigError(problems)


def _link(args: argparse.Namespace) -> ModbusLink:
    if args.host is not None:
        return ModbusLink(TcpEndpoint(args.host, args.port, framing=args.framing, timeout_s=args.timeout))
    return ModbusLink(
        SerialEndpoint(
            args.serial,
            baud=args.baud,
            parity=args.parity,
            bytesize=args.bytesize,
            stopbits=args.stopbits,
            timeout_s=args.timeout,
        )
    )


def _explain(exc: DaqError, link: ModbusLink, unit: int) -> DaqError:
    """The probe's errors as one line saying what to check."""
    if isinstance(exc, ResponseTimeoutError):
        return DaqError(
            f"{link.label}: unit {unit} did not answer within {link.endpoint.timeout_s:g} s; check --unit"
            " (the device's Modbus address), the wiring, baud rate and parity, or raise --timeout"
        )
    if isinstance(exc, DeviceExceptionError) and exc.code in GATEWAY_EXCEPTIONS:
        name = EXCEPTION_NAMES.get(exc.code, "gateway error")
        return DaqError(f"{link.label}: no device answers at unit {unit} (exception {exc.code}, {name}); check --unit")
    return exc


async def _read_words(link: ModbusLink, table: str, start: int, count: int, unit: int) -> list[Any]:
    """Words (or bits) from ``start``; None where the device refuses an address.

    A refused block (illegal data address: the device maps only part of it) is retried address by
    address, so one hole does not hide its neighbours.
    """
    bits = table in BIT_TABLES
    step = MAX_READ_BITS if bits else MAX_READ_REGISTERS
    out: list[Any] = []
    for first in range(start, start + count, step):
        n = min(step, start + count - first)
        try:
            out.extend(await _read(link, table, first, n, unit))
        except DeviceExceptionError as exc:
            if exc.code != ILLEGAL_ADDRESS:
                raise
            for address in range(first, first + n):
                try:
                    out.extend(await _read(link, table, address, 1, unit))
                except DeviceExceptionError as single:
                    if single.code != ILLEGAL_ADDRESS:
                        raise
                    out.append(None)
    return out


async def _read(link: ModbusLink, table: str, address: int, count: int, unit: int) -> list[Any]:
    data = await link.read(table, address, count, unit=unit)
    if isinstance(data, tuple):
        return list(data)
    return list(struct.unpack(f">{count}H", data))


async def probe_range(args: argparse.Namespace) -> dict[str, Any]:
    link = _link(args)
    try:
        await link.connect()
        values = await _read_words(link, args.table, args.start, args.count, args.unit)
    except DaqError as exc:
        raise _explain(exc, link, args.unit) from exc
    finally:
        link.close()
    result: dict[str, Any] = {
        "device": link.label,
        "unit": args.unit,
        "table": args.table,
        "start": args.start,
        "count": args.count,
    }
    if args.table in BIT_TABLES:
        result["bits"] = [{"address": args.start + k, "value": v} for k, v in enumerate(values)]
        return result
    rows = decode_candidates(args.start, values)
    result["registers"] = [
        {"address": r.address, "word": r.word, **r.single, **{k: _json_float(v) for k, v in r.pair.items()}}
        for r in rows
    ]
    return result


async def probe_regmap(args: argparse.Namespace) -> dict[str, Any]:
    regmap = load_regmap(args.regmap)
    link = _link(args)
    driver = ModbusDriver("probe", kind="probe", regmap=regmap, link=link, unit_id=args.unit)
    values = [math.nan] * len(driver.schema.channels)
    quality = bytearray(len(values))
    try:
        await driver.connect()  # reads the map's identification registers (strings, unpolled values)
        await driver.read(values, quality)
    except DaqError as exc:
        raise _explain(exc, link, args.unit) from exc
    finally:
        await driver.close()
    channels = []
    for channel, value, q in zip(driver.schema.channels, values, quality, strict=True):
        reg = regmap.by_name.get(channel.name) or regmap.bit_owner[channel.name][0]
        bit = regmap.bit_owner.get(channel.name)
        where = f"{reg.table} {reg.address} {reg.type}" + (f" bit {bit[1]}" if bit else "")
        channels.append(
            {
                "name": channel.name,
                "value": _json_float(value),
                "unit": channel.unit,
                "quality": Quality(q).label,
                "where": where,
            }
        )
    return {
        "device": link.label,
        "unit": args.unit,
        "regmap": regmap.name,
        "info": {k: _json_float(v) if isinstance(v, float) else v for k, v in driver.info.items()},
        "channels": channels,
    }


def _json_float(value: float) -> float | None:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _print_range(result: dict[str, Any]) -> None:
    print(
        f"{result['device']} unit {result['unit']}: {result['table']} {result['start']}.."
        f"{result['start'] + result['count'] - 1} (read-only probe)"
    )
    if "bits" in result:
        for row in result["bits"]:
            print(f"  {row['address']:>5}  {'-' if row['value'] is None else int(row['value'])}")
        return
    pairs = pair_columns()
    print(f"  {'addr':>5}  {'hex':>4}  {'u16':>6}  {'i16':>6}  " + "  ".join(f"{c:>12}" for c in pairs))
    for row in result["registers"]:
        if row["word"] is None:
            print(f"  {row['address']:>5}  ----  (the device refuses this address)")
            continue
        cells = []
        for c in pairs:
            v = row.get(c, "")
            cells.append(f"{'' if v == '' else '-' if v is None else _pair_text(c, v):>12}")
        print(f"  {row['address']:>5}  {row['word']:04x}  {row['u16']:>6}  {row['i16']:>6}  " + "  ".join(cells))
    print("  (u32/i32/f32 columns decode this word and the next; big = high word first)")


def _pair_text(column: str, value: float | int) -> str:
    return format_float(value) if column.startswith("f32") else f"{int(value)}"


def _print_regmap(result: dict[str, Any]) -> None:
    print(f"{result['device']} unit {result['unit']}: register map {result['regmap']} (read-only probe)")
    for name, value in result["info"].items():
        print(f"  {name}: {value}")
    width = max((len(c["name"]) for c in result["channels"]), default=8)
    for c in result["channels"]:
        value = "-" if c["value"] is None else f"{c['value']:.7g}"
        print(f"  {c['name']:<{width}}  {value:>14} {c['unit']:<5}  {c['quality']:<16}  {c['where']}")


def cmd_probe(args: argparse.Namespace) -> int:
    _fill_defaults(args)
    _check_args(args)
    if args.regmap:
        result = asyncio.run(probe_regmap(args))
        printer = _print_regmap
    else:
        result = asyncio.run(probe_range(args))
        printer = _print_range
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        printer(result)
    return 0
