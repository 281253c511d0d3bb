"""HTTP routes of one bench: the page, its JSON API (``/api/v1``), the SSE stream and the controls.

Every API error is a JSON body ``{"error": "...", "status": N}`` with that HTTP status; nothing
a client sends can stop the bench. The API is described in ``static/openapi.json``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daq.web.auth import ControlGate, ControlRefused
from daq.web.controls import TEST_ACTIONS, acknowledge, test_command
from daq.web.feed import LiveFeed
from daq.web.static_files import load_static, page, static_handler

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

FEED_KEY = web.AppKey("feed", LiveFeed)
STATS_KEY = web.AppKey("stats", dict)
MAX_TEXT = 500  # who / reason / note: a line, not a document


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors under /api are JSON; a handler bug is a 500 with one line, the bench keeps running."""
    try:
        return await handler(request)
    except ControlRefused as exc:
        return json_error(exc.status, exc.message)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return json_error(exc.status, exc.text or exc.reason)
    except ConnectionResetError:
        raise
    except Exception as exc:
        log.exception("web: %s %s failed", request.method, request.path)
        return json_error(500, f"internal error: {exc}")


def build_bench_app(bench: Bench, feed: LiveFeed, gate: ControlGate) -> web.Application:
    app = web.Application(middlewares=[api_errors])
    app[FEED_KEY] = feed
    app[STATS_KEY] = {"sse_clients": 0, "commands": 0}
    assets = load_static()
    routes = BenchRoutes(bench, feed, gate, app[STATS_KEY])
    app.router.add_get("/", page(assets, "bench.html"))
    app.router.add_get("/static/{name:.+}", static_handler(assets))
    app.router.add_get("/api/v1/openapi.json", page(assets, "openapi.json"))
    app.router.add_get("/api/v1/status", routes.status)
    app.router.add_get("/api/v1/devices", routes.devices)
    app.router.add_get("/api/v1/devices/{name}", routes.device)
    app.router.add_get("/api/v1/alarms", routes.alarms)
    app.router.add_get("/api/v1/test", routes.test)
    app.router.add_get("/api/v1/trend", routes.trend)
    app.router.add_get("/api/v1/stream", routes.stream)
    app.router.add_post("/api/v1/commands/{action}", routes.command)
    return app


class BenchRoutes:
    def __init__(self, bench: Bench, feed: LiveFeed, gate: ControlGate, stats: dict[str, int]) -> None:
        self.bench = bench
        self.feed = feed
        self.gate = gate
        self.stats = stats

    def _snapshot(self) -> dict[str, Any]:
        if not self.feed.snapshot:
            self.feed.publish()  # first request before the feed's first tick
        return self.feed.snapshot

    async def status(self, _request: web.Request) -> web.Response:
        self._snapshot()
        return web.Response(body=self.feed.payload, content_type="application/json")

    async def devices(self, _request: web.Request) -> web.Response:
        return web.json_response({"devices": self._snapshot()["devices"]})

    async def device(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._snapshot()
        dev = self.feed.device(name)
        if dev is None:
            known = ", ".join(self.bench.pollers) or "none"
            return json_error(404, f"no device {name!r} on bench {self.bench.bench_id} (devices: {known})")
        return web.json_response(dev)

    async def alarms(self, _request: web.Request) -> web.Response:
        safety = self._snapshot()["safety"]
        if safety is None:
            return web.json_response({"monitor": False, "tripped": False, "latched": [], "active": []})
        return web.json_response({"monitor": True, **safety})

    async def test(self, _request: web.Request) -> web.Response:
        test = self._snapshot()["test"]
        if test is None:
            return json_error(404, f"no test is running on bench {self.bench.bench_id} (start one with daq test start)")
        return web.json_response(test)

    async def trend(self, _request: web.Request) -> web.Response:
        self._snapshot()
        return web.json_response(self.feed.trend_json())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``snapshot`` event per feed tick, the same bytes for every client."""
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        self.stats["sse_clients"] += 1
        feed = self.feed
        try:
            await resp.write(b"retry: 1000\n\n")  # the browser reconnects 1 s after a restart
            version = 0
            while not feed.closed.is_set():
                version = await feed.wait_newer(version)
                if feed.closed.is_set():
                    break
                await resp.write(b"event: snapshot\ndata: " + feed.payload + b"\n\n")
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            self.stats["sse_clients"] -= 1
        return resp

    async def command(self, request: web.Request) -> web.Response:
        self.gate.check(request.headers.get("Authorization"))
        action = request.match_info["action"]
        if action not in (*TEST_ACTIONS, "ack"):
            return json_error(404, f"unknown command {action!r}; use pause, resume, abort or ack")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, 'the body must be JSON, e.g. {"who": "alice", "reason": "lunch"}')
        if not isinstance(body, dict):
            return json_error(400, 'the body must be a JSON object, e.g. {"who": "alice"}')
        who = str(body.get("who") or "").strip()[:MAX_TEXT]
        if not who:
            return json_error(400, "give who: the operator's name (it is recorded in the journal)")
        text = str(body.get("reason") or body.get("note") or "").strip()[:MAX_TEXT]
        who = f"{who} (web)"
        journal = self.bench.journal.path
        self.stats["commands"] += 1
        if action == "ack":
            safety = self.bench.safety
            if safety is None:
                return json_error(409, f"bench {self.bench.bench_id} has no safety monitor: nothing to acknowledge")
            if not safety.tripped:
                return json_error(409, "no trip is latched: nothing to acknowledge")
            result = await acknowledge(journal, self.bench.run_id, who=who, note=text)
        else:
            runner = self.feed.runner_source()
            if runner is None:
                return json_error(
                    409, f"no test is running on bench {self.bench.bench_id}: nothing to {action} (daq test start)"
                )
            result = await test_command(journal, runner.run_id, action, who=who, reason=text)
        self.feed.publish()  # show the new state at once
        return web.json_response(result)
