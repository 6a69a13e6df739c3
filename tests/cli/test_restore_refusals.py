"""`fstore restore` refuses while anything may use the database (no services needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurestore.cli import main
from featurestore.store import backup
from featurestore.store.database import Store
from tests.conftest import make_settings


def a_backup(tmp_path: Path) -> Path:
    store = Store(tmp_path / "source" / "features.duckdb")
    try:
        backup.take(store, tmp_path / "b", {}, lambda _d, _t: None, state_dir=tmp_path / "source")
    finally:
        store.close()
    return tmp_path / "b"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings = make_settings(tmp_path / "state")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    settings.ensure_dirs()
    return settings.state_dir


def test_restore_refuses_while_supervisord_runs(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = a_backup(tmp_path)
    # A live pid in the pid file is what `fstore status` and `fstore up` take for a stack.
    (state / "run" / "supervisord.pid").write_text(f"{os.getpid()}\n")
    assert main(["restore", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"the stack is running (supervisord pid {os.getpid()})" in err
    assert "fstore down" in err
    assert not (state / "data" / "features.duckdb").exists()


def test_restore_refuses_while_another_process_has_the_database_open(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = a_backup(tmp_path)
    target = state / "data" / "features.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(target),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert main(["restore", str(folder)]) == 2
    finally:
        holder.communicate("", timeout=30)
    assert "is open in another process" in capsys.readouterr().err
    assert not list(target.parent.glob("*.before-restore-*"))


def test_restore_refuses_a_folder_that_is_not_a_backup(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["restore", str(tmp_path)]) == 2
    assert "not a backup (no manifest.json)" in capsys.readouterr().err
