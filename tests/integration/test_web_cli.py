"""``--http`` and ``daq serve`` as a user runs them: real processes, real sockets, real journals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from daq.bench import Bench
from daq.config.loader import load_bench
from daq.journal import JournalReader
from daq.web.overview import Overview, build_overview_app, serve_overview
from daq.web.server import BenchWebServer, SiteServer
from tests.helpers import REPO, sim_bench, wait_until
from tests.integration.browser import browser_page

UI_TIMEOUT_MS = 20_000


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _read_url_line(proc: subprocess.Popen[str], prefix: str, deadline_s: float = 60) -> str:
    deadline = time.monotonic() + deadline_s
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {prefix!r} line from the process")


def test_daq_demo_http_serves_the_demo_bench(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "demo", "--http", "127.0.0.1:0", "--quiet", "--duration", "2h",
         "--journal", str(tmp_path / "demo.sqlite")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _read_url_line(proc, "live bench page: ")
        deadline = time.monotonic() + 30
        while True:
            status = get_json(url + "api/v1/status")
            bms = next((d for d in status["devices"] if d["name"] == "bms-1"), None)
            if (status["pack"] and bms and bms["quality"] == "good") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status["bench"]["id"] == "demo"
        assert [d["name"] for d in status["devices"]] == ["cycler-1", "bms-1"]
        assert len(status["pack"]["cells"]) == 14 and status["pack"]["spread_v"] is not None
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "/static/vendor/uPlot.iife.min.js" in page
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_http_port_in_use_is_one_line_and_no_run_starts(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--http", f"127.0.0.1:{port}", "--quiet",
             "--duration", "1s"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --http 127.0.0.1:{port}: cannot listen: the port is in use; pick another with --http HOST:PORT"
        " or stop what listens there"
    ]
    assert not (tmp_path / "journal.sqlite").exists()  # the port is bound before the run starts


def test_controls_without_a_token_source_are_a_config_error(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path)
    cfg = yaml.safe_load(bench.read_text())
    cfg["web"] = {"controls": True}
    bench.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--http", "127.0.0.1:0", "--duration", "1s"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "controls: true needs token" in result.stderr
    cfg["web"] = {"controls": True, "token": {"env": "DAQ_NO_SUCH_TOKEN_VARIABLE"}}
    bench.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "DAQ_NO_SUCH_TOKEN_VARIABLE"}
    result = subprocess.run(
        [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--http", "127.0.0.1:0", "--duration", "1s"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bench}: web.token: environment variable DAQ_NO_SUCH_TOKEN_VARIABLE is not set; export it before"
        " starting (the bench file names the variable, never the secret)"
    ]


async def test_overview_lists_the_benches_and_links_to_the_live_page(tmp_path: Path) -> None:
    # One bench that ran and stopped, one running with its live page.
    done_dir, live_dir = tmp_path / "done", tmp_path / "live"
    done_dir.mkdir()
    live_dir.mkdir()
    finished = Bench(load_bench(sim_bench(done_dir)))
    await finished.start()
    await wait_until(lambda: finished.records_seen > 3, what="a few records")
    await finished.stop(reason="done")
    journals = tmp_path / "journals"
    journals.mkdir()
    (done_dir / "journal.sqlite").rename(journals / "done.sqlite")

    live_path = sim_bench(live_dir)
    cfg = yaml.safe_load(live_path.read_text())
    cfg["bench"]["id"] = "live-bench"
    cfg["journal"]["path"] = str(journals / "live.sqlite")
    live_path.write_text(yaml.safe_dump(cfg))
    live = Bench(load_bench(live_path))
    web = BenchWebServer(live, host="127.0.0.1", port=0)
    await web.start()
    await live.start()
    overview = Overview([journals / "done.sqlite", journals / "live.sqlite"], period_s=0.2)
    site = SiteServer(build_overview_app(overview), host="127.0.0.1", port=0)
    stop = asyncio.Event()
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_overview(overview, site, stop, on_ready=ready.set), name="test:overview")
    try:
        await asyncio.wait_for(ready.wait(), 20)
        # the live bench's status snapshot (with its page's URL) reaches its journal every 2 s
        await wait_until(
            lambda: any(b.get("url") for b in overview.benches), timeout=30, what="the live bench's URL in the overview"
        )
        async with browser_page() as page:
            await page.goto(site.url)
            await page.wait_for_selector('tr[data-bench="live-bench"] a', timeout=UI_TIMEOUT_MS)
            assert await page.locator('tr[data-bench="testbench"]').get_attribute("data-state") == "completed"
            assert await page.locator('tr[data-bench="live-bench"]').get_attribute("data-state") == "running"
            await page.click('tr[data-bench="live-bench"] a')
            await page.wait_for_function(
                "() => document.querySelector('#bench-id').textContent === 'bench live-bench'", timeout=UI_TIMEOUT_MS
            )
        missing = await asyncio.to_thread(_status, site.url + "api/v1/benches/nope")
        assert missing[0] == 404 and "live-bench" in missing[1]["error"]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await web.stop()
        await live.stop()


def _status(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(url: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _with_controls(bench: Path, token_file: Path) -> None:
    token_file.write_text("tok-123\n")
    token_file.chmod(0o600)
    cfg = yaml.safe_load(bench.read_text())
    cfg["web"] = {"controls": True, "token": {"file": str(token_file)}}
    bench.write_text(yaml.safe_dump(cfg))


def test_daq_test_start_http_pauses_from_the_api_through_the_journal(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path, poll_period_s=0.05)
    _with_controls(bench, tmp_path / "token")
    profile = tmp_path / "profile.yaml"
    steps = [{"kind": "cc", "label": "slow discharge", "direction": "discharge", "current_a": 5, "duration_s": 3600}]
    profile.write_text(yaml.safe_dump({"name": "cli-web", "record_period_s": 0.05, "steps": steps}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "test", "start", str(bench), str(profile), "--quiet",
         "--http", "127.0.0.1:0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _read_url_line(proc, "live bench page: ")
        deadline = time.monotonic() + 30
        while _status(url + "api/v1/test")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, test = _status(url + "api/v1/test")
        assert status == 200 and test["profile"] == "cli-web" and test["phase"] == "running"
        status, answer = _post(url + "api/v1/commands/pause", {"who": "ann", "reason": "coffee"}, "tok-123")
        assert status == 200 and answer["phase"] == "paused", answer
        status, again = _post(url + "api/v1/commands/pause", {"who": "ann"}, "tok-123")
        assert status == 200 and "already paused" in again["message"]
        status, refused = _post(url + "api/v1/commands/resume", {"who": "ann"}, "wrong")
        assert status == 403 and refused["error"] == "wrong operator token"
        assert _status(url + "api/v1/test")[1]["phase"] == "paused"
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        run = reader.run("latest")
        paused = [e.data for e in reader.run_events(run.run_id) if e.kind == "runner.paused"]
    assert (paused[0]["who"], paused[0]["reason"]) == ("ann (web)", "coffee")  # then Ctrl-C stops it paused


def test_daq_run_http_refuses_test_commands_with_no_test(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path)
    _with_controls(bench, tmp_path / "token")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "run", str(bench), "--quiet", "--http", "127.0.0.1:0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _read_url_line(proc, "live bench page: ")
        status, body = _post(url + "api/v1/commands/pause", {"who": "ann"}, "tok-123")
        assert status == 409 and "no test is running on bench testbench" in body["error"]
        status, body = _post(url + "api/v1/commands/ack", {"who": "ann"}, "tok-123")
        assert status == 409 and "no safety monitor" in body["error"]
        assert _status(url + "api/v1/test")[0] == 404
        records = _status(url + "api/v1/status")[1]["bench"]["records"]
        deadline = time.monotonic() + 30
        while _status(url + "api/v1/status")[1]["bench"]["records"] <= records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(url + "api/v1/status")[1]["bench"]["records"] > records  # still recording
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_daq_serve_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: Any) -> None:
    from daq.cli.main import main

    assert main(["serve", "--journal", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --journal {tmp_path / 'nope'}: no such file or folder"]
    assert main(["serve", "--journal", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --journal {tmp_path}: no *.sqlite journal in this folder"]
    assert main(["serve", "--journal", str(tmp_path), "--http", "127.0.0.1:99999"]) == 2
    assert "no *.sqlite journal" in capsys.readouterr().err
