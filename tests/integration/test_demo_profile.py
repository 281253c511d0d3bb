"""The profile the README says to try first, on the demo bench: it ends, with an ETA from its start."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import yaml

from daq.config.loader import load_bench
from daq.runner import TestSession, prepare_test
from tests.helpers import REPO, wait_until

PROFILE = REPO / "configs" / "profiles" / "demo_quick.yaml"


def demo_bench(tmp_path: Path) -> Path:
    """configs/demo.yaml with its journal in ``tmp_path``, at 30x so the test takes seconds, not a minute.

    The BMS is polled every 5 bench seconds at that scale so its 9600-baud line keeps up, and the
    cycler watchdog is off: its 10 bench seconds are a third of a wall second at 30x, which a
    loaded CI machine can stall for (configs/ci_bench.yaml says the same).
    """
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["journal"]["path"] = str(tmp_path / "journal.sqlite")
    cfg["simulation"]["time_scale"] = 30
    cfg["devices"][0]["regmap"] = str(REPO / "configs" / "regmaps" / "sim_cycler.yaml")
    cfg["devices"][1]["poll_period_s"] = 5.0
    cfg["devices"][0]["watchdog_timeout_s"] = 0
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def test_the_demo_profile_runs_to_the_end_with_an_eta_from_the_first_step(tmp_path: Path) -> None:
    session = TestSession(prepare_test(load_bench(demo_bench(tmp_path)), PROFILE), metadata={"operator": "ci"})
    await session.start()
    outcome = None
    running = asyncio.create_task(session.run(), name="test:demo-profile")
    try:
        runner = session.runner
        assert runner is not None
        await wait_until(lambda: runner.progress().step_eta_s is not None, what="a step ETA in step 1")
        first = runner.progress()
        assert first.step == 1 and not runner.summaries  # no cycle completed: the ETA comes from the plan
        assert first.eta_s is not None and 0 < first.eta_s <= 360.0
        assert first.step_eta_s is not None and first.step_eta_s <= 60.0
        await wait_until(lambda: runner.progress().step == 2, what="step 2")
        second = runner.progress()
        assert second.eta_s is not None and second.eta_s < first.eta_s  # it moves as the test runs
        assert runner.status()["eta_s"] is not None
        outcome = await running
    finally:
        if not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await session.close(outcome)
    assert outcome is not None and outcome.status == "completed", outcome
    assert len(runner.summaries) == 2
