"""The console script turns a Ctrl-C during loading into exit 130 and one line, not a traceback."""

from __future__ import annotations

import importlib.abc
import sys

import pytest

from daq.cli import entry


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """Plays the user's Ctrl-C arriving while ``daq.cli.main`` is being imported."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name == "daq.cli.main":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_loading(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delitem(sys.modules, "daq.cli.main", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert entry.run() == entry.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"


def test_the_console_script_runs_the_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["daq", "validate", "/nonexistent/bench.yaml"])
    assert entry.run() == 2
    assert capsys.readouterr().err.startswith("error: /nonexistent/bench.yaml: bench file not found")
