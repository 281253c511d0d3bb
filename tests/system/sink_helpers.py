"""Helpers for the sink system tests: synthetic records in a real journal, a reconnecting MQTT
subscriber, an HTTP proxy that injects failures in front of a real database, and a child "bench"
process to kill -9.

Run as a module (``python -m tests.system.sink_helpers CONFIG.json``) it is that child process:
it journals records forever and runs the sinks named in the JSON file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from aiohttp import web

from daq.journal import Journal, JournalReader
from daq.records import Channel, DeviceSchema, Quality, Record

CYCLER = DeviceSchema(
    "cycler-1",
    "cycler",
    (Channel("voltage_v", "V"), Channel("current_a", "A"), Channel("power_w", "W")),
)
BMS = DeviceSchema(
    "bms-1",
    "bms",
    (Channel("cell1_v", "V"), Channel("cell2_v", "V"), Channel("temp1_c", "degC"), Channel("soc", "%")),
)
POISON = DeviceSchema("poison", "meter", (Channel("reading", ""),))


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` on the event loop until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


class SyntheticBench:
    """Writes deterministic records for a few devices into a real ``Journal``.

    Each device's records are 1 ms apart (VictoriaMetrics keeps milliseconds), so (device, t_ns)
    identifies a record in every sink. ``expected`` maps that key to the record as written.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        bench_id: str = "bench-a",
        schemas: Iterable[DeviceSchema] = (CYCLER, BMS),
        t0_ns: int | None = None,
    ) -> None:
        self.journal = journal
        self.bench_id = bench_id
        self.schemas = list(schemas)
        self.run_id = journal.begin_run(bench_id, schemas=self.schemas)
        start = time.time_ns() if t0_ns is None else t0_ns
        self.t_ns = start - start % 1_000_000
        self.n = 0
        self.expected: dict[tuple[str, int], Record] = {}

    def record(self, schema: DeviceSchema, k: int, *, step: int = 1, cycle: int = 1) -> Record:
        n = len(schema.channels)
        values = [round(1.0 + k * 0.001 + i, 6) for i in range(n)]
        quality = bytearray(n)
        if k % 7 == 3:
            values[-1] = math.nan  # a missing value
            quality[-1] = int(Quality.TIMEOUT)
        if k % 11 == 5 and n > 1:
            quality[0] = int(Quality.OUT_OF_RANGE)
        return Record(schema, self.t_ns, values, bytes(quality), self.run_id, step, cycle)

    def write(
        self, polls: int, *, step: int = 1, cycle: int = 1, schemas: Iterable[DeviceSchema] | None = None
    ) -> None:
        """``polls`` records per device, then a blocking flush (committed when this returns)."""
        for _ in range(polls):
            self.t_ns += 1_000_000
            for schema in schemas or self.schemas:
                rec = self.record(schema, self.n, step=step, cycle=cycle)
                self.journal.append(rec)
                self.expected[(schema.device, rec.t_ns)] = rec
            self.n += 1
        self.journal.flush()

    def keys(self, device: str | None = None) -> set[tuple[str, int]]:
        return {k for k in self.expected if device is None or k[0] == device}


def journal_keys(path: Path) -> dict[tuple[str, int], Record]:
    """Every record in a journal file, keyed like ``SyntheticBench.expected``."""
    with JournalReader(path) as reader:
        out: dict[tuple[str, int], Record] = {}
        after = 0
        while True:
            records = reader.records_after(after, 10_000)
            if not records:
                return out
            for r in records:
                out[(r.schema.device, r.t_ns)] = r
            after = records[-1].seq


# --- MQTT --------------------------------------------------------------------------------------


class MqttCollector:
    """A real subscriber that keeps a persistent session (QoS 1) and reconnects across broker restarts."""

    def __init__(
        self,
        port: int,
        topic: str,
        *,
        identifier: str = "test-collector",
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.topic = topic
        self.identifier = identifier
        self.tls_context = tls_context
        self.username = username
        self.password = password
        self.messages: list[aiomqtt.Message] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.identifier,
                    clean_session=False,
                    tls_context=self.tls_context,
                    username=self.username,
                    password=self.password,
                    max_queued_incoming_messages=0,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # retry interval while the broker is down

    async def start(self) -> MqttCollector:
        self._task = asyncio.create_task(self._run(), name=f"collector:{self.identifier}")
        await asyncio.wait_for(self.subscribed.wait(), 20)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            # aiomqtt's message iterator cancels its inner queue task on the way out; let it finish.
            for _ in range(3):
                await asyncio.sleep(0)

    def payloads(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if str(m.topic).endswith(suffix)]

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if str(m.topic) == topic]

    def data_keys(self) -> set[tuple[str, int]]:
        return {(p["device"], p["t_ns"]) for p in self.payloads("/data")}


def unflagged_repeats(messages: Iterable[aiomqtt.Message]) -> list[tuple[str, int]]:
    """Records received again without ``historical: true``.

    A repeat the sink sent (replay after a reconnect or restart) is flagged historical. The one
    other repeat is the broker's own QoS 1 redelivery after it restarted from its saved state: the
    very same bytes again, which consumers drop by ``seq``; it is not counted here."""
    first: dict[tuple[str, int], bytes] = {}
    wrong: list[tuple[str, int]] = []
    for m in messages:
        p = json.loads(m.payload)
        key = (p["device"], p["t_ns"])
        if key in first and not p["historical"] and m.payload != first[key]:
            wrong.append(key)
        first.setdefault(key, m.payload)
    return wrong


def mqtt_config(port: int, **overrides: Any) -> dict[str, Any]:
    """A bench-file ``sinks:`` entry for a test broker, with fast backoff."""
    return {
        "kind": "mqtt",
        "name": "mqtt",
        "host": "127.0.0.1",
        "port": port,
        "topic_prefix": "test",
        "connect_timeout_s": 5,
        "ack_timeout_s": 10,
        "metrics_period_s": 0.5,
        "backoff": {"initial_s": 0.05, "max_s": 0.5},
        **overrides,
    }


def influx_config(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "influxdb",
        "name": "influx",
        "url": url,
        "flush_interval_s": 0.1,
        "request_timeout_s": 10,
        "backoff": {"initial_s": 0.05, "max_s": 0.5},
        **overrides,
    }


# --- HTTP fault proxy --------------------------------------------------------------------------


class FaultProxy:
    """A real HTTP server forwarding writes to ``upstream`` and injecting failures on the way.

    ``script``: (status, headers) answered instead of forwarding, one per request, in order.
    ``reject_if``: answer 400 for a body it matches. ``max_body``: answer 413 above that size.
    ``forwarded_lines`` counts the lines that reached the real server.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: list[tuple[int, dict[str, str]]] = []
        self.reject_if: Callable[[bytes], bool] | None = None
        self.max_body: int | None = None
        self.statuses: list[int] = []
        self.forwarded_lines = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.script:
            status, headers = self.script.pop(0)
            self.statuses.append(status)
            return web.Response(status=status, text=f"injected {status}", headers=headers)
        if self.max_body is not None and len(body) > self.max_body:
            self.statuses.append(413)
            return web.Response(status=413, text=f"body of {len(body)} bytes over {self.max_body}")
        if self.reject_if is not None and self.reject_if(body):
            self.statuses.append(400)
            return web.json_response({"error": "unable to parse: injected rejection"}, status=400)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._session.post(
            self.upstream + request.path, params=request.query, data=body, headers=headers
        ) as resp:
            answer = await resp.read()
            self.statuses.append(resp.status)
            if 200 <= resp.status < 300:
                self.forwarded_lines += body.count(b"\n") + 1
            return web.Response(status=resp.status, body=answer)

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- child bench process -----------------------------------------------------------------------


async def _child_main(spec: dict[str, Any]) -> None:
    from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig
    from daq.sinks import build_sink

    journal = Journal(spec["journal"], commit_interval_s=0.05)
    journal.open()
    bench = SyntheticBench(journal, bench_id=spec["bench_id"])
    sinks = []
    for entry in spec["sinks"]:
        model = MqttSinkConfig if entry["kind"] == "mqtt" else InfluxSinkConfig
        sinks.append(
            build_sink(
                model.model_validate(entry), bench_id=spec["bench_id"], journal_path=spec["journal"], journal=journal
            )
        )
    tasks = [asyncio.create_task(s.run(), name=f"sink:{s.name}") for s in sinks]
    while True:  # journal until killed
        for schema in bench.schemas:
            bench.t_ns += 1_000_000
            journal.append(bench.record(schema, bench.n))
        bench.n += 1
        await asyncio.sleep(0.002)
    del tasks


if __name__ == "__main__":
    asyncio.run(_child_main(json.loads(Path(sys.argv[1]).read_text())))
