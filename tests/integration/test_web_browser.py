"""The live bench page in a real headless Chromium against a simulated bench running a test.

The bench is the real one (simulated cycler over Modbus TCP, JBD BMS on a pty, safety monitor,
test runner); the page talks to the real aiohttp server over a socket. The controls go through
the journal, so the checks read the journal, as ``daq test status`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.config.loader import load_bench
from daq.runner import TestSession, prepare_test
from daq.web.server import BenchWebServer
from tests.helpers import wait_until
from tests.integration.browser import browser_page
from tests.integration.test_safety_support import journal_events, safety_bench

TOKEN_ENV = "DAQ_WEB_TEST_TOKEN"
TOKEN = "correct-horse-battery"
LIMITS: dict[str, Any] = {"data_age_max_s": {"warn": 1.0, "trip": 2.0}}
SCREENSHOT_DIR_ENV = "DAQ_WEB_SCREENSHOTS"  # keep the screenshots there to look at them (default: tmp_path)
UI_TIMEOUT_MS = 20_000


@dataclass
class WebRig:
    session: TestSession
    server: BenchWebServer
    task: asyncio.Task[Any]

    @property
    def url(self) -> str:
        return self.server.url

    def events(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        return journal_events(self.session.bench.journal.path, self.session.run_id, prefix)


def write_bench(tmp_path: Path, *, controls: bool = True) -> Path:
    path = safety_bench(tmp_path, LIMITS, bms="jbd", poll_period_s=0.1, bms_poll_period_s=0.2)
    cfg = yaml.safe_load(path.read_text())
    cfg["web"] = {"controls": controls, "token": {"env": TOKEN_ENV}} if controls else {}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_profile(tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    steps = [{"kind": "cc", "label": "long discharge", "direction": "discharge", "current_a": 20, "duration_s": 3600}]
    path.write_text(yaml.safe_dump({"name": "web-discharge", "record_period_s": 0.1, "steps": steps}))
    return path


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebRig]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    session = TestSession(prepare_test(load_bench(write_bench(tmp_path)), write_profile(tmp_path)))
    server = BenchWebServer(session.bench, host="127.0.0.1", port=0, runner_source=lambda: session.runner)
    await server.start()
    outcome = None
    task: asyncio.Task[Any] | None = None
    try:
        await session.start()
        task = asyncio.create_task(session.run(), name="test:run")
        await wait_until(lambda: (server.feed.snapshot.get("test") or {}).get("phase") == "running", what="the feed")
        web_rig = WebRig(session, server, task)
        yield web_rig
        server = web_rig.server  # a test may have restarted it
        if session.runner is not None and session.runner.phase in ("running", "paused"):
            session.runner.request_exit("end of the web test")
        outcome = await asyncio.wait_for(task, 20)
    finally:
        if task is not None and not task.done():
            task.cancel()
        await server.stop()
        await session.close(outcome)


async def _text(page: Any, selector: str) -> str:
    return (await page.locator(selector).first.text_content() or "").strip()


async def test_page_shows_the_bench_live_and_its_controls_work(rig: WebRig, tmp_path: Path) -> None:
    shots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    sim = rig.session.bench.simulation.cyclers["sim-0"]
    async with browser_page() as page:
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept("lunch break")

        page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
        await page.goto(rig.url)

        # Live values: the cycler's voltage as the page shows it, and it moves under the discharge.
        voltage = '#dev-cycler-0 tr[data-channel="voltage_v"] td.value'
        await page.wait_for_function(
            "() => document.querySelector('#conn').textContent === 'live'", timeout=UI_TIMEOUT_MS
        )
        await page.wait_for_selector(voltage, timeout=UI_TIMEOUT_MS)
        first = await _text(page, voltage)
        real = sim.read("voltage_v")
        assert abs(float(first) - real) < 0.5, (first, real)
        await page.wait_for_function(
            f"(v) => document.querySelector('{voltage}').textContent !== v", arg=first, timeout=UI_TIMEOUT_MS
        )
        current = float(await _text(page, '#dev-cycler-0 tr[data-channel="current_a"] td.value'))
        assert current == pytest.approx(-20, abs=0.5)  # + = charge: a discharge is negative

        # Cells from the BMS, the test's progress and its end condition.
        await page.wait_for_function(
            "() => document.querySelector('#cell-summary').textContent.includes('14 cells')", timeout=UI_TIMEOUT_MS
        )
        assert "spread" in await _text(page, "#cell-summary")
        assert await _text(page, "#t-profile") == "web-discharge"
        assert await _text(page, "#t-phase") == "running"
        assert "long discharge" in await _text(page, "#t-step")
        assert "step time 01:00:00" in await _text(page, "#t-ends")
        await page.screenshot(path=str(shots / "web-bench-running.png"), full_page=True)

        # A control without the token is refused, and the test keeps running.
        await page.fill("#op-who", "alice")
        await page.click("#btn-pause")
        await page.wait_for_function(
            "() => document.querySelector('#control-result').dataset.status === '401'", timeout=UI_TIMEOUT_MS
        )
        assert "token" in await _text(page, "#control-result")
        assert rig.session.runner.phase == "running" and sim.output_on

        # With the token, pause from the page pauses the runner, through the journal.
        await page.fill("#op-token", TOKEN)
        await page.click("#btn-pause")
        await page.wait_for_function(
            "() => document.querySelector('#control-result').dataset.status === '200'", timeout=UI_TIMEOUT_MS
        )
        assert dialogs and "pause" in dialogs[-1]
        assert rig.session.runner.phase == "paused" and not sim.output_on
        await wait_until(lambda: bool(rig.events("runner.paused")), what="runner.paused committed to the journal")
        paused = [d for _, d in rig.events("runner.paused")]
        assert [(d["who"], d["reason"]) for d in paused] == [("alice (web)", "lunch break")]
        await page.wait_for_function(
            "() => document.querySelector('#t-phase').textContent === 'paused'", timeout=UI_TIMEOUT_MS
        )
        assert await page.is_enabled("#btn-resume") and not await page.is_enabled("#btn-pause")

        # A dead BMS shows as a quality mark on its values, then trips the data-age limit.
        rig.session.bench.simulation.faults["sim-bms"].silent = True
        await page.wait_for_function(
            "() => ['timeout', 'stale'].includes(document.querySelector('#dev-bms-1').dataset.quality)",
            timeout=UI_TIMEOUT_MS,
        )
        await page.wait_for_function("() => !document.querySelector('#trip-banner').hidden", timeout=UI_TIMEOUT_MS)
        banner = await _text(page, "#trip-banner")
        assert "TRIPPED" in banner and "bms-1" in banner
        assert "data_age" in await page.locator("#alarms li.trip").first.get_attribute("data-limit")
        await page.screenshot(path=str(shots / "web-bench-tripped.png"), full_page=True)

        # Acknowledge from the page once the BMS is back: recorded with who, released by the monitor.
        rig.session.bench.simulation.faults["sim-bms"].silent = False
        await wait_until(lambda: rig.session.bench.latest["bms-1"].all_good(), what="the BMS answering again")
        await page.click("#btn-ack")
        await page.wait_for_function(
            "() => document.querySelector('#control-result').textContent.startsWith('ack: acknowledged')",
            timeout=UI_TIMEOUT_MS,
        )
        acks = [d for _, d in rig.events("alarm.acknowledge_request")]
        assert [d["who"] for d in acks] == ["alice (web)"]
        await wait_until(lambda: not rig.session.bench.safety.tripped, what="the latch released")
        await page.wait_for_function("() => document.querySelector('#trip-banner').hidden", timeout=UI_TIMEOUT_MS)
        assert (await asyncio.to_thread((shots / "web-bench-running.png").stat)).st_size > 10_000

        # The server restarts (same port): the page notices, reconnects by itself and goes on updating.
        port = rig.server.site.port
        await rig.server.stop()
        await page.wait_for_function(
            "() => document.querySelector('#conn').textContent.startsWith('connection lost')", timeout=UI_TIMEOUT_MS
        )
        rig.server = BenchWebServer(
            rig.session.bench, host="127.0.0.1", port=port, runner_source=lambda: rig.session.runner
        )
        await rig.server.start()
        await page.wait_for_function(
            "() => document.querySelector('#conn').textContent === 'live'", timeout=UI_TIMEOUT_MS
        )
        version = int(await page.evaluate("() => document.body.dataset.version"))
        await page.wait_for_function(
            "(v) => Number(document.body.dataset.version) > v", arg=version, timeout=UI_TIMEOUT_MS
        )


async def test_api_errors_are_json_and_the_bench_keeps_running(rig: WebRig) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
            async with http.request(method, rig.url.rstrip("/") + path, **kw) as r:
                return r.status, await r.json()

        status, body = await call("GET", "/api/v1/devices/no-such-device")
        assert status == 404 and "no-such-device" in body["error"] and "cycler-0" in body["error"]
        status, body = await call("POST", "/api/v1/commands/pause", json={"who": "bob"})
        assert status == 401 and "token" in body["error"]
        auth = {"Authorization": "Bearer wrong"}
        status, body = await call("POST", "/api/v1/commands/pause", json={"who": "bob"}, headers=auth)
        assert status == 403 and body["error"] == "wrong operator token"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, body = await call("POST", "/api/v1/commands/pause", data=b"not json", headers=auth)
        assert status == 400 and "JSON" in body["error"]
        status, body = await call("POST", "/api/v1/commands/pause", json={}, headers=auth)
        assert status == 400 and "who" in body["error"]
        status, body = await call("POST", "/api/v1/commands/ack", json={"who": "bob"}, headers=auth)
        assert status == 409 and "nothing to acknowledge" in body["error"]
        status, body = await call("POST", "/api/v1/commands/reboot", json={"who": "bob"}, headers=auth)
        assert status == 404 and "reboot" in body["error"]
        status, body = await call("GET", "/api/v1/openapi.json")
        assert status == 200 and "/api/v1/commands/{action}" in body["paths"]
        status, body = await call("GET", "/api/v1/test")
        assert status == 200 and body["phase"] == "running" and body["ends"] == {"time_s": 3600.0}
        assert rig.session.runner.phase == "running"
        records = rig.session.bench.records_seen
        await wait_until(lambda: rig.session.bench.records_seen > records + 5, what="records still coming")
        assert json.loads(rig.server.feed.payload)["controls"] == {"enabled": True, "test": True}
