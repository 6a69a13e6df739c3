"""Backups of the DuckDB file: a consistent copy taken inside the running service, its
manifest, and the checks and file swap of a restore.

A backup is one read transaction: ATTACH a new file, copy every table into it, COMMIT.
DuckDB's MVCC gives the transaction one snapshot, and a write batch commits its rows and its
Kafka offset span together (featurestore.store.database), so the copy holds rows and spans
that match, without taking the write lock: ingestion goes on while it runs.

The latest-values tables (featurestore.store.merger) are derived from `features`: the backup
holds their schema, not their rows, and a restore rebuilds them offline with the merger's
own merge. Copying them cost most of the backup's time and size (their primary-key index is
built row by row; README, Backup and restore).

Rejected: a CHECKPOINT and a copy of the file under the write lock, because the merger
commits without that lock (the copy could catch half a merge) and ingestion would stop for
the whole copy; EXPORT DATABASE to Parquet, because its restore is an IMPORT that rebuilds
every index (29.9 s for the same 2M events against a 0.6 s file copy).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from featurestore.errors import BackupError
from featurestore.logs import quoted
from featurestore.sql import identifier, literal
from featurestore.store import spans
from featurestore.store.database import Store

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "features.duckdb"
# Rows copied per statement of a large table: progress is reported between them.
CHUNK_ROWS = 1_000_000
# Rebuilt from features at restore (featurestore.store.restore): schema in the backup,
# rows not.
DERIVED = ("latest_features", "latest_state")
_HASH_BLOCK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]
# (topic, partition) -> an offset
Offsets = dict[tuple[str, int], int]

# The same content checksum the tests compute over produced events.
FEATURES_CHECKSUM_SQL = (
    "SELECT coalesce(sum(hash(entity_id, feature_name, value, event_timestamp)), 0)::VARCHAR "
    "FROM features"
)


@dataclass(frozen=True)
class PartitionOffset:
    """Where the bridge resumes one partition after a restore: the first offset the backup
    does not hold (every offset before it is in the backup's rows or dead letters)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Manifest:
    """What a backup holds: when, the Kafka offsets it matches, row counts and checksums."""

    created_at: str
    source: str
    offsets: list[PartitionOffset]
    tables: dict[str, int]
    features_checksum: str
    sha256: str
    bytes: int
    seconds: float
    duckdb_version: str = duckdb.__version__
    format: int = FORMAT
    notes: list[str] = field(default_factory=list)

    def offsets_by_partition(self) -> Offsets:
        """The resume offsets keyed by (topic, partition)."""
        return {(p.topic, p.partition): p.offset for p in self.offsets}

    def save(self, folder: Path) -> Path:
        """Write the manifest as JSON into the backup folder."""
        path = folder / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read a backup folder's manifest; BackupError saying what is wrong."""
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT:
                raise BackupError(f"{path}: backup format {raw.get('format')!r}, not {FORMAT}")
            raw["offsets"] = [PartitionOffset(**p) for p in raw["offsets"]]
            return cls(**raw)
        except FileNotFoundError:
            raise BackupError(f"{folder}: not a backup (no {MANIFEST})") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise BackupError(f"{path}: malformed manifest ({type(exc).__name__})") from None


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """SHA-256 of a file, read in blocks (progress in bytes)."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def resume_offsets(cur: duckdb.DuckDBPyConnection, committed: Offsets) -> list[PartitionOffset]:
    """Each partition's resume offset: from Kafka's committed offset when known (the bridge
    commits only what DuckDB holds), else from the partition's first recorded span."""
    starts = dict(committed)
    for topic, partition, first in cur.execute(
        "SELECT topic, kafka_partition, min(first_offset) FROM ingested_batches GROUP BY ALL"
    ).fetchall():
        starts.setdefault((str(topic), int(partition)), int(first))
    return [
        PartitionOffset(topic, partition, spans.resume_position(cur, topic, partition, start))
        for (topic, partition), start in sorted(starts.items())
    ]


def _prepare(dest: Path, state_dir: Path) -> Path:
    """The backup folder: absolute, outside the state folder, new or empty."""
    if not dest.is_absolute():
        raise BackupError(f"{dest}: give the backup folder as an absolute path")
    if dest.resolve().is_relative_to(state_dir.resolve()):
        raise BackupError(f"{dest}: refusing to write a backup inside {state_dir}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest}: exists and is not an empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    return dest / DATABASE


@contextlib.contextmanager
def _attached(cur: duckdb.DuckDBPyConnection, path: Path) -> Iterator[str]:
    # ATTACH is seen by every session of the database: a name of its own, detached after.
    alias = f"backup_{uuid.uuid4().hex[:12]}"
    cur.execute(f"ATTACH {literal(str(path))} AS {identifier(alias)}")
    try:
        yield alias
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.rollback()
        cur.execute(f"DETACH {identifier(alias)}")


def _copy_tables(
    cur: duckdb.DuckDBPyConnection, source: str, alias: str, progress: Progress
) -> dict[str, int]:
    """Copy the schema, then every table but the derived ones in chunks of rowids; row
    counts per table copied."""
    tables = [
        str(name)
        for (name,) in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND NOT temporary "
            "AND NOT list_contains(?, table_name) ORDER BY table_name",
            [source, list(DERIVED)],
        ).fetchall()
    ]
    counts: dict[str, int] = {}
    tops: dict[str, int] = {}
    for name in tables:
        count, top = cur.execute(
            f"SELECT count(*), coalesce(max(rowid), -1) FROM {identifier(name)}"
        ).fetchall()[0]
        counts[name], tops[name] = int(count), int(top)
    total, done = sum(counts.values()), 0
    progress(0, total)
    cur.execute(f"COPY FROM DATABASE {identifier(source)} TO {identifier(alias)} (SCHEMA)")
    for name in tables:
        target = f"{identifier(alias)}.main.{identifier(name)}"
        for low in range(0, tops[name] + 1, CHUNK_ROWS):
            cur.execute(
                f"INSERT INTO {target} SELECT * FROM {identifier(name)} "
                "WHERE rowid BETWEEN ? AND ?",
                [low, low + CHUNK_ROWS - 1],
            )
            done = min(done + CHUNK_ROWS, total)
            progress(done, total)
    progress(total, total)
    return counts


def take(
    store: Store,
    dest: Path,
    committed: Offsets,
    progress: Progress,
    *,
    state_dir: Path,
) -> Manifest:
    """Copy the database into dest/features.duckdb in one snapshot, and write its manifest.

    `committed` is the bridge group's committed offset (or the partition's earliest) per
    partition, read before the backup started: a starting point no later than what the
    snapshot holds.
    """
    began = time.perf_counter()
    target = _prepare(dest, state_dir)
    partial = target.with_name(target.name + ".partial")
    cur = store.cursor()
    source = str(cur.execute("SELECT current_database()").fetchall()[0][0])
    try:
        with _attached(cur, partial) as alias:
            cur.begin()
            # The first statement fixes the snapshot: what follows sees one committed state.
            offsets = resume_offsets(cur, committed)
            checksum = str(cur.execute(FEATURES_CHECKSUM_SQL).fetchall()[0][0])
            tables = _copy_tables(cur, source, alias, progress)
            cur.commit()
    except BaseException:
        # A half copy must not stay, nor keep the folder from a second try.
        for path in (partial, partial.with_name(partial.name + ".wal")):
            path.unlink(missing_ok=True)
        raise
    # DETACH checkpoints the copy into its file; a WAL left beside it would not follow the
    # rename, and the copy would lack what it holds.
    if partial.with_name(partial.name + ".wal").exists():
        raise BackupError(f"{partial}: DuckDB left a WAL after the copy; backup not finished")
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(target)
    manifest = Manifest(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source=str(store.path),
        offsets=offsets,
        tables=tables,
        features_checksum=checksum,
        sha256=file_sha256(target),
        bytes=target.stat().st_size,
        seconds=round(time.perf_counter() - began, 3),
    )
    manifest.save(dest)
    log.info(
        "backup_taken dest=%s rows=%d bytes=%d seconds=%.2f offsets=%s",
        quoted(dest),
        tables.get("features", 0),
        manifest.bytes,
        manifest.seconds,
        ",".join(f"{p.topic}:{p.partition}:{p.offset}" for p in offsets),
    )
    return manifest
