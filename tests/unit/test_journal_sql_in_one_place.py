"""Every SQL statement of the daq runtime lives in ``daq.journal`` (ADR 0014): other modules go
through ``Journal`` (the bench's writer), ``JournalReader`` or ``JournalCommands``."""

from __future__ import annotations

import ast
from importlib.resources import files


def _modules_importing_sqlite() -> list[str]:
    found = []
    pending = [(files("daq"), "daq")]
    while pending:
        folder, dotted = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((entry, f"{dotted}.{entry.name}"))
            elif entry.name.endswith(".py"):
                tree = ast.parse(entry.read_text(encoding="utf-8"))
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        names = [node.module or ""]
                    if any(n.split(".")[0] == "sqlite3" for n in names):
                        found.append(f"{dotted}.{entry.name.removesuffix('.py')}")
                        break
    return sorted(found)


def test_only_the_journal_module_talks_sql() -> None:
    assert _modules_importing_sqlite() == ["daq.journal"]
