"""Headless Chromium for the web tests: Debian's /usr/bin/chromium driven by Playwright (no download)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def browser_page(**context_options: Any) -> AsyncIterator[Any]:
    """One page in a fresh headless Chromium, closed (browser and driver) on the way out."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1400}, **context_options)
            page = await context.new_page()
            yield page
        finally:
            await browser.close()
