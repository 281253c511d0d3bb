"""Operator commands over MQTT: opt-in, and only from clients the broker authenticated.

Topic: ``<topic_prefix>-commands/<bench>/<username>``; payload JSON
``{"action": "pause" | "resume" | "abort", "run": "<run id>", "reason": "..."}``. The broker
connection is the bench's MQTT sink's (host, TLS, username and password).

Who sent it: MQTT does not tell a subscriber who published a message, so the username is the last
topic level, and the broker must make that true with its ACL: each user may publish only on the
level that is its own name. Mosquitto::

    # the bench's own user (sinks and this listener): data out, commands in, never commands out
    user daq-bench-a
    topic write daq/#
    topic read daq-commands/bench-a/+
    # an operator may publish only on the command topic that carries their own username
    pattern write daq-commands/+/%u

At start the listener checks that: it publishes a probe on a command topic named after nobody and
refuses to enable commands if the broker delivers it back (then anyone could speak as anyone). It
also needs a username of its own (an anonymous bench cannot rely on ACLs), takes commands only from
the users given with ``--mqtt-allow``, only for the running test's run id, and never a retained
message (that would fire again on every reconnect). Every command taken or refused is journaled;
results show as the runner's events (``runner.paused`` ... with ``who``) on the sink's events topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from daq.config.sinks import MqttSinkConfig
from daq.errors import ConfigError
from daq.runner.control import ACTIONS, OperatorCommand
from daq.sinks.backoff import Backoff
from daq.sinks.credentials import client_ssl_context, read_optional_secret
from daq.sinks.mqtt_payload import topic_level

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
MAX_PROBE_FAILURES = 3

Journaler = Callable[[str, dict[str, Any]], None]


def command_root(config: MqttSinkConfig, bench_id: str) -> str:
    return f"{config.topic_prefix}-commands/{topic_level(bench_id)}"


class MqttCommandListener:
    """Subscribes to the bench's command topics and hands accepted commands to ``deliver``."""

    def __init__(
        self,
        config: MqttSinkConfig,
        *,
        bench_id: str,
        allowed_users: set[str],
        where: str = "",
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        """Reads the credentials now, so a mistake stops the test before it starts; ``attach`` later."""
        where = where or f"sinks({config.name})"
        self._username = read_optional_secret(config.username, what=f"{where}.username")
        self._password = read_optional_secret(config.password, what=f"{where}.password")
        if self._username is None:
            raise ConfigError(
                f"{where}: MQTT commands need an authenticated connection; give the sink a username "
                "and password (and the broker an ACL, see docs/profiles.md)"
            )
        if not allowed_users:
            raise ConfigError("MQTT commands need at least one --mqtt-allow USER (who may control the test)")
        self.config = config
        self.run_id = ""
        self.allowed_users = allowed_users
        self.root = command_root(config, bench_id)
        self._deliver: Callable[[OperatorCommand], None] = lambda command: None
        self._journal: Journaler = lambda kind, data: None
        self._tls = client_ssl_context(config.tls, what=where) if config.tls is not None else None
        self._client_id = f"daq-{topic_level(bench_id)}-commands-{secrets.token_hex(3)}"
        self._probe_timeout_s = probe_timeout_s
        b = config.backoff
        self._backoff = Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, jitter=b.jitter)
        self.enabled: bool | None = None  # None until the first connection checked the broker
        self._why = "the broker lets a client publish as another user"
        self._probe_failures = 0
        self.ready = asyncio.Event()  # set once listening (or refused)

    def attach(self, *, run_id: str, deliver: Callable[[OperatorCommand], None], journal: Journaler) -> None:
        """The running test: its run id, where commands go, where refusals are journaled."""
        self.run_id = run_id
        self._deliver = deliver
        self._journal = journal

    async def run(self) -> None:
        """Listen until cancelled; reconnect with backoff. Ends early if the broker fails the check."""
        while True:
            try:
                await self._session()
                return  # refused: nothing more to do
            except aiomqtt.MqttError as exc:
                delay = self._backoff.next_delay()
                log.warning("MQTT commands: %s; reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.config.host,
            self.config.effective_port,
            username=self._username.reveal() if self._username else None,
            password=self._password.reveal() if self._password else None,
            identifier=self._client_id,
            tls_context=self._tls,
            timeout=self.config.connect_timeout_s,
            keepalive=self.config.keepalive_s,
            clean_session=True,
        )
        async with client:
            await client.subscribe(f"{self.root}/+", qos=1)
            if self.enabled is None:
                try:
                    self.enabled = await self._broker_enforces_acl(client)
                except aiomqtt.MqttError:
                    # Some broker settings close the connection on a refused publish (Mosquitto 2.0
                    # with max_queued_messages 0): unclear, so try again, then fail closed.
                    self._probe_failures += 1
                    if self._probe_failures < MAX_PROBE_FAILURES:
                        raise
                    self.enabled = False
                    self._why = "the broker dropped the connection at every ACL probe"
                self._journal(
                    "runner.mqtt_commands",
                    {
                        "enabled": self.enabled,
                        "topic": f"{self.root}/<username>",
                        "allowed": sorted(self.allowed_users),
                        "why": "" if self.enabled else self._why,
                    },
                )
                self.ready.set()
                if not self.enabled:
                    log.error(
                        "MQTT commands refused: %s, so it does not bind %s/<username> to the login; "
                        "add the ACL in docs/profiles.md",
                        self._why,
                        self.root,
                    )
                    return
                log.info("MQTT commands: listening on %s/<username> for %s", self.root, sorted(self.allowed_users))
            self._backoff.reset()
            async for message in client.messages:
                self._handle(message)

    async def _broker_enforces_acl(self, client: aiomqtt.Client) -> bool:
        """Publish as nobody in particular; a broker that delivers it does not check usernames.

        Commands that arrive meanwhile are handled once the check passed."""
        probe_topic = f"{self.root}/_probe-{secrets.token_hex(6)}"
        nonce = secrets.token_hex(8).encode()
        await client.publish(probe_topic, nonce, qos=1)
        early: list[aiomqtt.Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._probe_timeout_s):
                async for message in client.messages:
                    if message.topic.value == probe_topic and message.payload == nonce:
                        return False
                    early.append(message)
        for message in early:
            self._handle(message)
        return True

    def _handle(self, message: aiomqtt.Message) -> None:
        who = message.topic.value.rsplit("/", 1)[-1]
        if message.retain:
            self._refuse(who, "a retained message (it would act again on every reconnect); publish with retain off")
            return
        if who not in self.allowed_users:
            self._refuse(who, "this user is not allowed to control the test (--mqtt-allow)")
            return
        try:
            data = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            action = str(data["action"])
            run = str(data["run"])
            reason = str(data.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            self._refuse(who, 'the payload is not {"action": ..., "run": ..., "reason": ...} JSON')
            return
        if action not in ACTIONS:
            self._refuse(who, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
            return
        if run != self.run_id:
            self._refuse(who, f"the command is for run {run!r}, this bench runs {self.run_id}")
            return
        key = f"mqtt:{time.time_ns()}:{who}"
        self._deliver(OperatorCommand(key, action, reason or f"{action} over MQTT", who, "mqtt"))

    def _refuse(self, who: str, why: str) -> None:
        log.warning("MQTT command from %r refused: %s", who, why)
        self._journal("runner.command_refused", {"who": who, "source": "mqtt", "why": why})
