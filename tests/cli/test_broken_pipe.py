"""Output read by a pipe that closes early (`fstore query ... | head`) ends the command
quietly, as Unix tools end, instead of with a BrokenPipeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_settings


def test_a_reader_gone_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # nothing answers there: status prints at once
    proc = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "status"],
        env={**os.environ, **settings.to_env(), "FSTORE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader has gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141  # as a shell reports a tool ended by SIGPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
