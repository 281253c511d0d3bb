"""Secrets and TLS material for sinks, read when a sink is built so mistakes surface at start.

A secret comes from an environment variable or a file named in the bench file, never from the
bench file itself, and is held in a ``Secret`` whose repr hides it, so it cannot end up in a log
line or a traceback by accident.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat

from daq.config.sinks import SecretSource, TlsConfig
from daq.errors import ConfigError

log = logging.getLogger(__name__)


class Secret:
    """A credential. ``reveal()`` is the only way to the value; ``repr``/``str`` show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_secret(source: SecretSource, *, what: str) -> Secret:
    """Read ``what`` (e.g. ``sinks[0](mqtt).password``) from its env variable or file."""
    if source.env is not None:
        value = os.environ.get(source.env)
        if value is None:
            raise ConfigError(
                f"{what}: environment variable {source.env} is not set; export it before starting"
                f" (the bench file names the variable, never the secret)"
            )
        if not value:
            raise ConfigError(f"{what}: environment variable {source.env} is empty")
        return Secret(value)
    assert source.file is not None
    path = source.file.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(
            f"{what}: cannot read secret file {path}: {exc.strerror or exc}; check the path and permissions"
        ) from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s: secret file %s is readable by other users; chmod 600 it", what, path)
    lines = text.splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise ConfigError(f"{what}: secret file {path} is empty")
    return Secret(value)


def read_optional_secret(source: SecretSource | None, *, what: str) -> Secret | None:
    return None if source is None else read_secret(source, what=what)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails. paho-mqtt 2.x drops the socket without closing it
    after a failed handshake (bad CA, wrong port), leaking it until garbage collection."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_ssl_context(tls: TlsConfig | None, *, what: str) -> ssl.SSLContext:
    """A client TLS context: server certificate and host name verified unless ``verify: false``."""
    tls = tls or TlsConfig()
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{what}.tls.ca_file: cannot load CA certificates from {tls.ca_file}: {exc}; give a PEM file"
        ) from None
    if tls.cert_file is not None:
        password = read_optional_secret(tls.key_password, what=f"{what}.tls.key_password")
        try:
            ctx.load_cert_chain(
                str(tls.cert_file),
                str(tls.key_file) if tls.key_file else None,
                password=password.reveal() if password else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{what}.tls: cannot load client certificate {tls.cert_file}"
                f"{f' / key {tls.key_file}' if tls.key_file else ''}: {exc}; give matching PEM files"
            ) from None
    ctx.sslsocket_class = _ClosingSSLSocket
    if not tls.verify:
        log.warning("%s: TLS certificate verification is OFF (tls.verify: false); use only for tests", what)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
