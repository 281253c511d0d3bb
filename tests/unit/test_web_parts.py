"""The web server's small pure parts: --http parsing, the control gate, the web: config section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from daq.config.web import WebConfig
from daq.errors import ConfigError
from daq.sinks.credentials import Secret
from daq.web.auth import ControlGate, ControlRefused
from daq.web.server import parse_http
from daq.web.static_files import load_static


def test_parse_http_forms() -> None:
    assert parse_http("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http("8080") == ("127.0.0.1", 8080)
    assert parse_http(":0") == ("127.0.0.1", 0)
    assert parse_http("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_http("localhost:http")
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        parse_http("127.0.0.1:70000")


def test_gate_refuses_without_controls_or_with_a_wrong_token() -> None:
    off = ControlGate(enabled=False, token=Secret("t"))
    with pytest.raises(ControlRefused) as exc:
        off.check("Bearer t")
    assert exc.value.status == 403 and "controls are off" in exc.value.message
    gate = ControlGate(enabled=True, token=Secret("s3cret"))
    for header, status in ((None, 401), ("", 401), ("Basic s3cret", 401), ("Bearer ", 401), ("Bearer nope", 403)):
        with pytest.raises(ControlRefused) as exc:
            gate.check(header)
        assert exc.value.status == status, header
    gate.check("Bearer s3cret")
    gate.check("bearer  s3cret ")


def test_web_config_needs_a_token_for_controls_and_forbids_unknown_keys() -> None:
    assert WebConfig().controls is False
    with pytest.raises(ValidationError, match="controls: true needs token"):
        WebConfig(controls=True)
    with pytest.raises(ValidationError, match="never put the secret itself"):
        WebConfig(controls=True, token="s3cret")
    with pytest.raises(ValidationError, match="Extra inputs"):
        WebConfig(port=8080)
    assert WebConfig(controls=True, token={"env": "X"}).token.env == "X"


def test_static_files_ship_with_the_package() -> None:
    assets = load_static()
    for name in ("bench.html", "bench.js", "overview.html", "overview.js", "style.css", "openapi.json",
                 "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):  # fmt: skip
        assert name in assets and assets[name][0], name
    assert assets["bench.js"][1].startswith("text/javascript")
