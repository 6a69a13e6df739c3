"""The whole stack under supervisord: up, down, status."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from featurestore.errors import ConfigError, ServiceStartError
from featurestore.logs import quoted
from featurestore.services import (
    AlertmanagerService,
    ManagedService,
    PrometheusService,
    RedisExporterService,
    ServiceStatus,
    all_services,
)
from featurestore.services._proc import read_pid
from featurestore.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ProgramStatus:
    """One supervisord program: name, state, pid and how long it has run."""

    name: str
    state: str
    pid: int
    description: str


def _conf() -> Path:
    conf = PROJECT_ROOT / "supervisord.conf"
    if not conf.exists():
        raise ConfigError(f"supervisord.conf not found at {conf}: run from a project checkout")
    return conf


def _socket(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.sock"


def _rpc(settings: Settings) -> Any:
    transport = SupervisorTransport(None, None, f"unix://{_socket(settings)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def supervisord_pid(settings: Settings) -> int | None:
    """Pid of this project's supervisord, when it runs."""
    return read_pid(settings.run_dir / "supervisord.pid")


def programs(settings: Settings) -> list[ProgramStatus]:
    """State of every supervisord program (empty when supervisord is not running)."""
    if supervisord_pid(settings) is None:
        return []
    return [
        ProgramStatus(p["name"], p["statename"], p["pid"], p["description"])
        for p in _rpc(settings).getAllProcessInfo()
    ]


def stop_program(settings: Settings, name: str) -> None:
    """Stop one supervisord program (it stays stopped until started again)."""
    _rpc(settings).stopProcess(name)


def start_program(settings: Settings, name: str) -> None:
    """Start one stopped supervisord program and wait until it runs."""
    _rpc(settings).startProcess(name)


def up(settings: Settings, timeout: float = 300.0) -> list[ProgramStatus]:
    """Start supervisord (or every stopped program) and wait until all are RUNNING."""
    settings.ensure_dirs()
    env = {
        **os.environ,
        **settings.to_env(),
        "FSTORE_STATE_DIR": str(settings.state_dir.resolve()),
        "FSTORE_PYTHON": sys.executable,
    }
    if supervisord_pid(settings) is None:
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(_conf())],
            env=env,
            check=True,
        )
        log.info("supervisord_started conf=%s", quoted(_conf()))
    else:
        _wait_for_socket(settings, 10)
        _rpc(settings).startAllProcesses(True)
    _wait_for_socket(settings, 30)
    deadline = time.monotonic() + timeout
    while True:
        states = programs(settings)
        waiting = [p for p in states if p.state != "RUNNING"]
        if states and not waiting:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"{p.name}={p.state}" for p in waiting)
            raise ServiceStartError(
                f"programs not RUNNING after {timeout:.0f}s: {names}; logs in {settings.logs_dir}"
            )
        time.sleep(1.0)
    for service in watched_services(settings):
        _wait_answering(service.probe, service.name, deadline, settings)
    return programs(settings)


def _wait_for_socket(settings: Settings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _socket(settings).exists():
        if time.monotonic() > deadline:
            raise ServiceStartError(
                f"supervisord did not open {_socket(settings)}; see "
                f"{settings.logs_dir / 'supervisord.log'}"
            )
        time.sleep(0.2)


def _wait_answering(probe: Any, name: str, deadline: float, settings: Settings) -> None:
    while probe() is None:
        if time.monotonic() > deadline:
            raise ServiceStartError(f"{name} does not answer; see {settings.logs_dir}/{name}.log")
        time.sleep(1.0)


def watched_services(settings: Settings) -> list[ManagedService]:
    """Backing services, exporters, Prometheus and Alertmanager: what `up` waits for and
    `status` shows."""
    return [
        *all_services(settings),
        RedisExporterService(settings),
        AlertmanagerService(settings),
        PrometheusService(settings),
    ]


def down(settings: Settings) -> None:
    """Stop every program and supervisord, then any service a start-up function left running."""
    pid = supervisord_pid(settings)
    if pid is not None:
        _rpc(settings).shutdown()
        deadline = time.monotonic() + 180
        while read_pid(settings.run_dir / "supervisord.pid") and time.monotonic() < deadline:
            time.sleep(0.5)
        log.info("supervisord_stopped pid=%d", pid)
    for service in watched_services(settings):
        service.stop()


def service_statuses(settings: Settings) -> list[ServiceStatus]:
    """Reachability, address and version of every backing service (starts nothing)."""
    return [service.status() for service in watched_services(settings)]
