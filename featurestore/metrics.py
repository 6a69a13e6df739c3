"""Prometheus metrics of every program, defined once; each program serves only its own
(PROGRAMS), plus the shared ones (SHARED). The default registry holds them all, for the
tests that read a metric in-process; no program serves it."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.registry import Collector

from featurestore.collectors import BulkHistogram, SampledGauge

WRITE_ROWS = Counter(
    "fstore_write_rows_total", "Feature rows handled by the DuckDB writer", ["outcome"]
)
WRITE_SECONDS = Histogram(
    "fstore_write_batch_seconds",
    "Time to write one batch (DuckDB commit + online store)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATEST_MERGE_SECONDS = Histogram(
    "fstore_latest_merge_seconds",
    "Time to fold new rows into the latest-values table",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LATEST_LAG_SECONDS = Gauge(
    "fstore_latest_lag_seconds",
    "Age of the oldest write not yet folded into the latest-values table (0: caught up)",
)
READS = Counter("fstore_reads_total", "Reads run by the DuckDB service", ["outcome"])
READ_SECONDS = Histogram(
    "fstore_read_seconds",
    "Time to run one read in the DuckDB service (encoding included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
BRIDGE_MESSAGES = Counter(
    "fstore_bridge_messages_total", "Kafka messages consumed by the bridge", ["outcome"]
)
BRIDGE_ROWS = Counter("fstore_bridge_rows_total", "Feature rows sent to the writer by the bridge")
BRIDGE_IN_FLIGHT = Gauge("fstore_bridge_batches_in_flight", "Write batches not yet committed")
# reason is a category (invalid_message, write_failed), never the error's text.
BRIDGE_DEAD_LETTERS = Counter(
    "fstore_bridge_dead_letters_total",
    "Messages sent to a dead-letter topic, by source topic and reason",
    ["topic", "reason"],
)
BRIDGE_LAST_COMMIT = Gauge(
    "fstore_bridge_last_commit_timestamp_seconds",
    "Unix time of the bridge's last Kafka offset commit (0 until its first)",
)
BRIDGE_ERRORS = Counter("fstore_bridge_errors_total", "Bridge failures by kind", ["kind"])
FAILURES = Counter(
    "fstore_failures_total", "Failures of any program, by program and kind", ["program", "kind"]
)
SERVICE_UP = Gauge("fstore_up", "1 while the program runs", ["program"])
# Labels name registered methods only (unknown methods never reach the interceptor's timer).
GRPC_REQUEST_SECONDS = Histogram(
    "fstore_grpc_request_seconds",
    "Time of one unary gRPC call in the server, by service, method and status code",
    ["service", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_SYNC = Counter("fstore_model_sync_total", "Model sync runs", ["outcome"])
MODEL_SYNC_LAST_SUCCESS = Gauge(
    "fstore_model_sync_last_success_timestamp_seconds",
    "Unix time of each model's last successful sync",
    ["model"],
)
MODEL_SERVED_VERSION = Gauge(
    "fstore_model_served_version",
    "1 for the version each model serves (the label of a replaced version is removed)",
    ["model", "version"],
)
MODEL_SYNC_FAILURES = Counter(
    "fstore_model_sync_failures_total",
    "Model sync failures by model and reason",
    ["model", "reason"],
)
MODEL_SYNC_DOWNLOADS = Counter(
    "fstore_model_sync_downloads_total", "Artifacts downloaded from Azure", ["model"]
)
MODEL_SYNC_BYTES = Counter(
    "fstore_model_sync_bytes_total", "Artifact bytes downloaded from Azure", ["model"]
)
MODEL_SYNC_SKIPPED = Counter(
    "fstore_model_sync_downloads_skipped_total",
    "Artifact downloads skipped because the served copy has the blob's ETag",
    ["model"],
)
# Labels name served models and their expected features only (never request input).
PREDICT_SECONDS = Histogram(
    "fstore_predict_seconds",
    "Time of one Predict in the serving process (features, fallback, inference)",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
MISSING_FEATURES = Counter(
    "fstore_missing_features_total",
    "Feature values a prediction lacked after the online store and the fallback",
    ["model", "feature"],
)
MODEL_LOADS = Counter(
    "fstore_model_loads_total",
    "Model versions loaded by a serving process, by outcome (ok or the artifact error reason)",
    ["model", "outcome"],
)

PREDICTION_LOG_RECORDS = Counter(
    "fstore_prediction_log_records_total",
    "Prediction records by outcome: delivered (Kafka confirmed), dropped_full (pushed out of "
    "the full buffer, oldest first), dropped_undelivered (Kafka did not confirm in time)",
    ["outcome"],
)
PREDICTION_LOG_BUFFERED = Gauge(
    "fstore_prediction_log_buffered_calls", "Served calls waiting in the prediction log's buffer"
)
WRITE_PREDICTIONS = Counter(
    "fstore_write_predictions_total",
    "Prediction records handled by the DuckDB writer",
    ["outcome"],
)
READS_IN_PROGRESS = Gauge("fstore_reads_in_progress", "Reads the DuckDB service is running now")
DUCKDB_FILE_BYTES = Gauge("fstore_duckdb_file_bytes", "Size of the DuckDB database file")
DUCKDB_TABLE_ROWS = SampledGauge(
    "fstore_duckdb_table_rows",
    "Rows per DuckDB table (DuckDB's estimate, sampled at most every 30 s)",
    ["table"],
    max_age_s=30.0,
)
# Rows of feature batches written for the first time (a redelivered batch is not counted
# again). Buckets reach a day for the event time: backfills land in the last ones.
FRESHNESS_KAFKA_TO_ONLINE = BulkHistogram(
    "fstore_freshness_kafka_to_online_seconds",
    "Per feature row: from its Kafka message's timestamp to the online-store update",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
FRESHNESS_EVENT_TO_COMMIT = BulkHistogram(
    "fstore_freshness_event_to_commit_seconds",
    "Per feature row: from its event_timestamp to the DuckDB commit",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
CELERY_QUEUE_LENGTH = Gauge(
    "fstore_celery_queue_length",
    "Tasks waiting in a Celery queue (length of its Redis lists), sampled by beat",
    ["queue"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "fstore_kafka_consumer_lag_messages",
    "Per partition: high watermark minus the bridge group's committed offset, sampled by beat",
    ["topic", "partition"],
)
KAFKA_COMMITTED_OFFSET = Gauge(
    "fstore_kafka_committed_offset",
    "Per partition: the bridge group's committed offset, sampled by beat",
    ["topic", "partition"],
)
DEPENDENCY_UP = Gauge(
    "fstore_dependency_up",
    "1 when beat's last sample of the dependency (redis, kafka) answered, else 0",
    ["dependency"],
)

SHARED: tuple[Collector, ...] = (SERVICE_UP, FAILURES)
PROGRAMS: Mapping[str, tuple[Collector, ...]] = {
    "duckdb_worker": (
        WRITE_ROWS,
        WRITE_SECONDS,
        WRITE_PREDICTIONS,
        LATEST_MERGE_SECONDS,
        LATEST_LAG_SECONDS,
        READS,
        READ_SECONDS,
        READS_IN_PROGRESS,
        DUCKDB_FILE_BYTES,
        DUCKDB_TABLE_ROWS,
        FRESHNESS_KAFKA_TO_ONLINE,
        FRESHNESS_EVENT_TO_COMMIT,
    ),
    "bridge": (
        BRIDGE_MESSAGES,
        BRIDGE_ROWS,
        BRIDGE_IN_FLIGHT,
        BRIDGE_ERRORS,
        BRIDGE_DEAD_LETTERS,
        BRIDGE_LAST_COMMIT,
    ),
    "grpc": (
        GRPC_REQUEST_SECONDS,
        PREDICT_SECONDS,
        MISSING_FEATURES,
        MODEL_LOADS,
        PREDICTION_LOG_RECORDS,
        PREDICTION_LOG_BUFFERED,
    ),
    "beat": (CELERY_QUEUE_LENGTH, KAFKA_CONSUMER_LAG, KAFKA_COMMITTED_OFFSET, DEPENDENCY_UP),
    "model_sync": (
        MODEL_SYNC,
        MODEL_SYNC_LAST_SUCCESS,
        MODEL_SERVED_VERSION,
        MODEL_SYNC_FAILURES,
        MODEL_SYNC_DOWNLOADS,
        MODEL_SYNC_BYTES,
        MODEL_SYNC_SKIPPED,
    ),
}


def registry_for(program: str) -> CollectorRegistry:
    """A registry of the program's own metrics, the shared ones and the process's."""
    own = PROGRAMS.get(program)
    if own is None:
        raise ValueError(f"no metrics for program {program!r}; known: {', '.join(PROGRAMS)}")
    registry = CollectorRegistry()
    for collector in (*SHARED, *own, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve(port: int, program: str, host: str = "127.0.0.1") -> None:
    """Expose the program's metrics (registry_for) on host:port (call once, at start-up).

    Loopback unless settings.metrics_host says otherwise: the metrics need no password and
    name every queue, model and entity count.
    """
    # The text format writes each counter's and histogram's creation time as a gauge series
    # of its own (<name>_created): one more series per child, which no query here uses.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry_for(program))
    SERVICE_UP.labels(program).set(1)
