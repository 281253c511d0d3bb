"""Sink config models: the tagged union, secrets only by reference, per-API fields, clear errors."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from daq.config.errors import format_validation_error
from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig, SecretSource, SinkConfig, TlsConfig
from daq.errors import ConfigError
from daq.sinks.credentials import Secret, client_ssl_context, read_secret

SINKS = TypeAdapter(list[SinkConfig])


def errors(data) -> list[str]:
    with pytest.raises(ValidationError) as info:
        SINKS.validate_python(data)
    return format_validation_error(info.value, "bench.yaml", {"sinks": data})


def test_union_by_kind_with_defaults():
    mqtt, influx = SINKS.validate_python(
        [
            {"kind": "mqtt", "host": "broker.lab"},
            {"kind": "influxdb", "url": "http://influx.lab:8086/", "bucket": "b", "token": {"env": "T"}},
        ]
    )
    assert isinstance(mqtt, MqttSinkConfig) and mqtt.effective_port == 1883 and mqtt.qos.data == 1
    assert MqttSinkConfig(kind="mqtt", host="h", tls=TlsConfig()).effective_port == 8883
    assert isinstance(influx, InfluxSinkConfig) and influx.api == "v2" and influx.url == "http://influx.lab:8086"


def test_inline_secret_is_refused_without_echoing_it():
    lines = errors([{"kind": "mqtt", "host": "h", "username": {"env": "U"}, "password": "hunter2"}])
    assert len(lines) == 1 and "never put the secret itself" in lines[0]
    assert "hunter2" not in lines[0]


@pytest.mark.parametrize("source", [{}, {"env": "A", "file": "/x"}, {"env": " "}])
def test_secret_needs_exactly_one_source(source):
    with pytest.raises(ValidationError):
        SecretSource.model_validate(source)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "influxdb", "url": "http://x", "api": "v1"}, "api v1 needs database"),
        ({"kind": "influxdb", "url": "http://x"}, "api v2 needs bucket"),
        ({"kind": "influxdb", "url": "http://x", "bucket": "b", "database": "d"}, "database: only for api v1"),
        (
            {"kind": "influxdb", "url": "http://x", "api": "v1", "database": "d", "token": {"env": "T"}},
            "only for api v2",
        ),
        ({"kind": "influxdb", "url": "x:8086", "bucket": "b"}, "http:// or https://"),
        ({"kind": "influxdb", "url": "http://x", "bucket": "b", "tls": {}}, "need an https:// url"),
        ({"kind": "mqtt", "host": "h", "password": {"env": "P"}}, "password needs username"),
        ({"kind": "mqtt", "host": "h", "topic_prefix": "a/#"}, "topic_prefix"),
        ({"kind": "mqtt", "host": "h", "tls": {"key_file": "k.pem"}}, "key_file needs cert_file"),
        ({"kind": "mqtt", "host": "h", "qos": {"data": 3}}, "qos.data"),
        ({"kind": "mqtt", "host": "h", "hots": 1}, "unknown key"),
        ({"kind": "kafka"}, "unknown kind"),
    ],
)
def test_one_clear_line_per_mistake(entry, message):
    lines = errors([entry])
    assert any(message in line for line in lines), lines
    assert all(line.startswith("bench.yaml: sinks[0]") or line.startswith("bench.yaml: [0]") for line in lines)


def test_models_are_frozen():
    cfg = MqttSinkConfig(kind="mqtt", host="h")
    with pytest.raises(ValidationError):
        cfg.host = "other"  # type: ignore[misc]


# --- reading secrets and TLS material ----------------------------------------------------------


def test_secret_from_env(monkeypatch):
    monkeypatch.setenv("DAQ_TEST_SECRET", "s3cret")
    secret = read_secret(SecretSource(env="DAQ_TEST_SECRET"), what="sinks[0].password")
    assert secret.reveal() == "s3cret" and "s3cret" not in repr(secret) and "s3cret" not in str(secret)
    monkeypatch.delenv("DAQ_TEST_SECRET")
    with pytest.raises(ConfigError, match=r"sinks\[0\].password: environment variable DAQ_TEST_SECRET is not set"):
        read_secret(SecretSource(env="DAQ_TEST_SECRET"), what="sinks[0].password")


def test_secret_from_file(tmp_path: Path, caplog):
    path = tmp_path / "pw"
    path.write_text("first-line  \nsecond\n")
    path.chmod(0o600)
    assert read_secret(SecretSource(file=path), what="pw").reveal() == "first-line"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        read_secret(SecretSource(file=path), what="pw")
    assert "readable by other users" in caplog.text and "first-line" not in caplog.text
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(SecretSource(file=path), what="pw")
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(SecretSource(file=tmp_path / "missing"), what="pw")


def test_secret_repr_hides_value():
    assert repr(Secret("x")) == "Secret('***')"


def test_tls_context_verifies_by_default_and_reports_bad_files(tmp_path: Path, caplog):
    ctx = client_ssl_context(None, what="sinks[0]")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"sinks\[0\].tls.ca_file: cannot load CA certificates"):
        client_ssl_context(TlsConfig(ca_file=bad), what="sinks[0]")
    with caplog.at_level(logging.WARNING):
        off = client_ssl_context(TlsConfig(verify=False), what="sinks[0]")
    assert off.verify_mode == ssl.CERT_NONE and "verification is OFF" in caplog.text
