"""A group of gRPC server processes on one port (grpc_server/processes.py), run as
supervisord runs it (`fstore grpc`), called through real channels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore.services.base import ManagedService
from featurestore.services.prometheus import render_config, write_rules
from featurestore.settings import Settings
from grpc_server.processes import PortTakenError, lock_port
from tests.conftest import make_settings
from tests.helpers import wait_until
from tests.test_prometheus_config import promtool

SHIFT = 11  # ports of this module's groups: the session's plus this


def group_settings(settings: Settings, processes: int) -> Settings:
    """The session's settings on ports of this module, with `processes` gRPC processes."""
    return settings.model_copy(
        update={
            "grpc_processes": processes,
            "grpc_port": settings.grpc_port + SHIFT,
            "metrics_port_grpc": settings.metrics_port_grpc + SHIFT,
            "metrics_port_grpc_extra": settings.metrics_port_grpc_extra + SHIFT,
        }
    )


def start(settings: Settings) -> subprocess.Popen[str]:
    """`fstore grpc` with these settings, in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "grpc"],
        env={**os.environ, **settings.to_env(), "FSTORE_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM the group and return its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return out


def answers(port: int) -> bool:
    """A health Check through a fresh connection comes back (SERVING or not: this test
    has no model-sync worker, so the group stays NOT_SERVING)."""
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return True


def listening(pid: int, port: int) -> bool:
    """Whether the process has a listening socket on the port."""
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)


def alive(process: psutil.Process) -> bool:
    """Running, and not a zombie left for an init that does not reap."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def metrics_up(port: int) -> bool:
    """The process's /metrics answers with fstore_up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return "fstore_up{" in reply.read().decode()
    except OSError:
        return False


@pytest.fixture
def group(settings: Settings, redis_service: ManagedService) -> Iterator[tuple[Settings, int]]:
    """A running group of two processes; its settings and the parent's pid."""
    two = group_settings(settings, 2)
    parent = start(two)
    try:

        def ready() -> bool:
            children = psutil.Process(parent.pid).children()
            serving = len(children) == 2 and all(listening(c.pid, two.grpc_port) for c in children)
            return serving or parent.poll() is not None

        assert wait_until(ready, timeout=60)
        assert parent.poll() is None, parent.communicate()[0]
        yield two, parent.pid
    finally:
        stop(parent)


def test_two_processes_serve_the_port(group: tuple[Settings, int]) -> None:
    settings, parent = group
    children = [c.pid for c in psutil.Process(parent).children()]
    assert len(children) == 2
    # Each process has its own metrics port, as the generated Prometheus config scrapes.
    assert all(metrics_up(port) for port in settings.metrics_ports_grpc)
    # Fresh connections are spread over both processes by the kernel: 20 connections all
    # on one would happen once in 2**19 runs.
    # (A local subchannel pool each: channels to one target share a connection otherwise.)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.insecure_channel(f"localhost:{settings.grpc_port}", options=options) for _ in range(20)
    ]
    try:
        for channel in channels:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        holding = {
            pid
            for pid in children
            for s in psutil.Process(pid).net_connections(kind="tcp")
            if s.status == psutil.CONN_ESTABLISHED and s.laddr.port == settings.grpc_port
        }
        assert holding == set(children)
    finally:
        for channel in channels:
            channel.close()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_server_fails_while_the_group_lives(
    group: tuple[Settings, int], processes: int
) -> None:
    settings, _parent = group
    # Metrics ports of its own, so that it gets as far as the gRPC port.
    second = start(
        settings.model_copy(
            update={
                "grpc_processes": processes,
                "metrics_port_grpc": settings.metrics_port_grpc + 50,
                "metrics_port_grpc_extra": settings.metrics_port_grpc_extra + 50,
            }
        )
    )
    assert second.wait(timeout=60) != 0
    out = stop(second)
    assert f"port {settings.grpc_port}" in out or "Failed to bind" in out, out
    assert answers(settings.grpc_port)


def test_the_port_lock_refuses_a_new_group_while_any_holder_lives(
    settings: Settings, redis_service: ManagedService
) -> None:
    # A stale child of an old group holds the inherited lock: here this test process does.
    two = group_settings(settings, 2)
    held = lock_port(two)
    try:
        with pytest.raises(PortTakenError, match=f"port {two.grpc_port} is held"):
            lock_port(two)
        process = start(two)
        assert process.wait(timeout=60) != 0
        assert "is held by a running server group" in stop(process)
        assert not answers(two.grpc_port)
    finally:
        held.close()


def test_killing_the_parent_leaves_no_child_serving(
    settings: Settings, redis_service: ManagedService
) -> None:
    two = group_settings(settings, 2)
    parent = start(two)
    try:
        assert wait_until(lambda: answers(two.grpc_port), timeout=60)
        children = psutil.Process(parent.pid).children()
        assert len(children) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert wait_until(lambda: not any(alive(c) for c in children), timeout=60)
        assert not answers(two.grpc_port)
    finally:
        stop(parent)
    # The lock went with the last of them: a new group starts.
    again = start(two)
    try:
        assert wait_until(lambda: answers(two.grpc_port), timeout=60)
    finally:
        stop(again)


def test_a_child_that_dies_stops_the_group(
    settings: Settings, redis_service: ManagedService
) -> None:
    two = group_settings(settings, 2)
    parent = start(two)
    try:
        assert wait_until(lambda: answers(two.grpc_port), timeout=60)
        children = psutil.Process(parent.pid).children()
        children[0].kill()
        # supervisord restarts the group: the parent exits non-zero and takes the rest along.
        assert parent.wait(timeout=60) != 0
        assert wait_until(lambda: not alive(children[1]), timeout=60)
    finally:
        out = stop(parent)
    assert "grpc_process_exited" in out


def test_prometheus_scrapes_each_process(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, grpc_processes=3)
    config = render_config(settings, tmp_path / "rules")
    write_rules(settings, tmp_path / "rules")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "grpc"]
    assert [(c["targets"], c["labels"]["process"]) for c in job["static_configs"]] == [
        ([f"127.0.0.1:{port}"], str(index))
        for index, port in enumerate(settings.metrics_ports_grpc)
    ]
    assert len(set(settings.metrics_ports_grpc)) == 3
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert "SUCCESS" in promtool("check", "config", str(tmp_path / "prometheus.yml"))
