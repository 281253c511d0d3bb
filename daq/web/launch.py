"""``--http HOST:PORT`` for the commands that run a bench (``daq run``, ``daq demo``, ``daq test start``)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from daq.web.feed import RunnerSource

if TYPE_CHECKING:
    from daq.bench import Bench
    from daq.web.server import BenchWebServer


def add_http_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the live bench page here, e.g. 127.0.0.1:8080 (keep 127.0.0.1 and use a TLS reverse proxy "
        "to reach it from other machines; see docs/web.md)",
    )


async def start_web(bench: Bench, http: str | None, runner_source: RunnerSource | None = None) -> BenchWebServer | None:
    """Bind the page's port (ConfigError when it is taken) and start its feed; None without ``--http``."""
    if not http:
        return None
    from daq.web.server import BenchWebServer, parse_http  # only --http pays for the web server

    host, port = parse_http(http)
    server = BenchWebServer(bench, host=host, port=port, runner_source=runner_source)
    await server.start()
    print(f"live bench page: {server.url}", file=sys.stderr, flush=True)
    return server


async def stop_web(server: BenchWebServer | None) -> None:
    if server is not None:
        await server.stop()
