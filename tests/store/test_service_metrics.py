"""The DuckDB service's own metrics: freshness per written row, reads in progress, file
size and rows per table (a DuckDBService in this process, on the test Redis)."""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from featurestore.ingest import write_batch
from featurestore.store.database import OffsetSpan
from featurestore.store.service import DuckDBService

KAFKA = "fstore_freshness_kafka_to_online_seconds"
EVENT = "fstore_freshness_event_to_commit_seconds"


def bucket(name: str, le: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_bucket", {"le": le}) or 0.0


def payload(rows: int, event_age_s: float, kafka_age_s: float | None) -> bytes:
    """A batch of rows whose events happened event_age_s ago and whose Kafka messages were
    written kafka_age_s ago (None: no Kafka timestamp), offsets 0..rows-1."""
    now = time.time()
    tag = uuid.uuid4().hex[:8]
    table = pa.table(
        {
            "entity_id": [f"{tag}{i}" for i in range(rows)],
            "feature_name": ["f"] * rows,
            "value": [float(i) for i in range(rows)],
            "event_timestamp": pa.array([int((now - event_age_s) * 1e6)] * rows, pa.int64()).cast(
                pa.timestamp("us")
            ),
            "offset": list(range(rows)),
            "kafka_timestamp": pa.array(
                [None if kafka_age_s is None else int((now - kafka_age_s) * 1e3)] * rows,
                pa.int64(),
            ).cast(pa.timestamp("ms")),
        }
    )
    return write_batch.encode(table)


def test_each_first_written_row_is_counted_in_both_freshness_histograms(
    service: DuckDBService,
) -> None:
    # 100 s after the event and 20 s after Kafka took it: inside le=300 and le=30, past
    # le=60 and le=10 (the write itself takes far less than 10 s).
    before = {
        (n, le): bucket(n, le) for n in (KAFKA, EVENT) for le in ("10.0", "30.0", "60.0", "300.0")
    }
    span = OffsetSpan(f"t{uuid.uuid4().hex[:6]}", 0, 0, 4)
    result = service.write_batch(payload(5, 100.0, 20.0), span)
    assert result.inserted == 5
    after = {key: bucket(*key) for key in before}
    delta = {key: after[key] - before[key] for key in before}
    assert delta[(KAFKA, "10.0")] == 0
    assert delta[(KAFKA, "30.0")] == 5
    assert delta[(EVENT, "60.0")] == 0
    assert delta[(EVENT, "300.0")] == 5
    # The same batch again (a redelivery): written rows are not counted twice.
    assert service.write_batch(payload(5, 100.0, 20.0), span).duplicates == 5
    assert {key: bucket(*key) for key in before} == after


def test_rows_without_a_kafka_timestamp_count_only_for_the_event_time(
    service: DuckDBService,
) -> None:
    kafka_count = REGISTRY.get_sample_value(f"{KAFKA}_count") or 0.0
    event_count = REGISTRY.get_sample_value(f"{EVENT}_count") or 0.0
    service.write_batch(payload(3, 1.0, None), OffsetSpan(f"t{uuid.uuid4().hex[:6]}", 0, 0, 2))
    assert REGISTRY.get_sample_value(f"{KAFKA}_count") == kafka_count
    assert REGISTRY.get_sample_value(f"{EVENT}_count") == event_count + 3


def test_file_size_and_rows_per_table_are_reported(service: DuckDBService) -> None:
    service.write_batch(payload(7, 1.0, 1.0), OffsetSpan(f"t{uuid.uuid4().hex[:6]}", 0, 0, 6))
    # The first scrape after the service started samples the tables (then every 30 s).
    assert REGISTRY.get_sample_value("fstore_duckdb_table_rows", {"table": "features"}) == 7
    assert REGISTRY.get_sample_value("fstore_duckdb_table_rows", {"table": "ingested_batches"}) == 1
    size = REGISTRY.get_sample_value("fstore_duckdb_file_bytes") or 0.0
    assert size == service.settings.duckdb_file.stat().st_size > 0


def test_reads_are_in_progress_while_they_run(
    service: DuckDBService, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float | None] = []
    run = service._reads.run

    def watched(requests: list[tuple[str, object]]) -> list[object]:
        seen.append(REGISTRY.get_sample_value("fstore_reads_in_progress"))
        return run(requests)  # type: ignore[return-value]

    monkeypatch.setattr(service._reads, "run", watched)
    before = REGISTRY.get_sample_value("fstore_reads_in_progress")
    outcomes = service.read_many([("SELECT 1 AS one", None), ("SELECT 2 AS two", None)])
    assert len(outcomes) == 2
    assert seen == [(before or 0.0) + 2]
    assert REGISTRY.get_sample_value("fstore_reads_in_progress") == before
