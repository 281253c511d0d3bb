"""Publish a batch through paho and wait for its acknowledgements in one place (the MQTT sink's hot path).

aiomqtt's ``publish`` costs a task, an ``asyncio.Event``, a ``wait_for`` and two walks over every
pending message id per message: with a batch of 200 QoS-1 records in flight that walk alone was a
large part of the sink's CPU (docs/benchmarks.md). ``PubackTracker`` publishes the batch with
paho's ``publish`` on the client aiomqtt already runs (same connection, same event loop, aiomqtt
still owns connect, keepalive, reconnect and the message iterator) and keeps one set of
outstanding message ids per batch, resolved from paho's ``on_publish``: for QoS 1 paho calls it on
the broker's PUBACK, for QoS 0 once the message is written. The batch is done when its set is
empty, so the sink's cursor still moves only after every acknowledgement of the batch.

It relies on ``aiomqtt.Client._client`` (the paho client), stable within the pinned aiomqtt 2.5.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from daq.errors import SinkError

PUBLISH_SLICE = 32  # messages handed to paho before the event loop gets a turn
# QoS > 0 messages on the wire at once; paho queues the rest and sends one per acknowledgement.
# paho handles every PUBACK waiting in the socket in one read callback (~15-50 us each): with a
# whole 200-message batch in flight that was a 3-12 ms stall of every poll (docs/benchmarks.md).
IN_FLIGHT_WINDOW = 32


class _Batch:
    __slots__ = ("done", "outstanding")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.outstanding: set[int] = set()


class PubackTracker:
    """Installed on one connected aiomqtt client; ``publish_batch`` sends and awaits every ack."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho: paho.Client = client._client
        self._batches: dict[int, _Batch] = {}  # mid -> the batch waiting for it
        previous = self._paho.on_publish

        def on_publish(*args: Any) -> None:
            # (client, userdata, mid, reason_code, properties): ours first, then aiomqtt's own
            batch = self._batches.pop(args[2], None)
            if batch is not None:
                batch.outstanding.discard(args[2])
                if not batch.outstanding and not batch.done.done():
                    batch.done.set_result(None)
            if previous is not None:
                previous(*args)

        self._paho.on_publish = on_publish

    @property
    def pending(self) -> int:
        """Messages sent and not yet acknowledged."""
        return len(self._batches)

    async def publish_batch(self, messages: list[tuple[str, bytes, int]], *, retain: bool, timeout_s: float) -> None:
        """Publish ``(topic, payload, qos)`` in order and return once all are acknowledged.

        Raises ``SinkError`` if the client refuses a message (not connected) or the acks are not
        all in within ``timeout_s`` (the sink then reconnects and sends the batch again).
        """
        if not messages:
            return
        batch = _Batch(asyncio.get_running_loop().create_future())
        publish = self._paho.publish
        try:
            for n, (topic, payload, qos) in enumerate(messages):
                if n and not n % PUBLISH_SLICE:
                    await asyncio.sleep(0)  # let the pollers run: ~15 us of paho per message
                info = publish(topic, payload, qos, retain)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    raise SinkError(f"MQTT client refused to publish ({paho.error_string(info.rc)})")
                if not info.is_published():
                    batch.outstanding.add(info.mid)
                    self._batches[info.mid] = batch
            if not batch.outstanding:
                return
            try:
                async with asyncio.timeout(timeout_s):
                    await batch.done
            except TimeoutError:
                missing = len(batch.outstanding)
                raise SinkError(
                    f"no acknowledgement for {missing} of {len(messages)} messages within {timeout_s:g} s"
                ) from None
        finally:
            for mid in batch.outstanding:
                if self._batches.get(mid) is batch:
                    del self._batches[mid]
