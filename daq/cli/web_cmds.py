"""``daq serve``: the lab PC's overview of all benches, read from their journals, linking to each live page."""

from __future__ import annotations

import argparse
import asyncio
import signal

from daq.web.overview import Overview, build_overview_app, find_journals, serve_overview
from daq.web.server import SiteServer, parse_http

DEFAULT_HTTP = "127.0.0.1:8080"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web overview of the benches on this PC (state, test, alarms), linking to each bench's live page",
        description="Serve an overview of every bench whose journal is given. A bench's own live page, with its "
        "controls, comes from the bench process: daq run|demo|test start ... --http HOST:PORT.",
    )
    p.add_argument("benches", nargs="*", metavar="BENCH", help="bench files whose journals to show")
    p.add_argument(
        "--journal",
        action="append",
        default=[],
        metavar="PATH",
        help="a journal file or a folder of *.sqlite journals (repeatable; default: ./journal)",
    )
    p.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT", help=f"listen here (default {DEFAULT_HTTP})")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    journals = find_journals(args.journal or ([] if args.benches else ["journal"]), args.benches)
    host, port = parse_http(args.http)
    overview = Overview(journals)
    site = SiteServer(build_overview_app(overview), host=host, port=port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        await serve_overview(
            overview,
            site,
            stop,
            on_ready=lambda: print(f"bench overview: {site.url} ({len(journals)} journals)", flush=True),
        )

    asyncio.run(main())
    return 0
