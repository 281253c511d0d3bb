"""Real servers for system tests, started by the tests on free ports in temporary folders.

Mosquitto (plain, and TLS with a test CA and a password file), InfluxDB 1.x (``influxd``) and
VictoriaMetrics. Each server is a child process with its own config, data folder and log; it can be
stopped, killed and started again on the same port to play an outage. Nothing here touches a server
that was already running on this machine.

A missing binary fails the test (never a skip): CI installs the Debian packages ``mosquitto``,
``influxdb`` and ``victoria-metrics``.

Use the fixtures (``mosquitto``, ``mosquitto_tls``, ``influxdb_v1``, ``influxdb_v1_auth``,
``victoria_metrics``, ``tls_material``) from a conftest: ``from tests.servers import *``.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

__all__ = [
    "InfluxV1Server",
    "MosquittoServer",
    "ServerProcess",
    "TlsMaterial",
    "VictoriaMetricsServer",
    "free_port",
    "influxdb_v1",
    "influxdb_v1_auth",
    "make_tls_material",
    "mosquitto",
    "mosquitto_tls",
    "require_binary",
    "tls_material",
    "victoria_metrics",
    "wait_until",
]

START_TIMEOUT_S = 30.0
MQTT_USER = "bench"
MQTT_PASSWORD = "s3cret-test-password"
INFLUX_ADMIN = "admin"
INFLUX_PASSWORD = "influx-test-password"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str, *, package: str, fallback: str | None = None) -> str:
    """The path of ``name``; fails the test loudly if it is not installed."""
    path = shutil.which(name) or (fallback if fallback and os.access(fallback, os.X_OK) else None)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (system tests need the real server)")
    return path


def wait_until(predicate: Any, *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` until it is true or fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """One child server process with a config in ``workdir``; start, stop (SIGTERM), kill (SIGKILL)."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            # A server outlives nothing: PDEATHSIG ends it with the process (thread) that started it,
            # so an interrupted test run leaves no broker or database behind.
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as a service manager would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Abrupt death (SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    ca_file: Path  # the CA that signed the server certificate
    server_cert: Path
    server_key: Path
    wrong_ca_file: Path  # an unrelated CA: verification against it must fail


def _write_ca(x509: Any, key_gen: Any, name: str, folder: Path) -> tuple[Any, Any, Path]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = key_gen()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_tls_material(folder: Path) -> TlsMaterial:
    """A test CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - the dev environment has it
        pytest.fail("the 'cryptography' package is needed to make test certificates: pip install cryptography")
    folder.mkdir(parents=True, exist_ok=True)

    def key_gen() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, ca_cert, ca_path = _write_ca(x509, key_gen, "daq-test-ca", folder)
    _, _, wrong_ca_path = _write_ca(x509, key_gen, "unrelated-ca", folder)
    server_key = key_gen()
    now = dt.datetime.now(dt.UTC)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = folder / "server.pem"
    key_path = folder / "server.key"
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return TlsMaterial(ca_path, cert_path, key_path, wrong_ca_path)


# --- Mosquitto ---------------------------------------------------------------------------------


class MosquittoServer(ServerProcess):
    """A private Mosquitto: one plain listener, or (``tls``) one TLS-only listener with a password file.

    Persistence is on, so a graceful stop and start keeps retained messages and the queued QoS 1
    messages of persistent test subscribers, as a lab broker with ``persistence true`` would.
    """

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        tls: TlsMaterial | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.binary = require_binary("mosquitto", package="mosquitto", fallback="/usr/sbin/mosquitto")
        self.port = port or free_port()
        self.tls = tls
        self.users = users
        self.config_path = workdir / "mosquitto.conf"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"user {getpass.getuser()}",  # as root, mosquitto would otherwise drop to 'mosquitto'
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            f"log_dest file {self.workdir / 'broker.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate false",
            ]
        if self.users:
            pw = self.workdir / "passwords"
            pw.write_text("")
            passwd = require_binary("mosquitto_passwd", package="mosquitto")
            for user, password in self.users.items():
                subprocess.run([passwd, "-b", str(pw), user, password], check=True, capture_output=True)
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def ready(self) -> bool:
        return _port_open(self.port)

    def broker_log(self) -> str:
        try:
            return (self.workdir / "broker.log").read_text(errors="replace")
        except OSError:
            return ""


# --- InfluxDB 1.x ------------------------------------------------------------------------------


class InfluxV1Server(ServerProcess):
    """``influxd`` 1.x with every listener on a free local port and its data in ``workdir``."""

    name = "influxd"

    def __init__(self, workdir: Path, *, auth: bool = False) -> None:
        super().__init__(workdir)
        self.binary = require_binary("influxd", package="influxdb", fallback="/usr/bin/influxd")
        self.port = free_port()
        self.rpc_port = free_port()
        self.auth = auth
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "influxdb.conf"
        d = workdir
        self.config_path.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  write-tracing = false
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
        )
        self._admin_created = False

    def command(self) -> list[str]:
        return [self.binary, "run", "-config", str(self.config_path)]

    def ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/ping", timeout=1)
        except OSError:
            return False
        return status == 204

    def start(self) -> None:
        super().start()
        if self.auth and not self._admin_created:
            # With auth on and no user yet, InfluxDB 1.x accepts exactly this one statement.
            self.query(f"CREATE USER {INFLUX_ADMIN} WITH PASSWORD '{INFLUX_PASSWORD}' WITH ALL PRIVILEGES")
            self._admin_created = True

    def _auth_headers(self) -> dict[str, str]:
        if not self.auth or not self._admin_created:
            return {}
        token = base64.b64encode(f"{INFLUX_ADMIN}:{INFLUX_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def query(self, q: str, *, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL over HTTP ``/query`` (POST) and return the JSON answer; raises on an error."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        status, body = _http(
            "POST",
            f"{self.url}/query",
            body=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **self._auth_headers()},
        )
        answer = json.loads(body or b"{}")
        if status != 200 or any("error" in r for r in answer.get("results", [])) or "error" in answer:
            raise RuntimeError(f"InfluxQL {q!r} failed ({status}): {body[:500]!r}")
        return answer

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def select(self, q: str, *, db: str) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts (column -> value), across all series of the answer."""
        rows: list[dict[str, Any]] = []
        for result in self.query(q, db=db).get("results", []):
            for series in result.get("series", []):
                cols = series["columns"]
                tags = series.get("tags", {})
                for values in series["values"]:
                    rows.append({**tags, **dict(zip(cols, values, strict=True)), "_measurement": series["name"]})
        return rows


# --- VictoriaMetrics ---------------------------------------------------------------------------


class VictoriaMetricsServer(ServerProcess):
    """Single-node VictoriaMetrics: implements InfluxDB's ``/api/v2/write``; read back with export."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path, *, dedup: bool = False) -> None:
        """``dedup``: keep one sample per series and millisecond (``-dedup.minScrapeInterval=1ms``),
        as a lab server should, so that rewriting a point (the sinks' replay window) is idempotent."""
        super().__init__(workdir)
        self.dedup = dedup
        self.binary = require_binary(
            "victoria-metrics", package="victoria-metrics", fallback="/usr/bin/victoria-metrics"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
            *(["-dedup.minScrapeInterval=1ms"] if self.dedup else []),
        ]

    def ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/health", timeout=1)
        except OSError:
            return False
        return status == 200

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """All series matching ``match`` after a forced flush: [{metric, values, timestamps}, ...]."""
        status, body = _http("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise RuntimeError(f"force_flush failed ({status}): {body[:200]!r}")
        query = urllib.parse.urlencode({"match[]": match})
        status, body = _http("GET", f"{self.url}/api/v1/export?{query}")
        if status != 200:
            raise RuntimeError(f"export failed ({status}): {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def tls_material(tmp_path: Path) -> TlsMaterial:
    return make_tls_material(tmp_path / "tls")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    with MosquittoServer(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def mosquitto_tls(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[MosquittoServer]:
    """TLS-only listener, password file with user ``MQTT_USER`` / ``MQTT_PASSWORD``."""
    with MosquittoServer(tmp_path / "mosquitto-tls", tls=tls_material, users={MQTT_USER: MQTT_PASSWORD}) as server:
        yield server


@pytest.fixture
def influxdb_v1(tmp_path: Path) -> Iterator[InfluxV1Server]:
    with InfluxV1Server(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def influxdb_v1_auth(tmp_path: Path) -> Iterator[InfluxV1Server]:
    """Auth enabled; admin ``INFLUX_ADMIN`` / ``INFLUX_PASSWORD``."""
    with InfluxV1Server(tmp_path / "influxdb-auth", auth=True) as server:
        yield server


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    with VictoriaMetricsServer(tmp_path / "victoria-metrics") as server:
        yield server
