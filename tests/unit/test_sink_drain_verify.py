"""What the operator reads after a stop, a flush or a verification."""

from __future__ import annotations

from daq.sinks.drain import DrainResult
from daq.sinks.verify import VerifyResult, seq_ranges


def test_drain_result_says_what_stays_in_the_journal():
    assert DrainResult("live", 0, 0).describe() == "sink live: everything delivered"
    left = DrainResult("history", 66, 2)
    assert not left.done
    assert left.describe().startswith(
        "sink history: 66 records and 2 events not yet delivered; they stay in the journal"
    )


def test_seq_ranges_are_compact_and_bounded():
    assert seq_ranges([3071, 3072, 3073, 4000]) == "3071-3073, 4000"
    assert seq_ranges(list(range(0, 40, 2)), limit=3) == "0, 2, 4 and 17 more ranges"


def test_verify_result_lists_missing_seqs():
    result = VerifyResult("history", "http://db", "b1-1", 10, missing=[4, 5, 6])
    assert result.describe() == "run b1-1: sink history (http://db) has 7 of 10 records; missing seqs 4-6"
    assert VerifyResult("history", "http://db", "b1-1", 10).complete
