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
BRIDGE_ERRORS = Counter("fstore_bridge_errors_total", "Bridge failures by kind", ["kind"])
FAILURES = Counter(
    "fstore_failures_total", "Failures of any program, by program and kind", ["program", "kind"]
)
SERVICE_UP = Gauge("fstore_up", "1 while the program runs", ["program"])
GRPC_REQUESTS = Counter("fstore_grpc_requests_total", "gRPC requests", ["method", "code"])
MODEL_SYNC = Counter("fstore_model_sync_total", "Model sync runs", ["outcome"])


def serve(port: int, program: str) -> None:
    """Expose this process's metrics on the port (call once, at start-up)."""
    start_http_server(port)
    SERVICE_UP.labels(program).set(1)
