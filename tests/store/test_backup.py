"""Backups of the DuckDB store without services: one snapshot while writes go on, the
manifest, its checks, the retention check and the file swap of a restore."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from featurestore.errors import BackupError
from featurestore.store import backup, merger, restore
from featurestore.store.database import OffsetSpan, Store

BATCH = 500


def batch(index: int) -> tuple[pa.Table, pa.Array, OffsetSpan]:
    """Batch `index`: BATCH rows at offsets index*BATCH .. (index+1)*BATCH - 1."""
    first = index * BATCH
    table = pa.table(
        {
            "entity_id": [f"e{i}" for i in range(first, first + BATCH)],
            "feature_name": ["f"] * BATCH,
            "value": [float(i) for i in range(first, first + BATCH)],
            "event_timestamp": pa.array([dt.datetime(2024, 1, 1)] * BATCH, pa.timestamp("us")),
        }
    )
    offsets = pa.array(range(first, first + BATCH), pa.int64())
    return table, offsets, OffsetSpan("features", 0, first, first + BATCH - 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "features.duckdb")


def take(store: Store, dest: Path, committed: backup.Offsets | None = None) -> backup.Manifest:
    return backup.take(
        store, dest, committed or {}, lambda _d, _t: None, state_dir=store.path.parent
    )


def test_backup_taken_while_writing_holds_rows_and_spans_that_match(
    store: Store, tmp_path: Path
) -> None:
    for index in range(4):
        store.write_batch(*batch(index))
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        index = 4
        while not stop.is_set() and index < 400:
            store.write_batch(*batch(index))
            written.append(index)
            index += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # Several backups while the writer commits: each must be one snapshot.
        manifests = []
        for n in range(3):
            while len(written) < 5 * (n + 1) and thread.is_alive():
                stop.wait(0.01)
            manifests.append((tmp_path / "out" / f"b{n}", take(store, tmp_path / "out" / f"b{n}")))
    finally:
        stop.set()
        thread.join()
    for folder, manifest in manifests:
        with duckdb.connect(str(folder / backup.DATABASE), read_only=True) as con:
            rows, spanned, end = con.execute(
                "SELECT (SELECT count(*) FROM features), sum(row_count), max(last_offset) + 1 "
                "FROM ingested_batches"
            ).fetchall()[0]
            stored_sum = con.execute(backup.FEATURES_CHECKSUM_SQL).fetchall()[0][0]
        assert rows == spanned == manifest.tables["features"]
        assert rows % BATCH == 0 and rows >= 4 * BATCH
        # Batches commit in order here, so the resume offset is the end of the spans.
        assert manifest.offsets == [backup.PartitionOffset("features", 0, end)]
        assert end == rows
        assert stored_sum == manifest.features_checksum
        assert restore.verify(folder).sha256 == manifest.sha256
    counts = [m.tables["features"] for _f, m in manifests]
    assert counts == sorted(counts)


def test_resume_offset_stops_at_a_gap_in_the_spans(store: Store, tmp_path: Path) -> None:
    # Batch 1 not yet committed when the backup runs (write tasks may commit out of order).
    for index in (0, 2, 3):
        store.write_batch(*batch(index))
    manifest = take(store, tmp_path / "b", {("features", 0): 0, ("predictions", 0): 7})
    assert manifest.offsets == [
        backup.PartitionOffset("features", 0, BATCH),
        # Nothing recorded: Kafka's committed offset (or earliest) is where it resumes.
        backup.PartitionOffset("predictions", 0, 7),
    ]
    assert manifest.tables["features"] == 3 * BATCH


def test_backup_refuses_a_folder_that_is_not_empty_or_inside_the_state_folder(
    store: Store, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(BackupError, match="not an empty folder"):
        take(store, used)
    with pytest.raises(BackupError, match="inside"):
        backup.take(store, tmp_path / "s" / "b", {}, lambda _d, _t: None, state_dir=tmp_path)
    with pytest.raises(BackupError, match="absolute"):
        backup.take(store, Path("rel"), {}, lambda _d, _t: None, state_dir=tmp_path / "s")


def test_a_failed_backup_leaves_the_store_usable(store: Store, tmp_path: Path) -> None:
    store.write_batch(*batch(0))
    progress_calls = []

    def failing(done: int, total: int) -> None:
        progress_calls.append(done)
        if done > 0:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        backup.take(store, tmp_path / "b", {}, failing, state_dir=tmp_path / "state")
    assert list((tmp_path / "b").iterdir()) == []  # nothing half-written left
    store.write_batch(*batch(1))
    databases = store.cursor().execute("SELECT database_name FROM duckdb_databases()").fetchall()
    assert not any(str(name).startswith("backup_") for (name,) in databases)
    assert take(store, tmp_path / "b").tables["features"] == 2 * BATCH  # the same folder


def test_verify_refuses_an_altered_backup_and_a_bad_manifest(store: Store, tmp_path: Path) -> None:
    store.write_batch(*batch(0))
    folder = tmp_path / "b"
    take(store, folder)
    with (folder / backup.DATABASE).open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\xff")
    with pytest.raises(BackupError, match="checksum differs"):
        restore.verify(folder)
    with pytest.raises(BackupError, match="not a backup"):
        restore.verify(tmp_path)
    raw = json.loads((folder / backup.MANIFEST).read_text())
    raw["format"] = 99
    (folder / backup.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BackupError, match="backup format 99"):
        restore.verify(folder)
    (folder / backup.MANIFEST).write_text("{")
    with pytest.raises(BackupError, match="malformed manifest"):
        restore.verify(folder)


def test_retention_check_names_each_partition_kafka_cannot_replay() -> None:
    wanted = {("features", 0): 100, ("features", 1): 5, ("predictions", 0): 50, ("gone", 0): 1}
    earliest = {("features", 0): 100, ("features", 1): 20, ("predictions", 0): 0}
    end = {("features", 0): 900, ("features", 1): 900, ("predictions", 0): 40}
    problems = restore.retention_problems(wanted, earliest, end)
    assert problems == [
        "features[1]: the backup resumes at offset 5 but Kafka's earliest is 20: "
        "15 events are past retention",
        "gone[0]: no such partition in Kafka",
        "predictions[0]: the backup resumes at offset 50 but the partition ends at 40 "
        "(another cluster, or the topic was recreated?)",
    ]
    assert restore.retention_problems({("features", 0): 100}, earliest, end) == []


def latest(cur: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return cur.execute("SELECT * FROM latest_features ORDER BY ALL").fetchall()


def test_restore_swaps_the_file_keeps_the_old_one_and_rebuilds_latest_values(
    store: Store, tmp_path: Path
) -> None:
    store.write_batch(*batch(0))
    # Newer values of e0..e9, in a batch whose span also covers 490 dead letters.
    newer = pa.table(
        {
            "entity_id": [f"e{i}" for i in range(10)],
            "feature_name": ["f"] * 10,
            "value": [1000.0 + i for i in range(10)],
            "event_timestamp": pa.array([dt.datetime(2024, 1, 2)] * 10, pa.timestamp("us")),
        }
    )
    store.write_batch(newer, pa.array(range(BATCH, BATCH + 10), pa.int64()), batch(1)[2])
    merger.merge(store.cursor())
    expected = latest(store.cursor())
    assert len(expected) == BATCH
    folder = tmp_path / "b"
    manifest = take(store, folder)
    assert "latest_features" not in manifest.tables
    with duckdb.connect(str(folder / backup.DATABASE), read_only=True) as con:
        assert latest(con) == []  # derived: schema only
    store.write_batch(*batch(2))
    store.close()
    target = store.path
    wal = target.with_name(target.name + ".wal")
    wal.write_bytes(b"stale wal")
    kept = restore.install(folder, target)
    assert kept is not None and kept.name.startswith("features.duckdb.before-restore-")
    assert not wal.exists()
    assert list(target.parent.glob("features.duckdb.wal.before-restore-*"))
    assert restore.rebuild_derived(target, lambda _d, _t: None) == BATCH + 10
    reopened = Store(target)
    try:
        cur = reopened.cursor()
        assert cur.execute("SELECT count(*) FROM features").fetchall() == [(BATCH + 10,)]
        assert reopened.resume_offset("features", 0, 0) == 2 * BATCH
        assert latest(cur) == expected
    finally:
        reopened.close()
