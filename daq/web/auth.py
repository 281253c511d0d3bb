"""Who may use the page's controls: a bench with ``web.controls`` and a request carrying its token.

The token travels in an ``Authorization: Bearer`` header, never in a cookie, so another site the
operator has open cannot make the browser send it (no CSRF). Compared in constant time.
"""

from __future__ import annotations

import hmac

from daq.sinks.credentials import Secret


class ControlRefused(Exception):
    """A control request that must not reach the bench; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlGate:
    def __init__(self, *, enabled: bool, token: Secret | None) -> None:
        self.enabled = enabled and token is not None
        self._token = token

    def check(self, authorization: str | None) -> None:
        if not self.enabled or self._token is None:
            raise ControlRefused(
                403, "controls are off on this bench; set web.controls: true and web.token in the bench file"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ControlRefused(401, "this control needs the operator token (Authorization: Bearer TOKEN)")
        if not hmac.compare_digest(given.strip().encode(), self._token.reveal().encode()):
            raise ControlRefused(403, "wrong operator token")
