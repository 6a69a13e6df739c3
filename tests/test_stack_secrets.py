"""The running stack keeps its secrets: Flower asks for them, every port listens on loopback,
and no log, no `fstore status` and no task Flower shows carries a password."""

from __future__ import annotations

import base64
import ipaddress
import json
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from featurestore import constants, credentials
from featurestore.settings import Settings
from tasks.app import configure
from tests.helpers import run_cli, wait_until

pytestmark = pytest.mark.integration


def _get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    """Status and body of a GET, with basic auth when given."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as error:
        return int(error.code), b""
    except urllib.error.URLError:
        return 0, b""  # not listening yet


def _secrets(stack: Settings) -> list[str]:
    """Every secret of this stack: the generated files and the passwords in the settings."""
    values = {
        path.read_text().strip()
        for path in credentials.secrets_dir(stack.state_dir).iterdir()
        if path.is_file()
    }
    assert stack.redis_password is not None
    values.add(stack.redis_password.get_secret_value())
    values.add(stack.flower_basic_auth().partition(":")[2])
    assert all(len(value) >= 16 for value in values)
    return sorted(values)


def test_flower_asks_for_its_password(stack: Settings) -> None:
    base = f"http://127.0.0.1:{stack.flower_port}"
    # Its program counts as running before it listens.
    assert wait_until(lambda: _get(base + "/healthcheck")[0] == 200, timeout=60)
    for path in ("/", "/api/workers", "/api/tasks"):
        assert _get(base + path)[0] == 401, path
        assert _get(base + path, "fstore:wrong-password")[0] == 401, path
        assert _get(base + path, stack.flower_basic_auth())[0] == 200, path
    # Prometheus scrapes /metrics without a password (it serves no task data).
    assert _get(base + "/metrics")[0] == 200


def test_every_port_of_the_stack_listens_on_loopback_only(stack: Settings) -> None:
    ports = {
        stack.metrics_port_worker,
        stack.metrics_port_bridge,
        *stack.metrics_ports_grpc,
        stack.metrics_port_beat,
        stack.metrics_port_model_sync,
        stack.flower_port,
        stack.prometheus_port,
        stack.alertmanager_port,
        stack.redis_exporter_port,
        stack.kafka_jmx_exporter_port,
    }
    listening: dict[int, set[str]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            listening.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    assert set(listening) == ports
    for port, addresses in listening.items():
        assert all(_loopback(address) for address in addresses), (port, addresses)


def test_no_log_status_or_task_shows_a_secret(stack: Settings) -> None:
    secrets = _secrets(stack)
    # Tasks for Flower to show, and the worker's banner written (by the time it answers).
    app = configure(stack)
    assert app.send_task(constants.TASK_PING).get(timeout=120)["pid"] > 0
    status = run_cli(stack, "status")
    assert "redis" in status.stdout
    flower = f"http://127.0.0.1:{stack.flower_port}/api/tasks?limit=100000"

    def flower_saw_the_ping() -> bool:
        code, body = _get(flower, stack.flower_basic_auth())
        return code == 200 and constants.TASK_PING in body.decode()

    assert wait_until(flower_saw_the_ping, timeout=60)
    tasks = _get(flower, stack.flower_basic_auth())[1].decode()
    logs = [p for p in stack.state_dir.rglob("*") if p.is_file() and _is_log(p, stack)]
    worker_log = (stack.logs_dir / "duckdb-worker.log").read_text(errors="replace")
    # Celery's banner names the broker, with the password masked.
    assert "transport:" in worker_log and "redis://:**@" in worker_log
    assert len(logs) >= 10
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts.update(status=status.stdout + status.stderr, flower_tasks=tasks)
    found = [
        (where, secret[:4] + "...")
        for where, text in texts.items()
        for secret in secrets
        if secret in text
    ]
    assert found == []
    assert json.loads(tasks)


def _loopback(address: str) -> bool:
    """127.0.0.1, ::1, or 127.0.0.1 as an IPv6 socket shows it (Java's listeners)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _is_log(path: Path, stack: Settings) -> bool:
    """A program's log: anything under logs/, and any *.log or *.out elsewhere in the state."""
    return path.is_relative_to(stack.logs_dir) or path.suffix in (".log", ".out")
