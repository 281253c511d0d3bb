"""Cycle tests: run a test profile on a bench's cycler, resumably.

    prepared = prepare_test(load_bench("configs/ci_bench.yaml"), "configs/profiles/ci_cycle_3x.yaml")
    session = TestSession(prepared, metadata={"operator": "alice"})
    run_id = await session.start()
    outcome = await session.run()          # Outcome(status="completed" | "aborted" | "stopped", reason)
    await session.close(outcome)

Modules: ``runner`` (the state machine, assembled from ``step_execution``, ``end_conditions`` (the
record hook), ``operator_control`` and ``resume``), ``step_limits`` (a step's limits against the
limit set), ``steps`` (step -> cycler command, end conditions), ``integrator`` (Ah/Wh),
``summary`` (per-step results, per-cycle summary),
``state`` (what is persisted for resume), ``recovery`` (replaying the interrupted step),
``control`` (operator commands through the journal), ``target`` (what the bench allows),
``progress`` (cycle n of N, ETA), ``session`` (start and resume end to end).
The profile format reference for technicians is docs/profiles.md.
"""

from daq.runner.control import JournalControl, OperatorCommand, serve_journal_commands
from daq.runner.integrator import SampleIntegrator, Totals
from daq.runner.progress import Progress, plan_size, progress_lines, progress_text
from daq.runner.runner import Outcome, ResumePoint, TestRunner
from daq.runner.session import (
    PreparedTest,
    ResumeSession,
    StoredTest,
    TestSession,
    open_resume,
    prepare_test,
    read_stored_test,
)
from daq.runner.state import RunnerState, StepProgress
from daq.runner.steps import CurrentLimits, command_at, end_reason, step_category
from daq.runner.summary import CycleAccumulator, StepResult, format_summary_table
from daq.runner.target import TestTarget, require_profile_fits, resolve_target

__all__ = [
    "CurrentLimits",
    "CycleAccumulator",
    "JournalControl",
    "OperatorCommand",
    "Outcome",
    "PreparedTest",
    "Progress",
    "ResumePoint",
    "ResumeSession",
    "RunnerState",
    "SampleIntegrator",
    "StepProgress",
    "StepResult",
    "StoredTest",
    "TestRunner",
    "TestSession",
    "TestTarget",
    "Totals",
    "command_at",
    "end_reason",
    "format_summary_table",
    "open_resume",
    "plan_size",
    "prepare_test",
    "progress_lines",
    "progress_text",
    "read_stored_test",
    "require_profile_fits",
    "resolve_target",
    "serve_journal_commands",
    "step_category",
]
