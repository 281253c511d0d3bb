"""The MQTT sink: live values, status, alarms and self-metrics from the journal (aiomqtt 2.5).

Delivery: records are published back to back in batches of ``batch_max_records`` and the cursor
moves only when every publish of the batch is acknowledged. With QoS 1, aiomqtt's ``publish``
returns only once the broker's PUBACK arrived (it waits for paho's ``on_publish``, which paho calls
on PUBACK for QoS 1). A lost connection fails the batch; it is sent again after reconnecting, so
consumers may see a record twice (same ``seq``) but never miss one.

Topic scheme and payloads: ``daq.sinks.mqtt_payload`` and docs/sinks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from daq.clock import Clock, MonotonicClock
from daq.config.sinks import MqttSinkConfig
from daq.errors import JournalError, SinkError
from daq.sinks.backoff import Backoff
from daq.sinks.base import (
    ErrorReporter,
    JournalFeed,
    RateMeter,
    SinkMetrics,
    cursor_names,
    encode_in_slices,
    error_text,
    innermost,
    iso_ns,
)
from daq.sinks.credentials import Secret, client_ssl_context, read_optional_secret
from daq.sinks.mqtt_acks import IN_FLIGHT_WINDOW, PubackTracker
from daq.sinks.mqtt_payload import (
    OFFLINE,
    ONLINE,
    ActiveAlarms,
    MqttTopics,
    RecordPayloads,
    alarm_transition,
    bench_status_payload,
    device_state,
    device_status_payload,
    event_payload,
    metrics_payload,
)
from daq.sinks.replay import JournalReplay, Position

if TYPE_CHECKING:
    import random

    from daq.journal import Journal, JournalEvent
    from daq.records import Record

log = logging.getLogger(__name__)
# paho's packet-level chatter (via aiomqtt) stays quiet unless asked for explicitly.
_client_log = logging.getLogger(f"{__name__}.client")
_client_log.setLevel(logging.WARNING)

EVENT_BATCH = 100
_GOODBYE_TIMEOUT_S = 2.0
# Outages and refusals a sink rides out (reported in one line); anything else also logs its traceback.
EXPECTED_ERRORS = (aiomqtt.MqttError, OSError, JournalError, SinkError, TimeoutError)


@dataclass(slots=True)
class _RecordBatch:
    messages: list[tuple[str, bytes]]
    records: int
    last_seq: int
    first_t_ns: int
    newest_seq: int  # the journal's newest record seq when the batch was read
    device_states: dict[str, tuple[str, int]] = field(default_factory=dict)


class MqttSink:
    """Forwards one bench's journal to one MQTT broker. Run ``run()`` as task ``sink:<name>``."""

    kind = "mqtt"

    def __init__(
        self,
        config: MqttSinkConfig,
        *,
        bench_id: str,
        journal_path: str | Path,
        journal: Journal | None = None,
        clock: Clock | None = None,
        metrics_source: Callable[[], Mapping[str, Any]] | None = None,
        where: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Reads credentials and TLS files now: a mistake raises ``ConfigError`` before the bench starts.

        ``journal`` (the bench's writer) makes the sink wake on each commit instead of polling;
        ``metrics_source`` returns the whole process's metrics (sinks, devices) for the metrics topic;
        ``where`` names the config location in error messages (e.g. ``bench.yaml: sinks[0](mqtt)``).
        """
        self.config = config
        self.name = config.name
        self.bench_id = bench_id
        self._where = where or f"sinks({config.name})"
        self._clock = clock or MonotonicClock()
        self._metrics_source = metrics_source
        self._username: Secret | None = read_optional_secret(config.username, what=f"{self._where}.username")
        self._password: Secret | None = read_optional_secret(config.password, what=f"{self._where}.password")
        self._tls: ssl.SSLContext | None = (
            client_ssl_context(config.tls, what=self._where) if config.tls is not None else None
        )
        self._port = config.effective_port
        scheme = "mqtts" if self._tls is not None else "mqtt"
        self.target = f"{scheme}://{config.host}:{self._port}"
        self._client_id = config.client_id or f"daq-{bench_id}-{config.name}"
        self._topics = MqttTopics(config.topic_prefix, bench_id)
        self._payloads = RecordPayloads(bench_id)
        self._cursor_name, self._event_cursor_name = cursor_names(config.name)
        self._feed = JournalFeed(Path(journal_path), writer=journal, live=True)
        b = config.backoff
        self._backoff = Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, jitter=b.jitter, rng=rng)
        self._metrics = SinkMetrics(name=config.name, kind=self.kind, target=self.target)
        self._errors = ErrorReporter(self._metrics, log, self._clock)
        self._rate = RateMeter()
        self._alarms = ActiveAlarms()
        self._device_states: dict[str, tuple[str, int]] = {}
        self._prepared = False
        self._acks: PubackTracker | None = None  # the connected client's ack tracking
        self._replay_until = 0
        self._replay_until_event = 0
        self._replay = JournalReplay(config.name, config.replay_window_s, self._feed)

    # -- public ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        snapshot = self._metrics.snapshot(
            now_ns=self._clock.wall_ns(), rate=self._rate.rate(), journal_seq=self._feed.newest_committed()
        )
        return {**snapshot, **self._feed.counters(), "replayed_records": self._replay.replayed_records}

    async def run(self) -> None:
        """Forward forever; reconnect with jittered backoff; cancel to stop (bench marked offline)."""
        try:
            while True:
                try:
                    await self._prepare()
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(exc)
                self._metrics.connected = False
                await self._refresh_backlog()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._feed.close()
            self._prepared = False  # a later run() reopens the journal and reloads the cursors

    # -- journal side ----------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Open the journal and restore the state the topics need (cursors, active alarms)."""
        if self._prepared:
            return
        reader = await self._feed.open()
        self._metrics.cursor = await self._feed.call(reader.get_cursor, self._cursor_name)
        self._metrics.event_cursor = await self._feed.call(reader.get_cursor, self._event_cursor_name)
        # Events are few (run events, alarms): replaying the delivered ones rebuilds the alarm set.
        after = 0
        while after < self._metrics.event_cursor:
            events = await self._feed.call(reader.events_after, after, 1000)
            for event in events:
                if event.seq > self._metrics.event_cursor:
                    break
                self._alarms.apply(event)
            if not events:
                break
            after = events[-1].seq
        await self._replay.load(Position(self._metrics.cursor, self._metrics.event_cursor))
        self._prepared = True

    async def _refresh_backlog(self) -> None:
        """While disconnected, keep the backlog figures in the metrics current."""
        reader = self._feed.reader
        if reader is None:
            return
        with contextlib.suppress(Exception):
            newest = await self._feed.call(reader.last_record_seq)
            self._metrics.journal_seq = newest
            if newest > self._metrics.cursor and self._metrics.oldest_pending_t_ns is None:
                self._metrics.oldest_pending_t_ns = await self._feed.call(reader.record_t_ns, self._metrics.cursor + 1)

    async def _read_records(self, after_seq: int, limit: int, replay_until: int) -> _RecordBatch:
        """The next records (live ring or journal read-back) with their topics and payloads."""
        records = await self._feed.next_records(after_seq, limit)
        newest = await self._feed.newest_record_seq()
        if not records:
            return _RecordBatch([], 0, after_seq, 0, newest)
        topics, payloads = self._topics, self._payloads
        per_message = self.config.records_per_message
        if per_message == 1:
            messages = await encode_in_slices(
                records,
                lambda r: (topics.device_data(r.schema.device), payloads.encode(r, historical=r.seq <= replay_until)),
            )
        else:
            messages = await self._grouped_messages(records, per_message, replay_until)
        states: dict[str, tuple[str, int]] = {}
        for r in records:
            states[r.schema.device] = (device_state(r.quality), r.t_ns)
        return _RecordBatch(messages, len(records), records[-1].seq, records[0].t_ns, newest, states)

    async def _grouped_messages(
        self, records: list[Record], per_message: int, replay_until: int
    ) -> list[tuple[str, bytes]]:
        """``records_per_message`` > 1: a JSON array of up to N records per device, in seq order within it."""
        payloads = self._payloads
        encoded_all = await encode_in_slices(records, lambda r: payloads.encode(r, historical=r.seq <= replay_until))
        by_device: dict[str, list[bytes]] = {}
        for r, encoded_one in zip(records, encoded_all, strict=True):
            by_device.setdefault(r.schema.device, []).append(encoded_one)
        messages = []
        for device, encoded in by_device.items():
            topic = self._topics.device_data(device)
            for i in range(0, len(encoded), per_message):
                messages.append((topic, b"[" + b",".join(encoded[i : i + per_message]) + b"]"))
        return messages

    # -- broker side -----------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        client = aiomqtt.Client(
            cfg.host,
            self._port,
            username=self._username.reveal() if self._username else None,
            password=self._password.reveal() if self._password else None,
            identifier=self._client_id,
            will=aiomqtt.Will(
                self._topics.bench_status,
                bench_status_payload(self.bench_id, OFFLINE, reason="connection lost"),
                qos=cfg.qos.status,
                retain=True,
            ),
            clean_session=True,
            timeout=cfg.connect_timeout_s,
            keepalive=cfg.keepalive_s,
            max_inflight_messages=IN_FLIGHT_WINDOW,
            tls_context=self._tls,
            logger=_client_log,
        )
        # aiomqtt warns above 10 pending publishes; a batch in flight is the normal case here.
        client.pending_calls_threshold = max(cfg.batch_max_records, EVENT_BATCH) * 2 + 10
        return client

    async def _session(self) -> None:
        """One connection: publish until it breaks (raises) or the task is cancelled."""
        client = self._client()
        try:
            async with client:
                self._acks = PubackTracker(client)
                try:
                    await self._on_connected(client)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client), name=f"sink:{self.name}:watch")
                        tg.create_task(self._forward(client), name=f"sink:{self.name}:forward")
                        tg.create_task(self._publish_metrics(client), name=f"sink:{self.name}:metrics")
                except asyncio.CancelledError:
                    await self._goodbye(client)
                    raise
        finally:
            self._acks = None
            await _client_tasks_done(client)

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        reader = self._feed.reader
        assert reader is not None
        # What the broker acknowledged just before a crash may be gone: send it again (daq.sinks.replay).
        m = self._metrics
        m.cursor, m.event_cursor = await self._replay.rewind(Position(m.cursor, m.event_cursor))
        # Everything already journaled when the connection came up is a replay: flagged historical.
        self._replay_until = await self._feed.call(reader.last_record_seq)
        self._replay_until_event = await self._feed.call(reader.last_event_seq)
        qos = self.config.qos.status
        now = self._clock.wall_ns()
        # Retained topics are sent again on every connect: a broker without persistence forgets them.
        messages = [(self._topics.bench_status, bench_status_payload(self.bench_id, ONLINE, t_ns=now), qos)]
        for device, (state, t_ns) in self._device_states.items():
            payload = device_status_payload(self.bench_id, device, state, t_ns=t_ns)
            messages.append((self._topics.device_status(device), payload, qos))
        messages.append(
            (self._topics.alarms_active, self._alarms.payload(self.bench_id, t_ns=now), self.config.qos.events)
        )
        await self._publish_all(client, messages, retain=True)
        self._errors.recovered()
        self._backoff.reset()
        log.info("sink %s: connected to %s (client id %s)", self.name, self.target, self._client_id)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Raises as soon as the connection drops (aiomqtt ends its message iterator with MqttError)."""
        async for _ in client.messages:
            pass
        raise SinkError(f"connection to {self.target} closed")

    async def _publish_all(
        self, client: aiomqtt.Client, messages: list[tuple[str, bytes, int]], *, retain: bool = False
    ) -> None:
        """Publish back to back, in order, and return once every ack is in (``PubackTracker``)."""
        if not messages:
            return
        if self._acks is None:
            raise SinkError(f"not connected to {self.target}")
        await self._acks.publish_batch(messages, retain=retain, timeout_s=self.config.ack_timeout_s)

    async def _forward(self, client: aiomqtt.Client) -> None:
        reader = self._feed.reader
        assert reader is not None
        cfg = self.config
        m = self._metrics
        while True:
            progressed = False
            events = await self._feed.call(reader.events_after, m.event_cursor, EVENT_BATCH)
            if events:
                await self._send_events(client, events)
                progressed = True
            batch = await self._read_records(m.cursor, cfg.batch_max_records, self._replay_until)
            m.journal_seq = max(m.journal_seq, batch.newest_seq)
            if batch.messages:
                await self._send_records(client, batch)
                progressed = True
            else:
                m.oldest_pending_t_ns = None
            if not progressed:
                await self._feed.wait_for_records(m.cursor, self._feed.idle_poll_s)

    async def _send_records(self, client: aiomqtt.Client, batch: _RecordBatch) -> None:
        m = self._metrics
        m.oldest_pending_t_ns = batch.first_t_ns
        qos = self.config.qos.data
        await self._publish_all(client, [(topic, payload, qos) for topic, payload in batch.messages])
        await self._feed.call(self._feed.reader.set_cursor, self._cursor_name, batch.last_seq)  # type: ignore[union-attr]
        m.cursor = batch.last_seq
        m.delivered_records += batch.records
        m.last_delivery_at = iso_ns(self._clock.wall_ns())
        m.oldest_pending_t_ns = None if m.cursor >= m.journal_seq else m.oldest_pending_t_ns
        self._rate.add(batch.records)
        await self._replay.acknowledged(Position(m.cursor, m.event_cursor))
        changed = [
            (device, state_t)
            for device, state_t in batch.device_states.items()
            if self._device_states.get(device, ("", 0))[0] != state_t[0]
        ]
        for device, state_t in batch.device_states.items():
            self._device_states[device] = state_t
        if changed:
            qos = self.config.qos.status
            await self._publish_all(
                client,
                [
                    (self._topics.device_status(d), device_status_payload(self.bench_id, d, s, t_ns=t), qos)
                    for d, (s, t) in changed
                ],
                retain=True,
            )

    async def _send_events(self, client: aiomqtt.Client, events: list[JournalEvent]) -> None:
        qos = self.config.qos.events
        messages: list[tuple[str, bytes, int]] = []
        alarms_changed = False
        for event in events:
            payload = event_payload(self.bench_id, event, historical=event.seq <= self._replay_until_event)
            messages.append((self._topics.events, payload, qos))
            if alarm_transition(event) is not None:
                messages.append((self._topics.alarms, payload, qos))
            alarms_changed |= self._alarms.apply(event)
        await self._publish_all(client, messages)
        if alarms_changed:
            await self._publish_all(
                client,
                [(self._topics.alarms_active, self._alarms.payload(self.bench_id, t_ns=events[-1].t_ns), qos)],
                retain=True,
            )
        last = events[-1].seq
        await self._feed.call(self._feed.reader.set_cursor, self._event_cursor_name, last)  # type: ignore[union-attr]
        self._metrics.event_cursor = last
        self._metrics.delivered_events += len(events)
        await self._replay.acknowledged(Position(self._metrics.cursor, last))

    async def _publish_metrics(self, client: aiomqtt.Client) -> None:
        while True:
            metrics = dict(self._metrics_source()) if self._metrics_source else {"sinks": [self.metrics()]}
            await client.publish(
                self._topics.metrics,
                metrics_payload(self.bench_id, metrics, t_ns=self._clock.wall_ns()),
                qos=self.config.qos.metrics,
                retain=True,
                timeout=self.config.ack_timeout_s,
            )
            await asyncio.sleep(self.config.metrics_period_s)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """On a clean stop say offline ourselves: the broker sends the Last Will only on a lost link."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await client.publish(
                    self._topics.bench_status,
                    bench_status_payload(self.bench_id, OFFLINE, t_ns=self._clock.wall_ns(), reason="stopped"),
                    qos=self.config.qos.status,
                    retain=True,
                    timeout=_GOODBYE_TIMEOUT_S,
                )

    # -- errors ----------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        leaf = innermost(exc)
        self._errors.failed(self._describe(leaf), exc=None if isinstance(leaf, EXPECTED_ERRORS) else leaf)

    def _describe(self, exc: BaseException) -> str:
        """One line a technician can act on; never contains a credential."""
        text = error_text(exc)
        where = f"MQTT broker {self.target}"
        if isinstance(exc, MqttConnectError):
            rc = exc.rc
            code = getattr(rc, "value", rc)
            if code in (4, 5, 134, 135):
                sources = ", ".join(s.describe() for s in (self.config.username, self.config.password) if s is not None)
                return (
                    f"{where} refused the login ({text}); check the username/password"
                    f" ({sources or 'none configured: set username and password'})"
                )
            return f"{where} refused the connection ({text})"
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            ca = self.config.tls.ca_file if self.config.tls else None
            return (
                f"{where}: TLS certificate not trusted ({text}); set tls.ca_file to the CA that signed the"
                f" broker's certificate (now: {ca or 'system trust store'}). Not falling back to plain MQTT"
            )
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "UNEXPECTED_EOF" in text:
            return f"{where}: TLS handshake failed ({text}); is this port a TLS listener?"
        if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
            return f"cannot connect to {where}: connection refused (broker down or wrong port)"
        if isinstance(exc, aiomqtt.MqttError) and text.startswith("Disconnected"):
            cause = exc.__cause__
            return f"{where}: connection lost{f' ({error_text(cause)})' if cause else ''}"
        if isinstance(exc, JournalError):
            return f"journal: {text}"
        if isinstance(exc, aiomqtt.MqttError) and "timed out" in text.lower():
            return f"{where}: no answer within the timeout ({text}); link lost or broker overloaded"
        return f"{where}: {text}"


async def _client_tasks_done(client: aiomqtt.Client) -> None:
    """Let aiomqtt's keepalive task end before we return: aiomqtt 2.5 cancels it from the socket-close
    callback (``call_soon_threadsafe``), so it is still pending right after ``__aexit__``."""
    task = getattr(client, "_misc_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
