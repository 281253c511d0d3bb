"""The replay window's bookkeeping: where a sink goes back to after a failure."""

from __future__ import annotations

from daq.sinks.replay import Position, ReplayWindow


def test_floor_is_the_position_window_seconds_before_the_latest_acknowledgement():
    w = ReplayWindow(30.0, Position(0, 0))
    assert not w.acknowledged(Position(100, 1), 10.0)
    assert not w.acknowledged(Position(200, 1), 20.0)
    assert w.acknowledged(Position(300, 2), 41.0)  # 10 s is now more than 30 s back
    assert w.floor == Position(100, 1)
    assert w.rewind() == Position(100, 1)


def test_quiet_time_after_the_last_ack_does_not_shrink_the_window():
    # a server that dies a minute after its last write lost only what it got before that write
    w = ReplayWindow(30.0, Position(0, 0))
    w.acknowledged(Position(100, 0), 100.0)
    assert w.rewind() == Position(0, 0)


def test_rewind_forgets_the_history_so_repeated_failures_do_not_go_back_further():
    w = ReplayWindow(30.0, Position(50, 0))
    w.acknowledged(Position(100, 0), 1.0)
    assert w.rewind() == Position(50, 0)
    assert w.rewind() == Position(50, 0)
    w.acknowledged(Position(120, 0), 2.0)
    assert w.rewind() == Position(50, 0)


def test_zero_window_never_goes_back():
    w = ReplayWindow(0.0, Position(0, 0))
    assert w.acknowledged(Position(10, 3), 5.0)
    assert w.rewind() == Position(10, 3)
