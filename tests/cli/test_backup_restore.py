"""`fstore backup` and `fstore restore` on the real stack: ingest, back up, ingest more, stop,
restore, start; Kafka replays what came after the backup, exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import pytest
import redis
from celery import Celery

from bridge.group_offsets import GroupOffsets
from bridge.producer import FileProducer
from featurestore import stack as stack_module
from featurestore.settings import Settings
from featurestore.store import backup, restore
from featurestore.store.online import OnlineStore
from tasks.app import configure
from tasks.client.query import query_table
from tests.helpers import (
    expected_checksum,
    run_cli,
    stored_checksum,
    wait_for_count,
    wait_for_online,
    wait_until,
    write_events,
)

pytestmark = pytest.mark.integration


def produce(settings: Settings, path: Path, tag: str, entities: int) -> int:
    rows = write_events(path, tag, entities, features=5, seed=len(tag))
    report = FileProducer(settings, rows_per_message=200).run([path])
    assert report.rows_sent == rows and report.rows_rejected == 0
    return rows


def all_committed(settings: Settings) -> bool:
    """The bridge's group has committed every message of the features topic."""
    group = GroupOffsets(settings)
    topic = [key for key in group.partitions() if key[0] == settings.features_topic]
    committed = group.committed_or_earliest()
    return all(committed[key] == offset for key, offset in group.end(topic).items())


def latest_pairs(app: Celery, tag: str) -> int:
    """(entity, feature) pairs of the latest-values table with this entity prefix."""
    sql = "SELECT count(*) AS n FROM latest_features WHERE starts_with(entity_id, ?)"
    return int(query_table(app, sql, [tag], timeout=30).column("n")[0].as_py())


def online_matches_file(settings: Settings, path: Path, tag: str, entities: list[str]) -> None:
    """The online values of these entities are the file's (one value per feature there)."""
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT entity_id, feature_name, value FROM read_parquet('{path}') "
            "WHERE list_contains(?, entity_id)",
            [entities],
        ).fetchall()
    online = OnlineStore(redis.Redis.from_url(settings.redis_url))
    found = wait_for_online(online, entities, 5)
    assert {(e, f, found[e][f].value) for e, f, _v in rows} == set(rows)


def test_restore_replays_what_came_after_the_backup_exactly_once(
    stack: Settings, tmp_path: Path
) -> None:
    app = configure(stack)
    first, second = f"b{uuid.uuid4().hex[:8]}_", f"a{uuid.uuid4().hex[:8]}_"
    first_file, second_file = tmp_path / "first.parquet", tmp_path / "second.parquet"
    first_rows = produce(stack, first_file, first, 3000)
    assert wait_for_count(app, first, first_rows) == first_rows

    dest = tmp_path / "backup"
    taken = run_cli(stack, "backup", str(dest))
    assert taken.returncode == 0, taken.stderr
    manifest = restore.verify(dest)
    assert f"resumes {stack.features_topic}[0] at offset" in taken.stdout
    again = run_cli(stack, "backup", str(dest))  # refused inside the service, said here
    assert again.returncode == 2
    assert "exists and is not an empty folder" in again.stderr
    refused = run_cli(stack, "restore", str(dest))
    assert refused.returncode == 2
    assert "the stack is running" in refused.stderr

    second_rows = produce(stack, second_file, second, 2000)
    assert wait_for_count(app, second, second_rows) == second_rows
    with duckdb.connect(str(dest / backup.DATABASE), read_only=True) as con:
        held = dict(
            con.execute(
                "SELECT starts_with(entity_id, ?), count(*) FROM features "
                "WHERE starts_with(entity_id, ?) OR starts_with(entity_id, ?) GROUP BY ALL",
                [first, first, second],
            ).fetchall()
        )
    assert held == {True: first_rows}
    features_offset = manifest.offsets_by_partition()[(stack.features_topic, 0)]

    stack_module.down(stack)
    try:
        restored = run_cli(stack, "restore", str(dest))
        assert restored.returncode == 0, restored.stderr
        assert f"{stack.features_topic}[0]: resumes at offset {features_offset}" in restored.stdout
    finally:
        stack_module.up(stack, timeout=300)

    # Without the group's offsets set back, the second file would never arrive.
    assert wait_for_count(app, second, second_rows) == second_rows
    assert wait_until(lambda: all_committed(stack), timeout=180)
    assert stored_checksum(app, first) == expected_checksum(first_file, first)
    assert stored_checksum(app, second) == expected_checksum(second_file, second)
    # The latest-values table, rebuilt by the restore and merged on by the worker.
    assert wait_until(lambda: latest_pairs(app, first) == first_rows, timeout=60)
    assert wait_until(lambda: latest_pairs(app, second) == second_rows, timeout=60)
    online_matches_file(stack, first_file, first, [f"{first}{i}" for i in range(0, 3000, 300)])
    online_matches_file(stack, second_file, second, [f"{second}{i}" for i in range(0, 2000, 200)])
