"""The Sparkplug B sink: the journal forwarded to a SCADA host through an MQTT broker (aiomqtt 2.5).

One MQTT session = one edge-node session: a fresh ``bdSeq`` (persisted in the journal's cursor
table before connecting, so a crash never reuses one), NDEATH with that bdSeq registered as the
will, the NCMD subscription, then NBIRTH (seq 0) and a DBIRTH per device before its first DDATA.
Records go out in journal order, one DDATA each; the cursor moves once the broker acknowledged a
batch (QoS 1), so an outage replays the unacknowledged records in the next session, flagged
``is_historical`` like every record journaled before the connection came up. A rebirth request
(NCMD ``Node Control/Rebirth``) republishes NBIRTH and every DBIRTH between two batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from daq import __version__
from daq.clock import Clock, MonotonicClock
from daq.config.sinks import SparkplugSinkConfig
from daq.errors import SinkError
from daq.sinks.backoff import Backoff
from daq.sinks.base import (
    ErrorReporter,
    JournalFeed,
    RateMeter,
    SinkMetrics,
    cursor_names,
    error_text,
    innermost,
    iso_ns,
)
from daq.sinks.credentials import Secret, client_ssl_context, read_optional_secret
from daq.sinks.mqtt import EXPECTED_ERRORS
from daq.sinks.mqtt_acks import IN_FLIGHT_WINDOW
from daq.sinks.sparkplug.payloads import EdgeNodeSession, SparkplugTopics, no_answer, rebirth_requested

if TYPE_CHECKING:
    from daq.journal import Journal
    from daq.records import Record

log = logging.getLogger(__name__)
_client_log = logging.getLogger(f"{__name__}.client")
_client_log.setLevel(logging.WARNING)
_GOODBYE_TIMEOUT_S = 2.0


class PrimaryHostOffline(SinkError):
    """The primary host application published STATE offline."""


def host_online(payload: object) -> bool | None:
    """A primary host's STATE: Sparkplug 3.0 JSON ``{"online": true, ...}`` (or the 2.2 text
    ``ONLINE``/``OFFLINE``); None when it is neither."""
    if not isinstance(payload, bytes | bytearray):
        return None
    text = bytes(payload).strip()
    if text in (b"ONLINE", b"OFFLINE"):
        return text == b"ONLINE"
    try:
        state = json.loads(text)
    except ValueError:
        return None
    online = state.get("online") if isinstance(state, dict) else None
    return online if isinstance(online, bool) else None


class SparkplugSink:
    """Forwards one bench's journal as one Sparkplug B edge node. Run ``run()`` as task ``sink:<name>``."""

    kind = "sparkplug"
    forwards_events = False  # records only: alarms and events stay on the JSON MQTT sink (daq.sinks.drain)

    def __init__(
        self,
        config: SparkplugSinkConfig,
        *,
        bench_id: str,
        journal_path: str | Path,
        journal: Journal | None = None,
        clock: Clock | None = None,
        where: str | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.bench_id = bench_id
        self._where = where or f"sinks({config.name})"
        self._clock = clock or MonotonicClock()
        self._username: Secret | None = read_optional_secret(config.username, what=f"{self._where}.username")
        self._password: Secret | None = read_optional_secret(config.password, what=f"{self._where}.password")
        self._tls: ssl.SSLContext | None = (
            client_ssl_context(config.tls, what=self._where) if config.tls is not None else None
        )
        self._port = config.effective_port
        self.target = f"{'mqtts' if self._tls else 'mqtt'}://{config.host}:{self._port}"
        self._client_id = config.client_id or f"daq-{bench_id}-{config.name}"
        self.topics = SparkplugTopics(config.group_id, config.edge_node_id or bench_id)
        self.session = EdgeNodeSession(self.topics, dict(config.device_ids))
        self._cursor_name, _ = cursor_names(config.name)
        self._bd_seq_name = f"sink:{config.name}:bdseq"  # the next bdSeq to use
        self._feed = JournalFeed(Path(journal_path), writer=journal)
        b = config.backoff
        self._backoff = Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, jitter=b.jitter)
        self._metrics = SinkMetrics(name=config.name, kind=self.kind, target=self.target)
        self._errors = ErrorReporter(self._metrics, log, self._clock)
        self._rate = RateMeter()
        self._replay_until = 0
        self._rebirth = asyncio.Event()
        self.rebirths = 0
        self._host_topic = f"spBv1.0/STATE/{config.primary_host_id}" if config.primary_host_id else None
        self.waiting_for_host = False  # connected, subscribed, and holding births until the host is online

    def metrics(self) -> dict[str, Any]:
        snap = self._metrics.snapshot(
            now_ns=self._clock.wall_ns(), rate=self._rate.rate(), journal_seq=self._feed.newest_committed()
        )
        snap["bd_seq"] = self.session.bd_seq
        return snap

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._feed.open()
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(exc)
                self._metrics.connected = False
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._feed.close()

    def _now_ms(self) -> int:
        return self._clock.wall_ns() // 1_000_000

    async def _next_bd_seq(self) -> int:
        reader = self._feed.reader
        assert reader is not None
        bd = await self._feed.call(reader.get_cursor, self._bd_seq_name) % 256
        await self._feed.call(reader.set_cursor, self._bd_seq_name, (bd + 1) % 256)
        return bd

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        return aiomqtt.Client(
            cfg.host,
            self._port,
            username=self._username.reveal() if self._username else None,
            password=self._password.reveal() if self._password else None,
            identifier=self._client_id,
            will=aiomqtt.Will(
                self.topics.node("NDEATH"), self.session.ndeath(t_ms=self._now_ms()), qos=1, retain=False
            ),
            clean_session=True,
            timeout=cfg.connect_timeout_s,
            keepalive=cfg.keepalive_s,
            max_inflight_messages=IN_FLIGHT_WINDOW,  # PUBACKs in small groups (daq.sinks.mqtt_acks)
            tls_context=self._tls,
            logger=_client_log,
        )

    async def _session(self) -> None:
        self.session.bd_seq = await self._next_bd_seq()
        client = self._client()
        client.pending_calls_threshold = self.config.batch_max_records * 2 + 20
        try:
            async with client:
                try:
                    await client.subscribe(self.topics.node("NCMD"), qos=1)
                    if self._host_topic is not None:
                        await client.subscribe(self._host_topic, qos=1)
                        await self._wait_for_primary_host(client)
                    reader = self._feed.reader
                    assert reader is not None
                    self._replay_until = await self._feed.call(reader.last_record_seq)
                    self._metrics.cursor = await self._feed.call(reader.get_cursor, self._cursor_name)
                    await self._births(client)
                    self._errors.recovered()
                    self._backoff.reset()
                    log.info(
                        "sink %s: edge node %s/%s online at %s (bdSeq %d)",
                        self.name,
                        self.topics.group_id,
                        self.topics.edge_node_id,
                        self.target,
                        self.session.bd_seq,
                    )
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client), name=f"sink:{self.name}:ncmd")
                        tg.create_task(self._forward(client), name=f"sink:{self.name}:forward")
                except asyncio.CancelledError:
                    await self._goodbye(client)
                    raise
        finally:
            task = getattr(client, "_misc_task", None)  # aiomqtt 2.5 ends its keepalive task late
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=1.0)

    async def _births(self, client: aiomqtt.Client) -> None:
        """NBIRTH (seq 0) and a DBIRTH for every device already seen, with fresh aliases."""
        session = self.session
        session.reset_births()
        now = self._now_ms()
        info = {"Software": f"battery-daq {__version__}", "Bench": self.bench_id}
        messages = [(self.topics.node("NBIRTH"), session.nbirth(t_ms=now, node_info=info))]
        for device in session.devices.values():
            if not device.alive:
                continue  # born again with its next answer
            messages.append((self.topics.device("DBIRTH", device.device_id), session.dbirth(device, t_ms=now)))
        await self._publish_all(client, messages)

    async def _wait_for_primary_host(self, client: aiomqtt.Client) -> None:
        """Publish nothing until the primary host application says it is online (its retained STATE)."""
        log.info("sink %s: waiting for primary host %s (%s)", self.name, self.config.primary_host_id, self._host_topic)
        self.waiting_for_host = True
        try:
            async for message in client.messages:
                if str(message.topic) == self._host_topic and host_online(message.payload) is True:
                    return
        finally:
            self.waiting_for_host = False
        raise SinkError(f"connection to {self.target} closed")

    async def _watch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if str(message.topic) == self._host_topic:
                if host_online(message.payload) is False:
                    await self._goodbye(client)  # Sparkplug 3.0: NDEATH and disconnect; reconnect and wait
                    raise PrimaryHostOffline(
                        f"primary host {self.config.primary_host_id} went offline; edge node offline until it is back"
                    )
                continue
            if isinstance(message.payload, bytes) and rebirth_requested(message.payload):
                log.info("sink %s: rebirth requested by %s", self.name, message.topic)
                self._rebirth.set()
        raise SinkError(f"connection to {self.target} closed")

    async def _publish_all(self, client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        """Back to back, in order (each task calls paho in creation order), then every ack awaited."""
        if not messages:
            return
        qos, timeout = self.config.qos, self.config.ack_timeout_s
        async with asyncio.TaskGroup() as tg:
            for topic, payload in messages:
                tg.create_task(client.publish(topic, payload, qos=qos, retain=False, timeout=timeout))

    def _encode(self, records: list[Record]) -> tuple[list[tuple[str, bytes]], int]:
        """DDATA for each record, a DBIRTH before a device's first, DDEATH when it stops answering.

        Returns the messages and how many records they cover: fewer than all when a device's
        channels changed (another run), which needs a full rebirth before its next record."""
        session, topics = self.session, self.topics
        now = self._now_ms()
        messages: list[tuple[str, bytes]] = []
        for done, record in enumerate(records):
            if session.needs_birth(record):
                if record.schema.device in session.devices:
                    return messages, done  # aliases must be reissued
                session.add_device(record.schema)
                session.devices[record.schema.device].alive = False  # born below with this record
            device = session.devices[record.schema.device]
            if no_answer(record.quality):
                if device.alive:
                    messages.append((topics.device("DDEATH", device.device_id), session.ddeath(device, t_ms=now)))
                continue
            if not device.alive:
                messages.append((topics.device("DBIRTH", device.device_id), session.dbirth(device, t_ms=now)))
            payload = session.ddata(record, t_ms=now, historical=record.seq <= self._replay_until)
            messages.append((topics.device("DDATA", device.device_id), payload))
        return messages, len(records)

    async def _forward(self, client: aiomqtt.Client) -> None:
        reader = self._feed.reader
        assert reader is not None
        m = self._metrics
        while True:
            if self._rebirth.is_set():
                self._rebirth.clear()
                self.rebirths += 1
                await self._births(client)
            records = await self._feed.call(reader.records_after, m.cursor, self.config.batch_max_records)
            if not records:
                m.oldest_pending_t_ns = None
                await self._wait_for_work(m.cursor)
                continue
            m.oldest_pending_t_ns = records[0].t_ns
            messages, sent = self._encode(records)
            await self._publish_all(client, messages)
            if sent:
                last = records[sent - 1].seq
                await self._feed.call(reader.set_cursor, self._cursor_name, last)
                m.cursor = last
                m.delivered_records += sent
                m.last_delivery_at = iso_ns(self._clock.wall_ns())
                self._rate.add(sent)
            if sent < len(records):
                self.session.devices.pop(records[sent].schema.device, None)
                self._rebirth.set()

    async def _wait_for_work(self, cursor: int) -> None:
        """New records or a rebirth request, whichever comes first (at most one idle poll)."""
        rebirth = asyncio.create_task(self._rebirth.wait())
        records = asyncio.create_task(self._feed.wait_for_records(cursor, self._feed.idle_poll_s))
        try:
            await asyncio.wait([rebirth, records], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (rebirth, records):
                task.cancel()
            await asyncio.gather(rebirth, records, return_exceptions=True)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop: the broker sends the will only on a lost link, so publish NDEATH ourselves."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await client.publish(
                    self.topics.node("NDEATH"),
                    self.session.ndeath(t_ms=self._now_ms()),
                    qos=1,
                    timeout=_GOODBYE_TIMEOUT_S,
                )

    def _failed(self, exc: BaseException) -> None:
        leaf = innermost(exc)
        expected = isinstance(leaf, EXPECTED_ERRORS)
        text = error_text(leaf)
        if isinstance(leaf, ConnectionRefusedError) or "Connection refused" in text:
            text = "connection refused (broker down or wrong port)"
        self._errors.failed(f"Sparkplug broker {self.target}: {text}", exc=None if expected else leaf)
