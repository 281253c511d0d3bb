"""``daq validate`` and ``daq schema``."""

from __future__ import annotations

import argparse
import json
import sys

from daq.busbudget import bus_budgets
from daq.config.bench import BenchConfig, CanDeviceConfig, SerialBmsDeviceConfig
from daq.config.loader import load_bench

EXIT_BUS_OVERLOADED = 2  # like any other problem the bench file has


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a bench file and everything it refers to")
    p.add_argument("config", help="bench file (YAML)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schema", help="print the bench file's JSON Schema (for editor completion)")
    p.set_defaults(func=cmd_schema)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_bench(args.config)
    cfg = loaded.config
    budgets = bus_budgets(cfg, loaded.regmaps)
    overloaded = [b for b in budgets if not b.ok]
    verdict = "bus overloaded" if overloaded else "ok"
    devices = len(cfg.devices)
    print(f"{verdict}: {args.config}: bench {cfg.bench.id}, {devices} device(s), config hash {loaded.config_hash}")
    for dev in cfg.devices:
        regmap = loaded.regmaps.get(dev.name)
        if isinstance(dev, SerialBmsDeviceConfig):
            what = f"{dev.kind} BMS, {dev.cells} cells, {dev.sensors} temperature sensors"
        elif isinstance(dev, CanDeviceConfig):
            mapping = loaded.can_mappings[dev.name]
            what = (
                f"CAN BMS on {dev.interface}:{dev.channel}, {dev.cells} cells, {dev.sensors} temperature sensors"
                f" from {len(mapping.frames)} DBC messages ({len(mapping.sources)} frames per cycle)"
            )
        else:
            what = f"{len(regmap.polled) if regmap else 0} registers polled"
        print(f"  {dev.name:<16} {dev.role:<7} every {dev.poll_period_s:g} s, {what}")
    for budget in budgets:
        for line in budget.describe():
            print(f"  {line}")
    for budget in overloaded:
        print(f"error: {args.config}: {budget.problem()}", file=sys.stderr)
    return EXIT_BUS_OVERLOADED if overloaded else 0


def cmd_schema(args: argparse.Namespace) -> int:
    schema = BenchConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "daq bench file"
    print(json.dumps(schema, indent=2))
    return 0
