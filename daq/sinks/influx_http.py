"""HTTP writes of line protocol to InfluxDB (v1 ``/write``, v2 ``/api/v2/write``) with aiohttp.

One code path for both APIs: the body is line protocol we build ourselves (see lineprotocol.py),
so the client library's ``Point`` objects are not needed; influxdb-client's async writer posts the
same bytes through the same aiohttp and measured the same speed (docs/sinks.md). Every answer is
classified into a ``WriteResult`` the sink acts on; nothing here retries or sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from daq.errors import SinkError
from daq.sinks.backoff import parse_retry_after
from daq.sinks.credentials import Secret

_REASON_MAX = 300


class Outcome(enum.Enum):
    OK = "ok"  # 2xx: the database has it
    RETRY = "retry"  # 429, 5xx, 408: try the same body again later (honour retry_after_s)
    TOO_LARGE = "too_large"  # 413: split the batch
    REJECTED = "rejected"  # other 4xx: the data is refused; bisect to the offending line
    AUTH = "auth"  # 401/403: credentials wrong; keep the data and retry (someone fixes the token)
    NOT_FOUND = "not_found"  # 404: database/bucket missing; keep the data and retry
    UNREACHABLE = "unreachable"  # no HTTP answer at all (refused, TLS, timeout, reset)


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: Outcome
    status: int | None
    reason: str
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def _reason(body: bytes) -> str:
    """The server's message: InfluxDB 1.x {"error"}, 2.x {"message"}, others plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        text = str(doc.get("error") or doc.get("message") or text)
    text = " ".join(text.split())
    return text[:_REASON_MAX] + ("..." if len(text) > _REASON_MAX else "")


def classify_response(status: int, body: bytes, retry_after: str | None, *, now_s: float) -> WriteResult:
    """What an HTTP answer to a write means for the data in it. Pure."""
    if 200 <= status < 300:
        return WriteResult(Outcome.OK, status, "")
    reason = _reason(body) or f"HTTP {status}"
    if status == 413:
        return WriteResult(Outcome.TOO_LARGE, status, reason)
    if status in (401, 403):
        return WriteResult(Outcome.AUTH, status, reason)
    if status == 404:
        return WriteResult(Outcome.NOT_FOUND, status, reason)
    if status in (408, 429) or status >= 500 or status < 400:
        return WriteResult(Outcome.RETRY, status, reason, parse_retry_after(retry_after, now_s=now_s))
    return WriteResult(Outcome.REJECTED, status, reason)


class InfluxWriter:
    """POSTs line protocol bodies to one database. Use as ``async with``; ``write`` never raises for
    HTTP or network failures: it returns what happened."""

    def __init__(
        self,
        *,
        url: str,
        api: str,
        bucket: str | None = None,
        org: str | None = None,
        token: Secret | None = None,
        database: str | None = None,
        retention_policy: str | None = None,
        username: Secret | None = None,
        password: Secret | None = None,
        ssl_context: ssl.SSLContext | None = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.api = api
        self._headers: dict[str, str] = {"Content-Type": "text/plain; charset=utf-8"}
        if api == "v2":
            self.endpoint = f"{url}/api/v2/write"
            self._params = {"bucket": bucket or "", "precision": "ns"}
            if org:
                self._params["org"] = org
            if token is not None:
                self._headers["Authorization"] = f"Token {token.reveal()}"
        else:
            self.endpoint = f"{url}/write"
            self._params = {"db": database or "", "precision": "n"}
            if retention_policy:
                self._params["rp"] = retention_policy
            if username is not None:
                # Basic auth, not u=/p= query parameters: URLs end up in proxy and server logs.
                pair = f"{username.reveal()}:{password.reveal() if password else ''}".encode()
                self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        # TCP connections opened so far: a new one after the first means the old one broke, maybe
        # because the server restarted and lost what it had acknowledged (daq.sinks.replay).
        self.connections_opened = 0

    async def __aenter__(self) -> InfluxWriter:
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_create_end.append(self._connection_opened)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4), trace_configs=[tracing]
        )
        return self

    async def _connection_opened(self, *_: object) -> None:
        self.connections_opened += 1

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, body: bytes, *, gzipped: bool = False) -> WriteResult:
        assert self._session is not None, "use InfluxWriter as an async context manager"
        headers = dict(self._headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(
                self.endpoint,
                params=self._params,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                answer = await resp.read()
                return classify_response(resp.status, answer, resp.headers.get("Retry-After"), now_s=time.time())
        except aiohttp.ClientConnectorCertificateError as exc:
            return WriteResult(
                Outcome.UNREACHABLE,
                None,
                f"TLS certificate of {self.url} not trusted ({exc.certificate_error}); set tls.ca_file to the CA"
                f" that signed it. Not falling back to plain HTTP",
            )
        except aiohttp.ClientSSLError as exc:
            return WriteResult(Outcome.UNREACHABLE, None, f"TLS handshake with {self.url} failed: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return WriteResult(Outcome.UNREACHABLE, None, f"cannot connect to {self.url}: {exc.strerror or exc}")
        except TimeoutError:
            return WriteResult(Outcome.UNREACHABLE, None, f"no answer from {self.url} within {self._timeout.total} s")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return WriteResult(Outcome.UNREACHABLE, None, f"{self.url}: {type(exc).__name__}: {exc}")

    async def get(self, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        """GET ``<url><path>`` with this writer's credentials and TLS (read-back for verification).

        Raises ``SinkError`` when there is no HTTP answer."""
        assert self._session is not None, "use InfluxWriter as an async context manager"
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        try:
            async with self._session.get(f"{self.url}{path}", params=params, headers=headers) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SinkError(f"cannot read from {self.url}: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """Where this writer writes, without credentials."""
        return {"endpoint": self.endpoint, "params": dict(self._params)}
