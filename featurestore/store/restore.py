"""Restoring a backup (featurestore.store.backup) with the stack stopped: its checks, the
file swap, and the rebuild of the derived tables."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path

from featurestore.errors import BackupError
from featurestore.logs import quoted
from featurestore.store import merger
from featurestore.store.backup import DATABASE, Manifest, Offsets, Progress, file_sha256
from featurestore.store.database import Store

log = logging.getLogger(__name__)

# Rows folded in per merge when rebuilding the latest-values tables (the service's merger
# takes 50k while it serves; a restore runs alone, and fewer steps cost less).
REBUILD_ROWS = 500_000


def verify(folder: Path, progress: Progress | None = None) -> Manifest:
    """A backup folder's manifest, once its database file matches the recorded checksum."""
    manifest = Manifest.load(folder)
    path = folder / DATABASE
    if not path.is_file():
        raise BackupError(f"{folder}: the backup's {DATABASE} is missing")
    if file_sha256(path, progress) != manifest.sha256:
        raise BackupError(f"{path}: checksum differs from the manifest's (corrupt or altered)")
    return manifest


def retention_problems(wanted: Offsets, earliest: Offsets, end: Offsets) -> list[str]:
    """Why Kafka cannot replay from the backup's offsets: for each partition whose resume
    offset is before the earliest offset Kafka still holds (events lost to retention), or
    past the partition's end (another cluster, or a recreated topic). Empty when it can."""
    problems = []
    for (topic, partition), offset in sorted(wanted.items()):
        first = earliest.get((topic, partition))
        last = end.get((topic, partition))
        if first is None or last is None:
            problems.append(f"{topic}[{partition}]: no such partition in Kafka")
        elif offset < first:
            problems.append(
                f"{topic}[{partition}]: the backup resumes at offset {offset} but Kafka's "
                f"earliest is {first}: {first - offset} events are past retention"
            )
        elif offset > last:
            problems.append(
                f"{topic}[{partition}]: the backup resumes at offset {offset} but the "
                f"partition ends at {last} (another cluster, or the topic was recreated?)"
            )
    return problems


def install(backup: Path, target: Path) -> Path | None:
    """Put the backup's database file in place of target (copied beside it, then renamed);
    the old file and its WAL are kept under a `.before-restore-<time>` name, returned."""
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.with_name(target.name + ".restoring")
    shutil.copyfile(backup / DATABASE, incoming)
    with incoming.open("rb") as handle:
        os.fsync(handle.fileno())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = None
    # A WAL left beside the restored file would be replayed into it: it goes with the old file.
    for path in (target, target.with_name(target.name + ".wal")):
        if path.exists():
            moved = path.with_name(f"{path.name}.before-restore-{stamp}")
            path.replace(moved)
            kept = kept or moved
    incoming.replace(target)
    log.info("restore_installed target=%s kept=%s", quoted(target), quoted(kept or "-"))
    return kept


def rebuild_derived(path: Path, progress: Progress) -> int:
    """Rebuild the latest-values tables of a restored database file (nobody else has it
    open) from its features, as the service's merger would; the rows folded in."""
    store = Store(path)
    try:
        cur = store.cursor()
        total = int(cur.execute("SELECT count(*) FROM features").fetchall()[0][0])
        done = 0
        progress(0, total)
        while True:
            step = merger.merge(cur, max_rows=REBUILD_ROWS)
            done += step.rows
            progress(done, total)
            if not step.more:
                break
    finally:
        store.close()
    log.info("restore_rebuilt_latest path=%s rows=%d", quoted(path), done)
    return done
