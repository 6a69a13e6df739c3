"""A broker started by the project's own start-up with FSTORE_KAFKA_SECURITY asking for
SASL_PLAINTEXT and PLAIN: clients without the credentials, or with a wrong password, are
refused; the stack's own clients, given the settings, produce and consume. It runs on its
own ports (the session's offset + 50), beside the session's plaintext broker."""

from __future__ import annotations

import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from featurestore.errors import ConfigError
from featurestore.ingest.sources import Message
from featurestore.services import KafkaService
from featurestore.services.kafka_security import local_sasl_user
from featurestore.settings import Settings
from tests.conftest import PORT_OFFSET, make_settings, require_tools

pytestmark = pytest.mark.integration

PASSWORD = "sasl-pass-4c1e9b"
SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "fstore",
    "sasl.password": PASSWORD,
}
# Apart from the session's services: last two digits (42, 43, 97) no test base ends with.
DELTA = 50


@pytest.fixture(scope="module")
def sasl_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    offset = PORT_OFFSET + DELTA
    return make_settings(
        tmp_path_factory.mktemp("sasl-state"),
        kafka_bootstrap=f"localhost:{29092 + offset}",
        kafka_controller_port=29093 + offset,
        kafka_jmx_exporter_port=29147 + offset,
        kafka_security=SASL,
    )


@pytest.fixture(scope="module")
def sasl_broker(sasl_settings: Settings) -> Iterator[KafkaService]:
    require_tools("java", "mvn")
    service = KafkaService(sasl_settings)
    status = service.ensure()
    assert status.started and status.reachable
    try:
        yield service
    finally:
        service.stop()


def test_a_client_without_credentials_is_refused(
    sasl_broker: KafkaService, sasl_settings: Settings
) -> None:
    admin = AdminClient({"bootstrap.servers": sasl_settings.kafka_bootstrap})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    producer = Producer(
        {"bootstrap.servers": sasl_settings.kafka_bootstrap, "message.timeout.ms": 3000}
    )
    failures: list[KafkaError | None] = []
    producer.produce(
        sasl_settings.features_topic, b"x", on_delivery=lambda err, _m: failures.append(err)
    )
    producer.flush(10)
    assert failures and failures[0] is not None, "a message got in without credentials"


def test_a_wrong_password_is_an_authentication_error(
    sasl_broker: KafkaService, sasl_settings: Settings
) -> None:
    wrong = {**sasl_settings.kafka_client_config(), "sasl.password": "not-the-password"}
    seen: list[KafkaError] = []
    config: dict[str, Any] = {**wrong, "error_cb": seen.append}
    admin = AdminClient(config)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        admin.poll(0.2)
    assert any(err.code() == KafkaError._AUTHENTICATION for err in seen), seen


def test_the_stacks_clients_produce_and_consume_with_the_settings(
    sasl_broker: KafkaService, sasl_settings: Settings
) -> None:
    from bridge.publisher import KafkaEventPublisher

    topic = sasl_settings.features_topic
    assert topic in AdminClient(sasl_settings.kafka_client_config()).list_topics(timeout=10).topics
    payload = uuid.uuid4().hex.encode()
    publisher = KafkaEventPublisher(sasl_settings)
    publisher.publish([Message(payload=payload, rows=1)], timeout_s=30)
    consumer = Consumer(
        {
            **sasl_settings.kafka_client_config(),
            "group.id": f"sasl-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[bytes | None] = []
    deadline = time.monotonic() + 30
    try:
        while payload not in seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
    finally:
        consumer.close()
    assert payload in seen


def test_the_password_is_kept_from_the_log_and_other_users(
    sasl_broker: KafkaService, sasl_settings: Settings
) -> None:
    config = sasl_broker.data / "server.properties"
    assert PASSWORD in config.read_text()  # the broker's own login needs it
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    log = Path(sasl_broker.log_file).read_text(errors="replace")
    assert "sasl.enabled.mechanisms = [PLAIN]" in log  # the broker did log its config
    assert PASSWORD not in log


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"security.protocol": "SASL_SSL"}, "SASL_SSL with mechanism PLAIN"),
        ({"sasl.mechanism": "SCRAM-SHA-256"}, "SASL_PLAINTEXT with mechanism SCRAM-SHA-256"),
        ({"sasl.password": 'pa"ss'}, "without quotes"),
        ({"sasl.username": ""}, "needs sasl.username and sasl.password"),
    ],
)
def test_what_the_local_broker_cannot_speak_is_refused_by_name(
    tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    settings = Settings(state_dir=tmp_path, kafka_security={**SASL, **changes})
    with pytest.raises(ConfigError, match=message):
        local_sasl_user(settings)


def test_plaintext_by_default(tmp_path: Path) -> None:
    assert local_sasl_user(Settings(state_dir=tmp_path)) is None
