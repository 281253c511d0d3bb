"""The page's files, shipped as package data and found through importlib.resources.

Read once into memory at start: a fixed set of names (no path from the URL ever reaches the
file system) and no dependency on the package being unpacked on disk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """name (relative to static/, e.g. ``vendor/uPlot.iife.min.js``) -> (content, content type)."""
    root = files("daq.web").joinpath("static")
    out: dict[str, tuple[bytes, str]] = {}

    def walk(node: object, prefix: str) -> None:
        for child in node.iterdir():  # type: ignore[attr-defined]
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if suffix in CONTENT_TYPES:
                out[name] = (child.read_bytes(), CONTENT_TYPES[suffix])

    walk(root, "")
    return out


def static_handler(assets: dict[str, tuple[bytes, str]]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound(text=f"no file {name}")
        body, ctype = assets[name]
        return web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})

    return handle


def page(assets: dict[str, tuple[bytes, str]], name: str) -> Handler:
    body, ctype = assets[name]

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})

    return handle
