"""The ``daq`` console script: Ctrl-C while the program is still loading is a stop, not a traceback.

``daq.cli.main`` imports every command module (pydantic models, numpy, aiohttp, ...), which takes a
noticeable part of a second; a Ctrl-C in that time would otherwise print the import traceback.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def run() -> int:
    try:
        from daq.cli.main import main

        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
