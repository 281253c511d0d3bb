"""What an InfluxDB write answer means for the data in it."""

from __future__ import annotations

import json

import pytest

from daq.sinks.influx_http import Outcome, classify_response


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (204, Outcome.OK),
        (200, Outcome.OK),
        (413, Outcome.TOO_LARGE),
        (400, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (404, Outcome.NOT_FOUND),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (301, Outcome.RETRY),
    ],
)
def test_status_classes(status, outcome):
    assert classify_response(status, b"", None, now_s=0).outcome is outcome


def test_reasons_from_influxdb_1_and_2_bodies_and_plain_text():
    v1 = json.dumps({"error": "partial write: field type conflict"}).encode()
    v2 = json.dumps({"code": "invalid", "message": "unable to parse 'x'"}).encode()
    assert classify_response(400, v1, None, now_s=0).reason == "partial write: field type conflict"
    assert classify_response(400, v2, None, now_s=0).reason == "unable to parse 'x'"
    assert classify_response(500, b"  oops\n  here ", None, now_s=0).reason == "oops here"
    assert classify_response(500, b"", None, now_s=0).reason == "HTTP 500"
    assert len(classify_response(400, b"x" * 5000, None, now_s=0).reason) < 400


def test_retry_after_only_where_it_applies():
    assert classify_response(429, b"", "2", now_s=0).retry_after_s == 2
    assert classify_response(503, b"", "5", now_s=0).retry_after_s == 5
    assert classify_response(400, b"", "5", now_s=0).retry_after_s is None
