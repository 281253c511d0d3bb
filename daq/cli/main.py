"""``daq`` command line. User errors print one line per problem and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from daq import __version__
from daq.cli import (
    bench_cmds,
    config_cmds,
    data_cmds,
    install_cmds,
    probe_cmds,
    report_cmds,
    safety_cmds,
    sink_cmds,
    status_cmds,
    test_cmds,
    web_cmds,
)
from daq.errors import ConfigError, DaqError
from daq.service import use_journald_format

EXIT_USER_ERROR = 2
COMMAND_MODULES = [bench_cmds, config_cmds, data_cmds, status_cmds, safety_cmds, report_cmds, test_cmds, sink_cmds]
COMMAND_MODULES += [install_cmds, probe_cmds]  # installing and commissioning a bench
COMMAND_MODULES += [web_cmds]  # the live page and the lab overview


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daq",
        description="Data acquisition for battery-pack test benches.",
    )
    parser.add_argument("--version", action="version", version=f"daq {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    use_journald_format()  # under systemd: <priority> prefixes, journald stamps the time
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its errors reach us as exceptions
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except DaqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
