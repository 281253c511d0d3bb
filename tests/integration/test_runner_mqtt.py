"""Operator commands over MQTT against a real Mosquitto with password logins and an ACL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from daq.config.loader import load_bench
from daq.journal import JournalReader
from daq.runner import TestSession, prepare_test
from daq.runner.session import mqtt_command_listener
from tests.helpers import sim_bench, wait_until
from tests.servers import MosquittoServer

pytestmark = pytest.mark.system

USERS = {"bench": "bench-pw", "alice": "alice-pw", "mallory": "mallory-pw"}
ACL = """\
user bench
topic write daq/#
topic read daq-commands/testbench/+
pattern write daq-commands/+/%u
"""


class AclMosquitto(MosquittoServer):
    """Mosquitto as a lab would run it: password logins and, if given, an ACL file.

    (Not the shared fixture's settings: with ``max_queued_messages 0`` Mosquitto 2.0 closes the
    connection on a refused publish, which the listener then treats as a failed check.)"""

    def __init__(self, workdir: Path, *, acl: str | None) -> None:
        self.acl = acl
        super().__init__(workdir, users=USERS)

    def _write_config(self) -> None:
        super()._write_config()
        keep = [ln for ln in self.config_path.read_text().splitlines() if not ln.startswith("max_")]
        if self.acl is not None:
            path = self.workdir / "acl"
            path.write_text(self.acl)
            keep.append(f"acl_file {path}")
        self.config_path.write_text("\n".join(keep) + "\n")


@pytest.fixture(params=[ACL, None], ids=["acl", "no-acl"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    server = AclMosquitto(tmp_path / "mosquitto", acl=request.param)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def publish(port: int, user: str, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=USERS[user], identifier=f"t-{user}") as c:
        await c.publish(topic, json.dumps(payload).encode(), qos=1, retain=retain)


def runner_events(journal: Path, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    with JournalReader(journal) as reader:
        return [(e.kind, e.data) for e in reader.run_events(run_id) if e.kind.startswith("runner.")]


async def test_only_allowed_authenticated_users_control_the_test_and_only_if_the_broker_binds_names(
    tmp_path: Path, broker: AclMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_MQTT_USER", "bench")
    monkeypatch.setenv("T_MQTT_PASSWORD", USERS["bench"])
    bench = sim_bench(tmp_path, poll_period_s=0.05)
    cfg = yaml.safe_load(bench.read_text())
    cfg["sinks"] = [
        {
            "kind": "mqtt",
            "name": "lab",
            "host": "127.0.0.1",
            "port": broker.port,
            "username": {"env": "T_MQTT_USER"},
            "password": {"env": "T_MQTT_PASSWORD"},
        }
    ]
    bench.write_text(yaml.safe_dump(cfg))
    profile = tmp_path / "p.yaml"
    profile.write_text(
        yaml.safe_dump(
            {"name": "p", "steps": [{"kind": "cc", "direction": "discharge", "current_a": 5, "duration_s": 3600}]}
        )
    )
    loaded = load_bench(bench)
    listener = mqtt_command_listener(loaded, "lab", {"alice"})
    session = TestSession(prepare_test(loaded, profile))
    run_id = await session.start()
    topic = "daq-commands/testbench"
    # a retained command (left on the broker) must never act when the listener (re)subscribes
    await publish(broker.port, "alice", f"{topic}/alice", {"action": "abort", "run": run_id}, retain=True)
    session.enable_mqtt_commands(listener)
    task = asyncio.create_task(session.run())
    journal = tmp_path / "journal.sqlite"
    outcome = None
    try:
        await asyncio.wait_for(listener.ready.wait(), 20)
        if broker.acl is None:
            # anyone could publish as anyone: commands stay off, and say why
            assert listener.enabled is False
            await publish(broker.port, "alice", f"{topic}/alice", {"action": "abort", "run": run_id})
            session.runner.request_exit("end of test")
            outcome = await asyncio.wait_for(task, 20)
        else:
            await control_over_mqtt(broker, session, run_id)
            outcome = await asyncio.wait_for(task, 20)
    finally:
        if not task.done():
            task.cancel()
        await session.close(outcome)
    events = runner_events(journal, run_id)
    if broker.acl is None:
        assert outcome.status == "stopped"  # the abort was never taken
        assert [d for k, d in events if k == "runner.mqtt_commands"] == [
            {
                "enabled": False,
                "topic": f"{topic}/<username>",
                "allowed": ["alice"],
                "why": "the broker lets a client publish as another user",
            }
        ]
        return
    assert outcome.status == "aborted" and outcome.reason == "done"
    control = [(k, d.get("who"), d.get("reason")) for k, d in events if k in ("runner.paused", "runner.resumed")]
    assert control == [("runner.paused", "alice", "tea"), ("runner.resumed", "alice", None)]
    assert [d["who"] for k, d in events if k == "runner.aborted"] == ["alice"]
    refused = [(d["who"], d["why"].split(" (")[0].split(";")[0]) for k, d in events if k == "runner.command_refused"]
    assert refused == [
        ("alice", "a retained message"),
        ("mallory", "this user is not allowed to control the test"),
        ("alice", "the command is for run 'some-other-run', this bench runs " + run_id),
    ]


async def control_over_mqtt(broker: AclMosquitto, session: TestSession, run_id: str) -> None:
    topic = "daq-commands/testbench"
    runner = session.runner
    assert runner is not None
    # mallory may log in but is not allowed; and the broker stops her speaking as alice
    await publish(broker.port, "mallory", f"{topic}/mallory", {"action": "abort", "run": run_id})
    await publish(broker.port, "mallory", f"{topic}/alice", {"action": "abort", "run": run_id, "reason": "spoof"})
    # alice: a command for another run is refused, a proper one is taken
    await publish(broker.port, "alice", f"{topic}/alice", {"action": "abort", "run": "some-other-run"})
    await publish(broker.port, "alice", f"{topic}/alice", {"action": "pause", "run": run_id, "reason": "tea"})
    await wait_until(lambda: runner.phase == "paused", what="paused over MQTT")
    await publish(broker.port, "alice", f"{topic}/alice", {"action": "resume", "run": run_id})
    await wait_until(lambda: runner.phase == "running", what="resumed over MQTT")
    await publish(broker.port, "alice", f"{topic}/alice", {"action": "abort", "run": run_id, "reason": "done"})
