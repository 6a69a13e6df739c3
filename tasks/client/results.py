"""Results of this process's read tasks, taken from the Redis result backend.

Celery's own wait (AsyncResult.get) subscribes to each task's channel before sending it,
reads the stored result once more, and unsubscribes afterwards: three Redis round trips and
about half a millisecond of client time per read. Here the task ids of a process share one
prefix, so one pattern subscription, made once, receives every result the worker publishes
for them; results stay stored by Celery's Redis backend, in its format.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, states

from featurestore import metrics

log = logging.getLogger(__name__)

OnResult = Callable[[str, dict[str, Any]], None]
OnSubscribed = Callable[[], None]


class ResultListener:
    """A thread that hands every result of this process's tasks to `on_result`."""

    def __init__(self, app: Celery, on_result: OnResult, on_subscribed: OnSubscribed) -> None:
        self.app = app
        self.prefix = f"fstore-{uuid.uuid4().hex}-"
        self._on_result = on_result
        self._on_subscribed = on_subscribed
        self._ids = iter(range(1, 1 << 62))
        self._id_lock = threading.Lock()
        # The channel Celery's Redis backend publishes a task's result on, for this prefix.
        self._pattern = app.backend.get_key_for_task(f"{self.prefix}*").decode()
        self._ready = threading.Event()
        self._backoff = 0.1
        self._subscribed_before = False
        self._thread = threading.Thread(target=self._run, name="read-results", daemon=True)
        self._thread.start()

    def new_task_id(self) -> str:
        """A task id whose result this listener receives."""
        with self._id_lock:
            return f"{self.prefix}{next(self._ids)}"

    def ready(self) -> bool:
        """Whether the subscription is in place now."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the subscription is in place (results sent before it would be missed)."""
        return self._ready.wait(timeout)

    def fetch(self, task_id: str) -> dict[str, Any] | None:
        """The stored result of a task, if any (for results published while disconnected)."""
        meta: dict[str, Any] = self.app.backend.get_task_meta(task_id)
        return meta if meta.get("status") in states.READY_STATES else None

    def _run(self) -> None:
        while True:
            # A connection that died silently (no FIN) is found by the periodic PING.
            client = redis.Redis.from_url(
                self.app.backend.url, health_check_interval=15, socket_keepalive=True
            )
            try:
                self._listen(client)
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any error
                self._ready.clear()
                metrics.FAILURES.labels("reader", "result_listener").inc()
                log.warning(
                    "result_listener_disconnected error=%s retry_s=%.1f",
                    type(exc).__name__,
                    self._backoff,
                )
                time.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 5.0)
            finally:
                client.close()

    def _listen(self, client: redis.Redis) -> None:
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.psubscribe(self._pattern)
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "psubscribe":
                # The first subscription is routine (every `fstore query` printed it); one
                # after a lost connection is news, beside the warning that told the loss.
                level = logging.INFO if self._subscribed_before else logging.DEBUG
                log.log(level, "result_listener_subscribed prefix=%s", self.prefix)
                self._subscribed_before = True
                self._backoff = 0.1
                # Results published while this process was not subscribed are only stored.
                self._on_subscribed()
                self._ready.set()
            elif message["type"] == "pmessage":
                self._deliver(message["data"])

    def _deliver(self, payload: bytes) -> None:
        try:
            meta = self.app.backend.decode_result(payload)
            if meta.get("status") in states.READY_STATES:
                self._on_result(meta["task_id"], meta)
        except Exception:  # one bad result must not stop the others; its callers time out
            metrics.FAILURES.labels("reader", "result_decode").inc()
            log.exception("result_listener_bad_result bytes=%d", len(payload))
