"""Resume: where a resumed test continues (``daq test resume``).

``ResumePoint`` is what ``daq.runner.session`` rebuilds from the journal (the persisted runner
state, the cycle summaries so far, and the interrupted step's totals from a replay of its records);
``Resume._first_step`` picks the step the runner enters first: the interrupted step with its
progress restored, or the cursor's step afresh. Part of ``TestRunner`` (``daq.runner.runner``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from daq.profiles import PlanItem
from daq.runner.base import RunnerBase
from daq.runner.integrator import Totals
from daq.runner.state import RunnerState, StepProgress


@dataclass(slots=True)
class ResumePoint:
    """Where a resumed test continues (``daq test resume``)."""

    state: RunnerState
    summaries: list[dict[str, Any]]
    step_totals: Totals | None = None  # of the interrupted step so far (journal replay + gap)
    step_elapsed_s: float | None = None
    max_temperature_c: float = math.nan


class Resume(RunnerBase):
    """Continuing an interrupted step."""

    def _resumed_step(self, item: PlanItem) -> tuple[StepProgress, Totals] | None:
        """The interrupted step's progress and totals if ``item`` is that step, else None (start afresh)."""
        resume = self._resume
        if resume is None or resume.state.step is None or resume.state.step.step != item.step_count + 1:
            return None
        progress = resume.state.step
        totals = resume.step_totals or Totals()
        progress.elapsed_before_s = resume.step_elapsed_s or progress.elapsed_before_s
        progress.max_temperature_c = resume.max_temperature_c
        return progress, totals
