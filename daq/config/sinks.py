"""Sink sections of the bench file: where the journal is forwarded (MQTT, InfluxDB).

A bench file lists them under ``sinks:`` as a tagged union by ``kind``::

    sinks:
      - kind: mqtt
        host: broker.lab
        tls: {ca_file: /etc/daq/lab-ca.pem}
        username: {env: DAQ_MQTT_USER}
        password: {file: /etc/daq/mqtt.pass}
      - kind: influxdb
        url: http://influx.lab:8086
        bucket: battery
        org: lab
        token: {env: DAQ_INFLUX_TOKEN}

Secrets are never written in the bench file: a secret field is ``{env: VARIABLE}`` or
``{file: PATH}`` and is read when the sink is built. See docs/sinks.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SinkName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Qos = Literal[0, 1, 2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Strict):
    """Where a secret comes from: an environment variable or a file (its content, trimmed)."""

    env: str | None = Field(default=None, description="name of the environment variable holding the secret")
    file: Path | None = Field(default=None, description="file holding the secret (first line; keep it mode 600)")

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        # Never echo the value: pydantic would print it in the error message otherwise.
        if not isinstance(data, dict):
            raise ValueError("must be {env: VARIABLE} or {file: PATH}; never put the secret itself in the bench file")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (variable name) or file (path)")
        if self.env is not None and not self.env.strip():
            raise ValueError("env must name an environment variable")
        return self

    def describe(self) -> str:
        """Where the secret comes from, safe to log."""
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"


class BackoffConfig(_Strict):
    """Reconnect / retry delays: exponential from ``initial_s`` to ``max_s``, randomly shortened by up to
    ``jitter`` (a fraction) so many benches do not retry in lock-step after a lab-wide outage."""

    initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class TlsConfig(_Strict):
    """TLS for a sink. Certificate and host name verification are on unless ``verify: false``."""

    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the server certificate; default: system trust store"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (PEM) for mutual TLS")
    key_file: Path | None = Field(default=None, description="private key of the client certificate (PEM)")
    key_password: SecretSource | None = None
    verify: bool = Field(
        default=True,
        description="verify the server certificate and host name; false only for a throw-away test broker",
    )

    @model_validator(mode="after")
    def _client_pair(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        if self.key_password is not None and self.key_file is None and self.cert_file is None:
            raise ValueError("key_password needs cert_file/key_file")
        return self


def _replay_window(default_s: float) -> Any:
    return Field(
        default=default_s,
        ge=0,
        le=3600,
        description="after a failure or restart, send again what was acknowledged in the last this many seconds"
        " (the server may have lost it in a crash); at least the server's flush interval; 0: off",
    )


def _drain_on_stop() -> Any:
    return Field(
        default=5.0,
        ge=0,
        le=3600,
        description="on a clean stop, wait up to this long for the backlog to be delivered before exiting",
    )


class _BrokerClient(_Strict):
    """What every MQTT-speaking sink shares: a password needs a username; the port follows TLS."""

    if TYPE_CHECKING:  # declared by each subclass, in its own field order
        port: Port | None
        tls: TlsConfig | None
        username: SecretSource | None
        password: SecretSource | None

    @model_validator(mode="after")
    def _credentials(self) -> _BrokerClient:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883


class MqttQosConfig(_Strict):
    """QoS per topic class. With QoS >= 1 a record counts as delivered only after the broker's ack."""

    data: Qos = 1
    status: Qos = 1
    events: Qos = 1
    metrics: Qos = 0


class MqttSinkConfig(_BrokerClient):
    """Live values, status, alarms and self-metrics over MQTT (topic scheme in docs/sinks.md)."""

    kind: Literal["mqtt"]
    name: SinkName = "mqtt"
    host: str = Field(min_length=1)
    port: Port | None = Field(default=None, description="default 8883 with tls, else 1883")
    topic_prefix: str = Field(default="daq", description="first topic level(s); topics are <prefix>/<bench>/...")
    client_id: str | None = Field(
        default=None, max_length=128, description="default daq-<bench id>-<sink name>; unique per broker"
    )
    tls: TlsConfig | None = Field(default=None, description="absent: plain TCP; present: TLS, verified")
    username: SecretSource | None = None
    password: SecretSource | None = None
    qos: MqttQosConfig = MqttQosConfig()
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    ack_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0, description="a batch not acknowledged within this counts as a lost connection"
    )
    batch_max_records: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=200, description="records published back to back before waiting for their acks"
    )
    records_per_message: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1,
        description="1: one JSON object per record on <d>/data; N > 1: a JSON array of up to N records of one"
        " device per message, taken from one batch (fewer messages and acks; consumers must accept arrays)",
    )
    metrics_period_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    backoff: BackoffConfig = BackoffConfig()
    replay_window_s: float = _replay_window(30.0)
    drain_on_stop_s: float = _drain_on_stop()

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/") or "//" in v or not v:
            raise ValueError(
                "topic_prefix must be non-empty topic levels without '+', '#', leading/trailing or double '/'"
            )
        return v



class InfluxSinkConfig(_Strict):
    """History in InfluxDB (schema in docs/sinks.md).

    ``api: v2`` (default) writes to ``/api/v2/write`` (InfluxDB 2.x, 3.x, 1.8+ and compatibles such as
    VictoriaMetrics) with ``bucket``, ``org`` and ``token``; ``api: v1`` writes to ``/write`` of
    InfluxDB 1.x with ``database``, ``retention_policy``, ``username`` and ``password``.
    """

    kind: Literal["influxdb"]
    name: SinkName = "influxdb"
    url: str = Field(description="base URL, e.g. http://influx.lab:8086")
    api: Literal["v1", "v2"] = "v2"
    # v2
    bucket: str | SecretSource | None = None
    org: str | SecretSource | None = Field(default=None, description="required by InfluxDB 2.x")
    token: SecretSource | None = None
    # v1
    database: str | None = None
    retention_policy: str | None = None
    username: SecretSource | None = None
    password: SecretSource | None = None

    tls: TlsConfig | None = Field(default=None, description="options for an https:// url (CA, client cert)")
    step_cycle_tags: bool = Field(
        default=True, description="step and cycle as tags (one series per step); false: integer fields"
    )
    events_measurement: SinkName = "daq_events"
    batch_max_records: Annotated[int, Field(ge=1, le=100000)] = 5000
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="a partial batch is written when its oldest record waited this long"
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    gzip: bool = Field(
        default=False, description="gzip request bodies: less bandwidth over slow links, more CPU on the bench"
    )
    backoff: BackoffConfig = BackoffConfig()
    replay_window_s: float = _replay_window(30.0)
    drain_on_stop_s: float = _drain_on_stop()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSinkConfig:
        if self.api == "v2":
            if self.bucket is None:
                raise ValueError("api v2 needs bucket")
            wrong = [f for f in ("database", "retention_policy", "username", "password") if getattr(self, f)]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for api v1 (v2 uses bucket, org, token)")
        else:
            if not self.database:
                raise ValueError("api v1 needs database")
            wrong = [f for f in ("bucket", "org", "token") if getattr(self, f)]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for api v2 (v1 uses database, username, password)")
            if self.password is not None and self.username is None:
                raise ValueError("password needs username")
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls options need an https:// url")
        return self


SparkplugId = Annotated[str, Field(pattern=r"^[^+#/\s]{1,64}$", description="no '+', '#', '/' or spaces")]


class SparkplugSinkConfig(_BrokerClient):
    """Sparkplug B for SCADA (Ignition, ...): the bench as an edge node, its devices as Sparkplug devices.

    Births with names, types, units and aliases, data by alias, bdSeq/seq per the specification,
    NDEATH as the MQTT will, rebirth on an NCMD ``Node Control/Rebirth`` (docs/sinks.md)."""

    kind: Literal["sparkplug"]
    name: SinkName = "sparkplug"
    host: str = Field(min_length=1)
    port: Port | None = Field(default=None, description="default 8883 with tls, else 1883")
    group_id: SparkplugId
    edge_node_id: SparkplugId | None = Field(default=None, description="default: the bench id")
    device_ids: dict[str, SparkplugId] = Field(
        default_factory=dict, description="bench device name -> Sparkplug device id; default: the device name"
    )
    client_id: str | None = Field(default=None, max_length=128, description="default daq-<bench id>-<sink name>")
    primary_host_id: SparkplugId | None = Field(
        default=None,
        description="publish only while this primary host application's STATE (spBv1.0/STATE/<id>) is online",
    )
    tls: TlsConfig | None = None
    username: SecretSource | None = None
    password: SecretSource | None = None
    qos: Literal[0, 1] = Field(
        default=1,
        description="births and data; 1 moves the journal cursor only on the broker's ack (no lost reading),"
        " 0 is the letter of Sparkplug 3.0",
    )
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    ack_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    batch_max_records: Annotated[int, Field(ge=1, le=10000)] = 200
    backoff: BackoffConfig = BackoffConfig()
    drain_on_stop_s: float = _drain_on_stop()



SinkConfig = Annotated[MqttSinkConfig | InfluxSinkConfig | SparkplugSinkConfig, Field(discriminator="kind")]
