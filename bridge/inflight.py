"""Write tasks sent but not yet committed: in-order completion, resend, commit positions."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery
from celery.result import AsyncResult

from bridge.batcher import FEATURES, BatchKind, PendingBatch
from featurestore import metrics
from featurestore.logs import quoted
from featurestore.store.database import OffsetSpan

log = logging.getLogger(__name__)


@dataclass
class Sent:
    """One write task: what it covers, its payload (for a resend) and its result."""

    span: OffsetSpan
    payload: bytes
    rows: int
    result: AsyncResult
    sent_at: float
    done: bool = False
    retry_at: float | None = None
    failures: int = 0
    kind: BatchKind = FEATURES


# Hands a batch that failed every attempt to the dead-letter topic; raises when it could not.
GiveUp = Callable[[Sent, str], None]
# The writer's current epoch (tasks.worker sets a new one each start) with the Redis run
# that holds its results, None before any.
WriterEpoch = Callable[[], str | None]


class InFlight:
    """Write tasks in flight; a task is resent when it fails or its result never comes.

    Resending is always safe: the writer skips offsets it has already committed.
    """

    def __init__(
        self,
        app: Celery,
        queue: str,
        resend_after_s: float,
        *,
        max_attempts: int,
        give_up: GiveUp,
        retry_backoff_s: float = 5.0,
        writer_epoch: WriterEpoch | None = None,
        epoch_check_s: float = 1.0,
    ) -> None:
        self.app = app
        self.queue = queue
        self.resend_after_s = resend_after_s
        self.max_attempts = max_attempts
        self.give_up = give_up
        self.retry_backoff_s = retry_backoff_s
        self._sent: deque[Sent] = deque()
        self.writer_epoch = writer_epoch
        self.epoch_check_s = epoch_check_s
        self._epoch: str | None = None
        self._epoch_checked_at = float("-inf")

    def __len__(self) -> int:
        return len(self._sent)

    def _publish(self, span: OffsetSpan, payload: bytes, task: str) -> AsyncResult:
        return self.app.send_task(
            task,
            args=[payload, span.topic, span.partition, span.first_offset, span.last_offset],
            queue=self.queue,
        )

    def send(self, pending: PendingBatch) -> None:
        """Publish one batch as a write task (raises when the broker cannot be reached)."""
        payload = pending.encode()
        result = self._publish(pending.span, payload, pending.kind.task)
        self._sent.append(
            Sent(
                pending.span,
                payload,
                len(pending.columns),
                result,
                time.monotonic(),
                kind=pending.kind,
            )
        )
        metrics.BRIDGE_IN_FLIGHT.set(len(self._sent))
        metrics.BRIDGE_ROWS.inc(len(pending.columns))
        log.info(
            "batch_sent task_id=%s partition=%d offsets=%d-%d rows=%d",
            result.id,
            pending.partition,
            pending.first_offset,
            pending.last_offset,
            len(pending.columns),
        )

    def collect(self) -> dict[tuple[str, int], int]:
        """Check results; return, per partition, the offset to commit (next to read)."""
        now = time.monotonic()
        self._resend_if_writer_restarted(now)
        for sent in self._sent:
            if sent.done:
                continue
            if sent.retry_at is not None:
                if now >= sent.retry_at:
                    self._resend(sent, now)
                continue
            if sent.result.ready():
                if sent.result.successful():
                    sent.done = True
                    sent.result.forget()
                    continue
                self._failed(sent, now)
            elif now - sent.sent_at > self.resend_after_s:
                metrics.BRIDGE_ERRORS.labels("write_timeout").inc()
                log.warning(
                    "batch_resend_timeout task_id=%s offsets=%d-%d waited_s=%.0f",
                    sent.result.id,
                    sent.span.first_offset,
                    sent.span.last_offset,
                    now - sent.sent_at,
                )
                self._resend(sent, now)
        commits: dict[tuple[str, int], int] = {}
        while self._sent and self._sent[0].done:
            span = self._sent.popleft().span
            commits[(span.topic, span.partition)] = span.last_offset + 1
        metrics.BRIDGE_IN_FLIGHT.set(len(self._sent))
        return commits

    def _resend_if_writer_restarted(self, now: float) -> None:
        """A restarted writer never answers the task its killed predecessor held (nor does
        one whose result Redis lost by restarting), and the commits wait behind that batch:
        resend every unfinished batch at once (the writer skips what it has already
        committed)."""
        if self.writer_epoch is None or now - self._epoch_checked_at < self.epoch_check_s:
            return
        self._epoch_checked_at = now
        epoch, previous = self.writer_epoch(), self._epoch
        self._epoch = epoch
        if previous is None or epoch == previous:
            return
        pending = [sent for sent in self._sent if not sent.done]
        log.warning(
            "writer_restarted epoch=%s previous=%s resending=%d", epoch, previous, len(pending)
        )
        metrics.BRIDGE_ERRORS.labels("writer_restart").inc()
        for sent in pending:
            self._resend(sent, now)

    def _failed(self, sent: Sent, now: float) -> None:
        """A write task failed: retry it later, or after max_attempts give it up to the
        dead-letter topic so that the partition's commits move on."""
        sent.failures += 1
        error = sent.result.result
        reason = f"write failed {sent.failures} times: {type(error).__name__}: {error}"
        metrics.BRIDGE_ERRORS.labels("write_failed").inc()
        log.error(
            "batch_failed task_id=%s offsets=%d-%d attempt=%d error=%s",
            sent.result.id,
            sent.span.first_offset,
            sent.span.last_offset,
            sent.failures,
            quoted(reason),
        )
        if sent.failures >= self.max_attempts:
            # Raises when the dead letters cannot be delivered: the consumer restarts and
            # reads the batch again, as for any dead letter (bridge.consumer).
            self.give_up(sent, reason)
            sent.result.forget()
            sent.done = True
            return
        sent.retry_at = now + self.retry_backoff_s

    def _resend(self, sent: Sent, now: float) -> None:
        sent.result.forget()
        sent.result = self._publish(sent.span, sent.payload, sent.kind.task)
        sent.sent_at = now
        sent.retry_at = None
        log.info(
            "batch_resent task_id=%s offsets=%d-%d",
            sent.result.id,
            sent.span.first_offset,
            sent.span.last_offset,
        )

    def forget_partition(self, topic: str, partition: int) -> None:
        """Stop tracking batches of a revoked partition (the writer still dedupes them)."""
        self._sent = deque(
            s for s in self._sent if (s.span.topic, s.span.partition) != (topic, partition)
        )
