"""Jittered exponential backoff and Retry-After parsing."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from daq.sinks.backoff import RETRY_AFTER_CAP_S, Backoff, parse_retry_after


def test_grows_to_the_cap_and_resets():
    b = Backoff(initial_s=1, max_s=8, multiplier=2, jitter=0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next_delay() == 1 and b.attempt == 1


def test_jitter_stays_within_its_fraction_and_varies():
    b = Backoff(initial_s=10, max_s=10, jitter=0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(200)]
    assert all(5 <= d <= 10 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100


def test_retry_after_is_honoured_and_capped():
    b = Backoff(initial_s=0.1, max_s=1, jitter=0)
    assert b.next_delay(at_least_s=7) == 7
    assert b.next_delay(at_least_s=1e9) == RETRY_AFTER_CAP_S


def test_invalid_parameters():
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), (None, None), ("", None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after_seconds(header, expected):
    assert parse_retry_after(header, now_s=0) == expected


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now_s=now) == pytest.approx(30)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now_s=now) == 0.0
