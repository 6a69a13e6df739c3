"""The figures `make bench` reports: each benchmark's key, the floor measured beside it in the
same run, and the target its issue sets (issue 12: ingest, freshness, reads; issue 11:
serving). Keys a benchmark does not (yet) print show as n/a, not as a miss."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One reported figure: where it comes from, its floor, and its target (None: none)."""

    bench: str
    key: str
    label: str
    floor_key: str | None = None
    floor_label: str = ""
    target: float | None = None
    at_least: bool = False  # the target is a lower bound (a rate), else an upper bound
    issue: int | None = None

    @property
    def target_text(self) -> str:
        """The target as shown in the table ('' when there is none)."""
        if self.target is None:
            return ""
        return f"{'>=' if self.at_least else '<='} {self.target:g}"

    def met(self, value: float) -> bool:
        """Whether value meets the target."""
        assert self.target is not None
        return value >= self.target if self.at_least else value <= self.target


FIGURES = (
    # make bench-ingest
    Figure(
        "ingest",
        "end_to_end_events_per_s",
        "ingest end to end, JSON (events/s)",
        "raw_consume_events_per_s",
        "raw consume",
        300_000,
        at_least=True,
        issue=12,
    ),
    Figure(
        "ingest",
        "end_to_end_arrow_events_per_s",
        "ingest end to end, Arrow IPC (events/s)",
        "raw_duckdb_rows_per_s",
        "raw DuckDB insert",
        300_000,
        at_least=True,
        issue=12,
    ),
    Figure("ingest", "freshness_p50_s", "freshness p50 @20k events/s (s)"),
    Figure("ingest", "freshness_p99_s", "freshness p99 @20k events/s (s)", target=0.25, issue=12),
    Figure(
        "ingest",
        "single_event_p50_ms",
        "single event produce->servable p50 (ms)",
        target=100,
        issue=12,
    ),
    Figure(
        "ingest",
        "single_event_p99_ms",
        "single event produce->servable p99 (ms)",
        target=250,
        issue=12,
    ),
    Figure("ingest", "worker_peak_rss_mib", "worker peak RSS, ingest (MiB)"),
    # make bench-read
    Figure(
        "read", "read_p50_ms", "latest read, idle, p50 (ms)", "celery_noop_p50_ms", "no-op task"
    ),
    Figure(
        "read", "read_p99_ms", "latest read, idle, p99 (ms)", "celery_noop_p99_ms", "no-op task"
    ),
    Figure(
        "read",
        "read_under_ingest_p50_ms",
        "latest read during ingest, p50 (ms)",
        "noop_under_ingest_p50_ms",
        "no-op task, same time",
    ),
    Figure(
        "read",
        "read_under_ingest_p99_ms",
        "latest read during ingest, p99 (ms)",
        "noop_under_ingest_p99_ms",
        "no-op task, same time",
        15,
        issue=12,
    ),
    Figure(
        "read",
        "ingest_rate_during_reads",
        "ingest rate during those reads (events/s)",
        "ingest_rate_produced",
        "produced",
    ),
    Figure("read", "worker_rss_growth_mib_per_million_events", "worker RSS growth (MiB/1M events)"),
    Figure("read", "c50_reads_per_s", "latest read, 50 threads (reads/s)"),
    Figure("read", "floor_p50_ms", "latest read in-process (floor), p50 (ms)"),
    Figure("read", "training_1m_x10_s", "training set 1M x 10 (s; --full only)"),
    # make bench-serve
    Figure(
        "serve",
        "predict_p50_ms",
        "Predict 1 entity @500 rps, p50 (ms)",
        "floor_under_load_p50_ms",
        "health Check beside",
        1.5,
        issue=11,
    ),
    Figure(
        "serve",
        "predict_p99_ms",
        "Predict 1 entity @500 rps, p99 (ms)",
        "floor_under_load_p99_ms",
        "health Check beside",
        4,
        issue=11,
    ),
    Figure("serve", "predict_errors", "Predict @500 rps, errors", target=0, issue=11),
    Figure(
        "serve",
        "max_rps_no_errors",
        "highest rate with no errors (req/s)",
        target=1000,
        at_least=True,
        issue=11,
    ),
    Figure(
        "serve",
        "predict_batch100_p50_ms",
        "Predict 100 entities, p50 (ms)",
        "floor_p50_ms",
        "health Check",
        5,
        issue=11,
    ),
)
