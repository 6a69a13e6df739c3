"""The result listener's subscription in the log: quiet the first time (a CLI read printed
it on every run), at INFO again after a lost connection (against the real Redis)."""

from __future__ import annotations

import logging

import pytest
import redis

from featurestore.services import ManagedService
from featurestore.settings import Settings
from tasks.app import configure
from tasks.client.results import ResultListener
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

LOGGER = "tasks.client.results"


def _subscribed(caplog: pytest.LogCaptureFixture, prefix: str) -> list[int]:
    return [
        r.levelno
        for r in caplog.records
        if r.name == LOGGER and r.getMessage() == f"result_listener_subscribed prefix={prefix}"
    ]


def test_first_subscription_is_debug_and_a_resubscription_info(
    settings: Settings, redis_service: ManagedService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    listener = ResultListener(configure(settings), lambda _id, _meta: None, lambda: None)
    assert listener.wait_ready(30)
    assert wait_until(lambda: _subscribed(caplog, listener.prefix) == [logging.DEBUG])
    client = redis.Redis.from_url(settings.redis_url)
    try:
        # Only subscribers are cut; the listener reconnects after its backoff.
        assert client.client_kill_filter(_type="pubsub") >= 1
    finally:
        client.close()
    assert wait_until(
        lambda: _subscribed(caplog, listener.prefix) == [logging.DEBUG, logging.INFO],
        timeout=30,
    )
    assert listener.wait_ready(30)
