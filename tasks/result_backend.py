"""Celery's Redis result backend, storing read results without reading first.

Before it stores a result, Celery's key-value backend reads the one already stored and keeps
a success there, so that a lost task run again cannot overwrite it. A read that runs again
gives an equally valid result (or fails, and its caller has long had the first result), and
the guard costs one more Redis round trip on every read's path (a noticeable share of a
read at concurrency 1: README, Benchmarks), so reads skip it. Every other task keeps it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend

from featurestore import constants
from featurestore.errors import ConfigError

# Tasks whose result is stored without looking at the stored one.
REPEATABLE_TASKS = frozenset({constants.TASK_READ_MANY})


def backend_url(redis_url: str) -> str:
    """The `result_backend` setting for this backend on the given Redis."""
    if urlsplit(redis_url).scheme not in ("redis", "rediss"):
        raise ConfigError(f"the Redis URL must start with redis:// or rediss://: {redis_url!r}")
    return f"{__name__}:ResultBackend+{redis_url}"


class ResultBackend(RedisBackend):  # type: ignore[misc]  # celery has no type hints
    """The Redis result backend; read results are stored in one round trip."""

    def _store_result(
        self,
        task_id: str | bytes,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if getattr(request, "task", None) not in REPEATABLE_TASKS:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:  # as Celery's own: with the state and task id
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result
