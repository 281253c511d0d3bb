"""Shared fixtures: every test must leave no asyncio task running behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    # give cancelled tasks one turn of the loop to finish
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
    for t in left:
        t.cancel()
    assert not left, f"test left tasks running: {[t.get_name() for t in left]}"
