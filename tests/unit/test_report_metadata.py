"""The report shows what the runner recorded about the test (operator, pack, profile)."""

from __future__ import annotations

from daq.report.data import flat_metadata


def test_runner_test_section_is_lifted_to_the_top() -> None:
    meta = {"software_version": "0.1.0", "test": {"operator": "ann", "pack_serial": "P123", "profile": "cap"}}
    flat = flat_metadata(meta)
    assert flat["operator"] == "ann" and flat["pack_serial"] == "P123" and flat["software_version"] == "0.1.0"
    assert flat_metadata({"operator": "bob"}) == {"operator": "bob"}
