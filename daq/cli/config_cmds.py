"""``daq validate`` and ``daq schema``."""

from __future__ import annotations

import argparse
import json

from daq.config.bench import BenchConfig
from daq.config.loader import load_bench


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a bench file and everything it refers to")
    p.add_argument("config", help="bench file (YAML)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schema", help="print the bench file's JSON Schema (for editor completion)")
    p.set_defaults(func=cmd_schema)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_bench(args.config)
    cfg = loaded.config
    print(f"ok: {args.config}: bench {cfg.bench.id}, {len(cfg.devices)} device(s), config hash {loaded.config_hash}")
    for dev in cfg.devices:
        regmap = loaded.regmaps.get(dev.name)
        channels = len(regmap.polled) if regmap else 0
        print(f"  {dev.name:<16} {dev.role:<7} every {dev.poll_period_s:g} s, {channels} registers polled")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    schema = BenchConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "daq bench file"
    print(json.dumps(schema, indent=2))
    return 0
