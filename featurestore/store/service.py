"""The DuckDB service: the one process that owns the DuckDB file, and what it does."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import redis
from prometheus_client import Counter

from featurestore import metrics
from featurestore.errors import ValidationError
from featurestore.ingest import predictions, write_batch
from featurestore.progress import Progress
from featurestore.reads.groups import GroupedReads
from featurestore.settings import Settings
from featurestore.store import freshness, registry, skew, training
from featurestore.store.database import OffsetSpan, Store, WriteResult
from featurestore.store.job_threads import JobThreads
from featurestore.store.merger import Merger
from featurestore.store.online import OnlineStore, online_updates_sql
from featurestore.store.online_pack import packed_updates

log = logging.getLogger(__name__)


def online_updates(cur: duckdb.DuckDBPyConnection, rows: pa.Table) -> pa.Table:
    """The online store's updates for a table of feature rows."""
    cur.register("batch_rows", rows)
    try:
        return cur.sql(online_updates_sql("batch_rows")).to_arrow_table()
    finally:
        cur.unregister("batch_rows")


def _count_write(
    event: str,
    rows: Counter,
    span: OffsetSpan,
    result: WriteResult,
    began: float,
    committed: float | None = None,
) -> float:
    """Count a committed batch's rows, log it as `event` (with the ms to the DuckDB commit
    when given); returns its seconds since began."""
    end = time.perf_counter()
    rows.labels("inserted").inc(result.inserted)
    rows.labels("duplicate").inc(result.duplicates)
    log.info(
        "%s topic=%s partition=%d offsets=%d-%d inserted=%d duplicates=%d ms=%.1f commit_ms=%.1f",
        event,
        span.topic,
        span.partition,
        span.first_offset,
        span.last_offset,
        result.inserted,
        result.duplicates,
        (end - began) * 1000,
        ((committed or end) - began) * 1000,
    )
    return end - began


class DuckDBService:
    """Writes batches exactly once and keeps the online store in step."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.settings = settings
        self.store = Store.from_settings(settings)
        self._training_threads = JobThreads(settings.duckdb_threads, settings.training_threads)
        self.online = OnlineStore(redis_client)
        self._reads = GroupedReads(
            self.store.read_result, grouping=settings.read_grouping, limits=self.store.limits
        )
        self.merger = Merger(
            self.store.cursor, settings.latest_merge_interval_s, settings.latest_merge_nice
        )
        self.merger.start()
        # The scrape thread's own session; SampledGauge calls it under its lock, at most
        # every 30 s (duckdb_tables() answers quickly: sizes are kept, not counted; README,
        # Benchmarks).
        self._stats = self.store.cursor().cursor()
        metrics.DUCKDB_TABLE_ROWS.set_source(self._table_rows)
        metrics.DUCKDB_FILE_BYTES.set_function(self._file_bytes)

    def _table_rows(self) -> dict[tuple[str, ...], float]:
        tables = self._stats.execute(
            "SELECT table_name, estimated_size FROM duckdb_tables() "
            "WHERE NOT internal AND NOT temporary"
        ).fetchall()
        return {(str(name),): float(size) for name, size in tables}

    def _file_bytes(self) -> float:
        try:
            return float(self.settings.duckdb_file.stat().st_size)
        except OSError:
            return 0.0

    def write_batch(self, payload: bytes, span: OffsetSpan) -> WriteResult:
        """Decode a batch, commit it to DuckDB once, then update the online store."""
        began = time.perf_counter()
        batch = write_batch.decode_batch(payload)
        rows = batch.rows
        result, written = self.store.write_features(rows, batch.offsets, span)
        committed, committed_perf = time.time(), time.perf_counter()
        self.merger.written()
        # Applied for every row, duplicates included (with their first write's created_at):
        # a worker killed between the DuckDB commit and this update gets a second chance
        # when the batch is redelivered.
        updates = packed_updates(written)
        if updates is None:
            updates = online_updates(self.store.cursor(), written)
        self.online.apply_updates(updates)
        if result.duplicates == 0:
            # A redelivered batch's rows were counted at their first write.
            freshness.observe(batch, committed, online_at=time.time())
        metrics.WRITE_SECONDS.observe(
            _count_write("write_batch", metrics.WRITE_ROWS, span, result, began, committed_perf)
        )
        return result

    def write_predictions(self, payload: bytes, span: OffsetSpan) -> WriteResult:
        """Decode a batch of prediction records and commit it to prediction_log once."""
        began = time.perf_counter()
        records, offsets = predictions.decode_batch(payload)
        result = self.store.write_predictions(records, offsets, span)
        _count_write("write_predictions", metrics.WRITE_PREDICTIONS, span, result, began)
        return result

    def read_many(self, requests: list[tuple[str, Any]]) -> list[bytes | tuple[str, str]]:
        """Run a batch of reads; each gives its result's bytes (reads.result_format) or (error type,
        message). Reads sharing a statement run as one (featurestore.reads.groups)."""
        metrics.READS_IN_PROGRESS.inc(len(requests))
        try:
            return self._reads.run(requests)
        finally:
            metrics.READS_IN_PROGRESS.dec(len(requests))

    def build_training_set(
        self, request: training.TrainingRequest, progress: Callable[[int, int], None]
    ) -> training.TrainingReport:
        """Build a point-in-time training set; the output may not land in the state folder
        (where it could overwrite the DuckDB file or a service's data)."""
        self._check_output(request.output_path, "the training set")
        cur = self.store.cursor()
        with self._training_threads.raised(cur):
            return training.build(cur, request, progress)

    def build_training_set_from_log(
        self, request: training.LogTrainingRequest
    ) -> training.LogTrainingReport:
        """A training set of the feature values a model was served, with the spine's labels."""
        self._check_output(request.output_path, "the training set")
        return training.build_from_log(self.store.cursor(), request)

    def skew(self, request: skew.SkewRequest) -> skew.SkewReport:
        """The training-serving skew report of a model; its rows as Parquet when asked."""
        if request.output_path is not None:
            self._check_output(request.output_path, "the skew rows")
        return skew.build(self.store.cursor(), request)

    def _check_output(self, path: Path, what: str) -> None:
        output = path.resolve()
        if output.suffix.lower() != ".parquet":
            raise ValidationError(f"{output}: {what} is written as a .parquet file")
        if output.is_relative_to(self.settings.state_dir.resolve()):
            raise ValidationError(f"{output}: refusing to write inside {self.settings.state_dir}")

    def resume_offset(self, topic: str, partition: int, committed: int) -> int:
        """First offset of the partition that is not yet in DuckDB."""
        return self.store.resume_offset(topic, partition, committed)

    def rebuild_online(self) -> int:
        """Merge the newest value of every (entity, feature) in DuckDB into the online store
        (values already there and as new are kept); returns the fields written."""
        cur = self.store.cursor()
        reader = cur.sql(online_updates_sql("features")).to_arrow_reader(10_000)
        written = 0
        with Progress("rebuild-online", None, unit="entities") as progress:
            for chunk in reader:
                written += self.online.apply_updates(pa.Table.from_batches([chunk]))
                progress.update(chunk.num_rows)
        log.info("online_rebuilt fields_written=%d", written)
        return written

    def change_registry(self, operation: str, arguments: dict[str, Any]) -> None:
        """Apply one registry change (register, promote, archive) in one transaction."""
        with self.store.transaction() as cur:
            if operation == "register":
                registry.register(cur, registry.ArtifactSpec.model_validate(arguments))
            elif operation == "promote":
                registry.promote(cur, arguments["model_id"], arguments["version"])
            elif operation == "archive":
                registry.archive(cur, arguments["model_id"], arguments["version"])
            else:
                raise registry.RegistryError(f"unknown registry operation {operation!r}")
        log.info(
            "registry_change operation=%s model_id=%s version=%s",
            operation,
            arguments.get("model_id"),
            arguments.get("version"),
        )

    def row_count(self) -> int:
        """Rows in the features table."""
        rows = self.store.cursor().execute("SELECT count(*) FROM features").fetchall()
        return int(rows[0][0])

    def close(self) -> None:
        """Stop merging, then checkpoint and close DuckDB."""
        self.merger.stop()
        metrics.DUCKDB_TABLE_ROWS.set_source(None)
        self._stats.close()
        self.store.close()
