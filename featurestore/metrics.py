"""Prometheus metrics of every program, defined once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
BRIDGE_BATCHES_DEAD_LETTERED = Counter(
    "fstore_bridge_batches_dead_lettered_total",
    "Write batches that failed every attempt and went to the dead-letter topic",
)
BRIDGE_ERRORS = Counter("fstore_bridge_errors_total", "Bridge failures by kind", ["kind"])
FAILURES = Counter(
    "fstore_failures_total", "Failures of any program, by program and kind", ["program", "kind"]
)
SERVICE_UP = Gauge("fstore_up", "1 while the program runs", ["program"])
GRPC_REQUESTS = Counter("fstore_grpc_requests_total", "gRPC requests", ["method", "code"])
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


def serve(port: int, program: str) -> None:
    """Expose this process's metrics on the port (call once, at start-up)."""
    start_http_server(port)
    SERVICE_UP.labels(program).set(1)
