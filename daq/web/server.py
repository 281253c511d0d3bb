"""Start and stop an aiohttp site inside an asyncio program; one clear error when the port is taken."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from daq.errors import ConfigError
from daq.sinks.credentials import read_optional_secret
from daq.web.app import STATS_KEY, build_bench_app
from daq.web.auth import ControlGate
from daq.web.feed import LiveFeed, RunnerSource

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0


def parse_http(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (host 127.0.0.1) for ``--http``; ConfigError naming the fix."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--http {text}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--http {text}: port must be 0..65535")
    return host, port


class SiteServer:
    """An aiohttp ``Application`` on one host:port (port 0 picks a free one: see ``url``)."""

    def __init__(self, app: web.Application, *, host: str, port: int, what: str = "--http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.what = what
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            why = (
                "the port is in use; pick another with --http HOST:PORT or stop what listens there"
                if exc.errno == errno.EADDRINUSE
                else f"{exc.strerror or exc}; check the address"
            )
            raise ConfigError(f"{self.what} {self.host}:{self.port}: cannot listen: {why}") from None
        self._runner = runner
        if runner.addresses:
            self.port = int(runner.addresses[0][1])  # the port the OS chose for port 0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class BenchWebServer:
    """The live page of one running bench: a ``LiveFeed`` task plus the HTTP site."""

    def __init__(self, bench: Bench, *, host: str, port: int, runner_source: RunnerSource | None = None) -> None:
        web_cfg = bench.loaded.config.web
        token = read_optional_secret(web_cfg.token, what=f"{bench.loaded.path}: web.token")
        self.gate = ControlGate(enabled=web_cfg.controls, token=token)
        self.bench = bench
        self.feed = LiveFeed(
            bench,
            trend_window_s=web_cfg.trend_window_s,
            runner_source=runner_source,
            controls_enabled=self.gate.enabled,
        )
        self.app = build_bench_app(bench, self.feed, self.gate)
        self.site = SiteServer(self.app, host=host, port=port)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.site.url

    async def start(self) -> None:
        await self.site.start()
        self._task = asyncio.create_task(self.feed.run(), name="web:feed")
        self.bench.status_providers["web"] = self.status

    def status(self) -> dict[str, object]:
        """The ``web`` section of the bench status; ``daq serve`` links to ``url`` from its overview."""
        stats = self.app[STATS_KEY]
        return {"url": self.url, "sse_clients": stats["sse_clients"], "controls": self.gate.enabled}

    async def stop(self) -> None:
        self.bench.status_providers.pop("web", None)
        self.feed.close()  # ends the SSE streams, so the site stops at once
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.site.stop()
