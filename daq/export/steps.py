"""What the test runner journals about its steps, read back for exports and reports.

The runner stamps every record with a running step number (1, 2, 3, ... in the order the steps
ran; 0 before the first) and journals ``runner.step_started`` with that number, the program step
(``number``: "4.2" is the 2nd step inside program step 4, a loop), its label, kind and cycle.
Runs recorded without the runner (``daq run``) have none of this; callers fall back to the stamps.
"""

from __future__ import annotations

from dataclasses import dataclass

from daq.journal import JournalEvent

STEP_STARTED = "runner.step_started"


@dataclass(frozen=True, slots=True)
class RunnerStep:
    running: int  # the number records carry in ``step``
    program_number: str  # "4.2"
    program_index: int  # 1-based position of the program step in the profile (depth-first)
    label: str
    kind: str
    cycle: int


def _sort_key(number: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in number.split("."))


def runner_steps(events: list[JournalEvent]) -> dict[int, RunnerStep]:
    """Running step number -> the program step it ran; empty when the run had no runner."""
    started = [e.data for e in events if e.kind == STEP_STARTED and isinstance(e.data.get("step"), int)]
    # The program index: the runner's own leaf index when it journals one, else the rank of the
    # program number among those that ran ("1" < "2" < "4.1" < "4.2"), which is the profile's order.
    numbers = sorted({str(d.get("number", d["step"])) for d in started}, key=_sort_key)
    rank = {n: k + 1 for k, n in enumerate(numbers)}
    steps = {}
    for d in started:
        number = str(d.get("number", d["step"]))
        index = int(d["step_index"]) + 1 if isinstance(d.get("step_index"), int) else rank[number]
        steps[d["step"]] = RunnerStep(
            d["step"], number, index, str(d.get("label", "")), str(d.get("kind", "")), int(d.get("cycle", 0))
        )
    return steps
