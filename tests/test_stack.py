"""The whole stack under supervisord: every program runs and answers."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurestore import cli, priority
from featurestore import stack as stack_module
from featurestore.services import ManagedService
from featurestore.settings import Settings
from tests.helpers import run_cli, wait_until

pytestmark = pytest.mark.integration

PROGRAMS = {
    "redis",
    "kafka",
    "azurite",
    "duckdb-worker",
    "bridge",
    "beat",
    "model-sync",
    "grpc",
    "flower",
    "prometheus",
    "alertmanager",
    "redis-exporter",
}


def test_every_program_is_running(stack: Settings) -> None:
    states = {p.name: p.state for p in stack_module.programs(stack)}
    assert states == dict.fromkeys(PROGRAMS, "RUNNING")


def test_status_command_shows_programs_and_services(stack: Settings) -> None:
    result = run_cli(stack, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in PROGRAMS:
        assert f"\n{name} " in result.stdout
    assert stack.kafka_bootstrap in result.stdout
    assert f"{stack.kafka_version}" in result.stdout


def test_grpc_health_is_serving(stack: Settings) -> None:
    # SERVING once the server's first model sync, by the model-sync program, has finished.
    with grpc.insecure_channel(f"localhost:{stack.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        assert wait_until(serving, timeout=60)


@pytest.mark.parametrize(
    "port_field",
    [
        "metrics_port_worker",
        "metrics_port_bridge",
        "metrics_port_grpc",
        "metrics_port_grpc_extra",
        "metrics_port_beat",
        "metrics_port_model_sync",
    ],
)
def test_programs_expose_prometheus_metrics(stack: Settings, port_field: str) -> None:
    port = getattr(stack, port_field)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    assert "fstore_up{" in body


def test_flower_answers(stack: Settings) -> None:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{stack.flower_port}/metrics", timeout=30
    ) as reply:
        assert reply.status == 200
        assert "flower_" in reply.read().decode()


def test_batch_programs_run_below_serving(stack: Settings) -> None:
    # featurestore.priority: every thread and child of a batch program at batch_nice, the
    # gRPC group and Redis at the niceness supervisord has.
    assert stack.batch_nice > 0
    seen = {}
    for program in stack_module.programs(stack):
        service = program.name if program.name in cli.SERVICES else None
        command = "service" if service else program.name.removeprefix("duckdb-")
        expected = priority.program_nice(stack, command, service)
        root = psutil.Process(program.pid)
        for proc in [root, *root.children(recursive=True)]:
            for thread in proc.threads():
                assert os.getpriority(os.PRIO_PROCESS, thread.id) == expected, (
                    program.name,
                    proc.name(),
                )
        seen[program.name] = expected
    assert seen["duckdb-worker"] == seen["bridge"] == seen["kafka"] == stack.batch_nice
    assert seen["grpc"] == seen["redis"] == 0


def _session_nice(service: ManagedService) -> int:
    pid = int(service.pid_file.read_text())
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def test_detached_batch_services_run_below_serving_across_sessions(
    settings: Settings, kafka_service: ManagedService, redis_service: ManagedService
) -> None:
    # A service started in a session of its own (as tests and benchmarks start them) sits
    # in an autogroup of its own, which Linux weighs as one against supervisord's before
    # any thread's niceness counts: the session is lowered, Redis's is not.
    assert settings.batch_nice > 0
    assert _session_nice(kafka_service) == settings.batch_nice
    assert _session_nice(redis_service) == 0
