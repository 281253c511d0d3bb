"""``daq serve``: an overview of every bench on the lab PC, read from their journals.

Each running bench writes a status snapshot into its journal every 2 s (``daq.status``); this reads
the latest run of each journal and that snapshot, in one background task every ``period_s`` (not per
client), so any number of browsers cost one read per journal. A bench started with ``--http``
puts its page's URL in the snapshot (``web.url``) and the overview links to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from daq.config.loader import load_bench
from daq.errors import ConfigError, DaqError
from daq.journal import JournalReader
from daq.status import STATUS_KEY
from daq.web.app import api_errors
from daq.web.static_files import load_static, page, static_handler

log = logging.getLogger(__name__)

NOT_RESPONDING_AFTER_S = 10.0  # a running bench whose snapshot is older than this is not answering


def find_journals(journals: list[str], bench_files: list[str]) -> list[Path]:
    """Journal files from ``--journal`` (files or folders of ``*.sqlite``) and bench files."""
    found: list[Path] = []
    problems: list[str] = []
    for item in journals:
        path = Path(item)
        if path.is_dir():
            hits = sorted(path.glob("*.sqlite"))
            if not hits:
                problems.append(f"--journal {item}: no *.sqlite journal in this folder")
            found += hits
        elif path.is_file():
            found.append(path)
        else:
            problems.append(f"--journal {item}: no such file or folder")
    for bench in bench_files:
        try:
            found.append(load_bench(bench).journal_path)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError("no journal to show; pass --journal DIR (e.g. journal/) or bench files")
    return unique


def read_bench(path: Path) -> dict[str, Any]:
    """What the overview shows of one journal's latest run (blocking: SQLite)."""
    entry: dict[str, Any] = {"journal": str(path), "error": ""}
    try:
        with JournalReader(path) as reader:
            run = reader.run("latest")
            status = reader.run_value(run.run_id, STATUS_KEY) or {}
    except (DaqError, OSError, ValueError) as exc:
        entry.update(bench=path.stem, state="unreadable", error=str(exc))
        return entry
    except Exception as exc:  # sqlite3.Error and friends: one bad journal must not hide the others
        entry.update(bench=path.stem, state="unreadable", error=f"cannot read journal: {exc}")
        return entry
    age = time.time() - float(status.get("updated_unix_s") or 0)
    state = run.status
    if state == "running" and (not status or age > NOT_RESPONDING_AFTER_S):
        state = "not responding"
    safety = (status.get("safety") or {}).get("monitor") or {}
    runner = status.get("runner") or {}
    web_section = status.get("web") or {}
    entry.update(
        bench=run.bench_id,
        run_id=run.run_id,
        state=state,
        reason=run.reason,
        started_ns=run.started_ns,
        updated_age_s=round(age, 1) if status else None,
        records=status.get("records", run.records),
        devices={name: d.get("quality", "") for name, d in (status.get("devices") or {}).items()},
        tripped=bool(safety.get("tripped")),
        alarms=int(safety.get("active_alarms") or 0),
        test=None
        if not runner
        else {k: runner.get(k) for k in ("phase", "cycle", "total_cycles", "step", "total_steps", "number", "label")},
        url=web_section.get("url") if run.status == "running" else None,
    )
    return entry


class Overview:
    def __init__(self, journals: list[Path], *, period_s: float = 2.0) -> None:
        self.journals = journals
        self.period_s = period_s
        self.benches: list[dict[str, Any]] = []
        self.payload = b'{"benches":[]}'

    async def refresh(self) -> None:
        self.benches = await asyncio.to_thread(lambda: [read_bench(p) for p in self.journals])
        self.payload = json.dumps({"benches": self.benches, "updated_unix_s": time.time()}).encode()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("overview: reading the journals failed")
            await asyncio.sleep(self.period_s)


def build_overview_app(overview: Overview) -> web.Application:
    app = web.Application(middlewares=[api_errors])
    assets = load_static()

    async def benches(_request: web.Request) -> web.Response:
        return web.Response(body=overview.payload, content_type="application/json")

    async def one(request: web.Request) -> web.Response:
        name = request.match_info["bench"]
        for entry in overview.benches:
            if entry.get("bench") == name:
                return web.json_response(entry)
        known = ", ".join(str(e.get("bench")) for e in overview.benches) or "none"
        return web.json_response({"error": f"no bench {name!r} here (benches: {known})", "status": 404}, status=404)

    app.router.add_get("/", page(assets, "overview.html"))
    app.router.add_get("/static/{name:.+}", static_handler(assets))
    app.router.add_get("/api/v1/benches", benches)
    app.router.add_get("/api/v1/benches/{bench}", one)
    app.router.add_get("/api/v1/openapi.json", page(assets, "openapi.json"))
    return app


async def serve_overview(
    overview: Overview, site: Any, stop: asyncio.Event, *, on_ready: Callable[[], None] | None = None
) -> None:
    """Run the overview until ``stop`` is set (Ctrl-C / SIGTERM in ``daq serve``)."""
    await overview.refresh()
    await site.start()
    if on_ready is not None:
        on_ready()
    task = asyncio.create_task(overview.run(), name="web:overview")
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await site.stop()
