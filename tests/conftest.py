"""Test session: real Redis, Kafka and Azurite on test ports, started by the project's own
start-up functions and stopped at the end if this session started them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestore.logs import setup_logging
from featurestore.services import AzuriteService, KafkaService, ManagedService, RedisService
from featurestore.settings import AZURITE_ACCOUNT, AZURITE_KEY, Settings

PROJECT = Path(__file__).resolve().parents[1]
ON_CI = bool(os.environ.get("CI"))
# Lets two test sessions (say, a local run beside a CI run) use disjoint ports.
PORT_OFFSET = int(os.environ.get("FSTORE_TEST_PORT_OFFSET", "0"))


def require_tools(*names: str) -> None:
    """Skip when a tool is missing locally; on CI a missing tool is a failure."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"missing tools: {', '.join(missing)} (run `make setup`)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for the test stack: its own state folder and ports, the shared tool cache."""
    values: dict[str, object] = {
        "state_dir": state_dir,
        "tools_path": PROJECT / ".state" / "tools",
        "kafka_bootstrap": f"localhost:{29092 + PORT_OFFSET}",
        "kafka_controller_port": 29093 + PORT_OFFSET,
        "redis_url": f"redis://localhost:{26379 + PORT_OFFSET}/0",
        "azure_connection_string": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{20000 + PORT_OFFSET}/{AZURITE_ACCOUNT};"
        ),
        "grpc_port": 50551 + PORT_OFFSET,
        "flower_port": 25555 + PORT_OFFSET,
        "metrics_port_worker": 29101 + PORT_OFFSET,
        "metrics_port_bridge": 29102 + PORT_OFFSET,
        "metrics_port_grpc": 29103 + PORT_OFFSET,
        "metrics_port_grpc_extra": 29106 + PORT_OFFSET,
        "metrics_port_beat": 29104 + PORT_OFFSET,
        "metrics_port_model_sync": 29105 + PORT_OFFSET,
        "prometheus_port": 29090 + PORT_OFFSET,
        "alertmanager_port": 29094 + PORT_OFFSET,
        "redis_exporter_port": 29121 + PORT_OFFSET,
        # Offsets are multiples of 100: no two bases may share their last two digits.
        "kafka_jmx_exporter_port": 29147 + PORT_OFFSET,
        "prometheus_scrape_interval_s": 1.0,
        "consumer_group": "featurestore-test",
        # Fault tests lose write tasks on purpose; resend them soon.
        "batch_resend_after_s": 15.0,
        # Not the default, so that tests/test_stack.py sees each program's niceness applied.
        "batch_nice": 4,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's settings."""
    setup_logging("INFO")
    return make_settings(tmp_path_factory.mktemp("state"))


def _session_service(service: ManagedService) -> Iterator[ManagedService]:
    status = service.ensure()
    yield service
    if status.started:
        service.stop()


@pytest.fixture(scope="session")
def redis_service(settings: Settings) -> Iterator[ManagedService]:
    """Redis on the test port."""
    require_tools("redis-server")
    yield from _session_service(RedisService(settings))


@pytest.fixture(scope="session")
def kafka_service(settings: Settings) -> Iterator[ManagedService]:
    """A Kafka broker on the test port, with the topics created."""
    require_tools("java", "mvn")
    yield from _session_service(KafkaService(settings))


@pytest.fixture(scope="session")
def azurite_service(settings: Settings) -> Iterator[ManagedService]:
    """Azurite on the test port, with the container created."""
    require_tools("node", "npm")
    yield from _session_service(AzuriteService(settings))


@pytest.fixture(scope="session")
def stack(
    settings: Settings,
    redis_service: ManagedService,
    kafka_service: ManagedService,
    azurite_service: ManagedService,
) -> Iterator[Settings]:
    """The whole stack under supervisord, on the session's services and state folder."""
    from featurestore import stack as stack_module

    stack_module.up(settings, timeout=300)
    yield settings
    stack_module.down(settings)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that need the whole stack last: earlier tests kill and restart the
    backing services, which the stack's supervisord programs would otherwise race for."""
    items.sort(key=lambda item: "stack" in getattr(item, "fixturenames", ()))
