"""A benchmark's stack does not outlive it: SIGTERM and Ctrl-C stop it, and the stack of a
benchmark killed with SIGKILL is stopped by the next benchmark that starts one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from featurestore import stack
from featurestore.services import ManagedService
from featurestore.services._proc import pid_alive
from featurestore.settings import Settings
from tests.conftest import PROJECT

pytestmark = pytest.mark.integration

# Runs a stack the way every benchmark does (bench.common.running_stack) until stopped.
BENCH = """
import time
from bench.common import running_stack
from featurestore.settings import Settings
with running_stack(Settings()):
    print("ready", flush=True)
    time.sleep(3600)
"""
# Program ports of its own (+50 from the session's, which no other session's offset hits);
# the backing services are the session's, so only this stack's own processes are at stake.
SHIFT = 50


def bench_like(settings: Settings, folder: Path) -> Settings:
    """Settings of a benchmark stack on the session's services, its own folders and ports."""
    ports = [
        "grpc_port",
        "flower_port",
        "metrics_port_worker",
        "metrics_port_bridge",
        "metrics_port_grpc",
        "metrics_port_grpc_extra",
        "metrics_port_beat",
        "metrics_port_model_sync",
        "prometheus_port",
        "alertmanager_port",
        "redis_exporter_port",
    ]
    update: dict[str, object] = {name: getattr(settings, name) + SHIFT for name in ports}
    # The markers live beside the tool folder: this test's own, not the real benchmarks'.
    update |= {"state_dir": folder / "state", "tools_path": folder.parent / "tools"}
    return settings.model_copy(update=update)


def start(settings: Settings, folder: Path) -> subprocess.Popen[str]:
    """A benchmark process that has its stack running."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", BENCH],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **settings.to_env(), "FSTORE_LOG_LEVEL": "WARNING"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the stack is up when it prints (or exits)
    assert line.strip() == "ready", f"the benchmark stack did not start (exit {proc.poll()})"
    return proc


def stack_pids(settings: Settings) -> set[int]:
    """supervisord, every program and their children."""
    supervisor = stack.supervisord_pid(settings)
    assert supervisor is not None
    pids = {supervisor}
    for program in stack.programs(settings):
        assert program.state == "RUNNING", program
        pids.add(program.pid)
        pids |= {child.pid for child in psutil.Process(program.pid).children(recursive=True)}
    return pids


def alive(pids: set[int]) -> set[int]:
    """Those of pids still running."""
    return {pid for pid in pids if pid_alive(pid)}


def test_sigkill_leaves_a_stack_the_next_run_stops_and_sigterm_leaves_none(
    settings: Settings,
    redis_service: ManagedService,
    kafka_service: ManagedService,
    azurite_service: ManagedService,
    tmp_path: Path,
) -> None:
    # SIGKILL: the stack stays, with its marker naming the dead benchmark ...
    killed = bench_like(settings, tmp_path / "killed")
    proc = start(killed, tmp_path / "killed")
    stale = stack_pids(killed)
    proc.kill()
    proc.wait(timeout=30)
    assert alive(stale) == stale
    markers = list(tmp_path.glob("bench-stacks/*.json"))
    assert [json.loads(m.read_text())["pid"] for m in markers] == [proc.pid]

    # ... until the next benchmark starts: it stops that stack first (same ports), then
    # runs its own.
    second = bench_like(settings, tmp_path / "second")
    proc = start(second, tmp_path / "second")
    assert alive(stale) == set()
    assert stack.supervisord_pid(killed) is None
    own = stack_pids(second)

    # SIGTERM (Ctrl-C takes the same path): the benchmark stops its stack before it exits.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM
    assert alive(own) == set()
    assert stack.supervisord_pid(second) is None
    assert list(tmp_path.glob("bench-stacks/*.json")) == []
    # The session's services were not these stacks' to stop.
    assert redis_service.probe() is not None
    assert kafka_service.probe() is not None
