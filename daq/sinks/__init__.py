"""Sinks forward the journal to MQTT and InfluxDB with store-and-forward (see docs/sinks.md).

Public surface::

    build_sink(config, bench_id=..., journal_path=..., journal=..., clock=..., metrics_source=...) -> Sink
    Sink (protocol: name, async run(), metrics()), MqttSink, InfluxSink
    cursor_names(sink_name), journal_backlog(reader, sink_name, now_ns=...)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig, SparkplugSinkConfig
from daq.sinks.base import RejectionLog, Sink, cursor_names, journal_backlog
from daq.sinks.influx import InfluxSink
from daq.sinks.mqtt import MqttSink

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.journal import Journal

__all__ = [
    "InfluxSink",
    "MqttSink",
    "RejectionLog",
    "Sink",
    "build_sink",
    "cursor_names",
    "journal_backlog",
]


def build_sink(
    config: MqttSinkConfig | InfluxSinkConfig | SparkplugSinkConfig,
    *,
    bench_id: str,
    journal_path: str | Path,
    journal: Journal | None = None,
    clock: Clock | None = None,
    metrics_source: Callable[[], Mapping[str, Any]] | None = None,
    where: str | None = None,
) -> Sink:
    """The sink for one ``sinks:`` entry. Raises ``ConfigError`` for a missing secret or unreadable
    TLS file; never for an unreachable server (the sink retries that on its own)."""
    if isinstance(config, SparkplugSinkConfig):
        from daq.sinks.sparkplug.sink import SparkplugSink  # only Sparkplug benches load the protobuf module

        return SparkplugSink(
            config, bench_id=bench_id, journal_path=journal_path, journal=journal, clock=clock, where=where
        )
    if isinstance(config, MqttSinkConfig):
        return MqttSink(
            config,
            bench_id=bench_id,
            journal_path=journal_path,
            journal=journal,
            clock=clock,
            metrics_source=metrics_source,
            where=where,
        )
    return InfluxSink(config, bench_id=bench_id, journal_path=journal_path, journal=journal, clock=clock, where=where)
