"""``daq init``: the starter bench validates as written; a non-empty folder needs --force."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq.cli.install_cmds import unit_text, write_starter
from daq.config.loader import load_bench
from daq.errors import ConfigError


def test_the_starter_validates_as_written_with_its_own_id(tmp_path: Path) -> None:
    written = write_starter(tmp_path / "bench-3", bench_id="bench-3")
    assert {p.name for p in written} == {"bench.yaml", "README.md", "sim_cycler.yaml", "demo_nmc_14s.yaml"}
    loaded = load_bench(tmp_path / "bench-3" / "bench.yaml")
    assert loaded.config.bench.id == "bench-3"
    assert loaded.journal_path == Path("journal/bench-3.sqlite")
    assert loaded.limits is not None and set(loaded.regmaps) == {"cycler-1"}


def test_a_non_empty_folder_is_refused_unless_forced_and_then_only_starter_files_change(tmp_path: Path) -> None:
    target = tmp_path / "bench"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError) as err:
        write_starter(target, bench_id="b1")
    assert "not empty" in err.value.problems[0] and "--force" in err.value.problems[0]
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    (target / "bench.yaml").write_text("old")
    write_starter(target, bench_id="b1", force=True)
    assert (target / "notes.txt").read_text() == "keep me"
    assert "id: b1" in (target / "bench.yaml").read_text()


def test_a_file_or_a_bad_bench_id_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        write_starter(tmp_path / "file", bench_id="b1")
    with pytest.raises(ConfigError, match="bench id 'two words'"):
        write_starter(tmp_path / "new", bench_id="two words")
    assert not (tmp_path / "new").exists()


def test_the_unit_runs_the_given_daq_for_the_instance_bench() -> None:
    text = unit_text("/srv/venv/bin/daq")
    assert "ExecStart=/srv/venv/bin/daq run /etc/daq/%i/bench.yaml" in text
    assert "Restart=on-failure" in text and "Type=notify" in text and "KillSignal=SIGTERM" in text
