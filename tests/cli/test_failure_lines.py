"""A failing command typed by a person says so in one plain line on stderr."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from featurestore.cli import PROGRAM_COMMANDS, main


def test_a_persons_command_fails_with_one_plain_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FSTORE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FSTORE_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        # Refused before any connection: the --set pair has no value.
        code = main(["predict", "m", "a", "--set", "age_years"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 2
    # A timestamped "level=ERROR ... command_failed" line repeated it above.
    assert capsys.readouterr().err.splitlines() == [
        "fstore predict: --set 'age_years': expected name=value"
    ]


def test_the_programs_are_the_commands_supervisord_runs() -> None:
    conf = (Path(__file__).resolve().parents[2] / "supervisord.conf").read_text()
    run = {
        line.split("featurestore.cli ", 1)[1].split()[0]
        for line in conf.splitlines()
        if line.startswith("command=") and "featurestore.cli " in line
    }
    assert run == PROGRAM_COMMANDS
