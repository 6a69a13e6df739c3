"""Dead letters are counted by source topic and a reason category, never the error's text
(real Kafka, the dead-letter topic of the test settings)."""

from __future__ import annotations

import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY

from bridge.dead_letters import DeadLetters
from bridge.inflight import Sent
from featurestore.services import ManagedService
from featurestore.settings import Settings
from tests.bridge.test_inflight import Result, batch

pytestmark = pytest.mark.integration


def dead_letters(topic: str, reason: str) -> float:
    labels = {"topic": topic, "reason": reason}
    return REGISTRY.get_sample_value("fstore_bridge_dead_letters_total", labels) or 0.0


def test_each_dead_letter_is_counted_under_its_category(
    settings: Settings, kafka_service: ManagedService
) -> None:
    topic = settings.features_topic
    invalid, failed = dead_letters(topic, "invalid_message"), dead_letters(topic, "write_failed")
    letters = DeadLetters(settings)
    try:
        bad = Message(topic=topic, partition=0, offset=5, value=b"not json")
        letters.message(bad, "malformed JSON: unexpected character at line 1 column 1")
        pending = batch(10, 12)  # three messages of one row each
        sent = Sent(pending.span, pending.encode(), 3, Result("task-1"), 0.0)
        letters.batch(sent, "write failed 5 times: OSError: disk full")
        letters.delivered()
    finally:
        letters.close()
    assert dead_letters(topic, "invalid_message") == invalid + 1
    assert dead_letters(topic, "write_failed") == failed + 3
    reasons = {
        s.labels["reason"]
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == "fstore_bridge_dead_letters_total"
    }
    assert reasons <= {"invalid_message", "write_failed"}
