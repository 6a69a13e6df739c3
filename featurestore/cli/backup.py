"""`fstore backup DEST` (through the running DuckDB service) and `fstore restore SRC` (with
the stack stopped): a copy of the database that Kafka can bring back up to date.

After a restore the bridge must resume from the backup's offsets, so that Kafka replays what
came after it. The bridge resumes from the later of Kafka's committed offset and DuckDB's
(bridge.consumer), and after a restore Kafka's is the later one: the restore sets the group's
committed offsets back to the backup's. The resume rule is left as it is: it is what makes a
lost commit harmless, and DuckDB alone cannot tell a batch that was given up to the
dead-letter topic (no span recorded) from one not yet written.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import duckdb

from featurestore import constants, services, stack
from featurestore.errors import BackupError, ServiceError
from featurestore.progress import Progress
from featurestore.settings import Settings
from featurestore.store import backup, restore

log = logging.getLogger(__name__)

BACKUP_TIMEOUT_S = 6 * 3600.0


def committed_offsets(settings: Settings) -> backup.Offsets:
    """The bridge group's committed offsets (earliest where none); empty when Kafka does not
    answer, and the backup's resume offsets then come from DuckDB's spans alone."""
    from bridge.group_offsets import GroupOffsets

    try:
        return GroupOffsets(settings).committed_or_earliest()
    except ServiceError as exc:
        log.warning("backup_without_kafka_offsets error=%s", type(exc).__name__)
        print(f"warning: {exc}; resume offsets taken from DuckDB's offset spans alone")
        return {}


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Copy the database, consistent with its Kafka offsets, while the stack runs."""
    from tasks.app import configure

    dest = Path(args.dest).resolve()
    committed = committed_offsets(settings)
    result = configure(settings).send_task(
        constants.TASK_BACKUP,
        args=[str(dest), [[t, p, o] for (t, p), o in sorted(committed.items())]],
        queue=settings.read_queue,
    )
    deadline = time.monotonic() + args.timeout
    with Progress("backup", None, unit="rows") as progress:
        while not result.ready():
            if time.monotonic() > deadline:
                raise BackupError(f"no answer from the DuckDB service within {args.timeout:.0f}s")
            info = result.info if isinstance(result.info, dict) else {}
            progress.update(int(info.get("done", progress.done)) - progress.done)
            time.sleep(0.2)
    manifest: dict[str, Any] = result.get(timeout=10)
    print(
        f"backup: {manifest['tables'].get('features', 0)} feature rows, "
        f"{manifest['bytes'] / 2**20:.1f} MiB in {manifest['seconds']:.1f}s -> {dest}"
    )
    for part in manifest["offsets"]:
        print(f"  resumes {part['topic']}[{part['partition']}] at offset {part['offset']}")
    return 0


def check_stopped(settings: Settings) -> None:
    """BackupError unless the stack is stopped and no process has the DuckDB file open."""
    pid = stack.supervisord_pid(settings)
    if pid is not None:
        raise BackupError(
            f"the stack is running (supervisord pid {pid}): stop it with `fstore down` first; "
            "a restore replaces the DuckDB file the worker has open"
        )
    path = settings.duckdb_file
    if path.exists():
        try:
            duckdb.connect(str(path), read_only=True).close()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            raise BackupError(
                f"{path} is open in another process (a worker started by hand?): stop it first"
            ) from None


def set_replay_offsets(
    settings: Settings, manifest: backup.Manifest, force: bool
) -> tuple[backup.Offsets, backup.Offsets]:
    """The group's new offsets, checked against what Kafka still holds; and Kafka's ends."""
    from bridge.group_offsets import GroupOffsets

    group = GroupOffsets(settings)
    # A bridge stopped with the stack leaves its static membership for its session timeout.
    group.require_empty(static_expiry_s=settings.bridge_session_timeout_s + 5.0)
    partitions = group.partitions()
    earliest, end = group.earliest(partitions), group.end(partitions)
    wanted = manifest.offsets_by_partition()
    problems = restore.retention_problems(wanted, earliest, end)
    if problems and not force:
        raise BackupError(
            "Kafka cannot replay what came after this backup: "
            + "; ".join(problems)
            + " (--force restores anyway, without those events)"
        )
    for problem in problems:
        print(f"warning: {problem}")
    # A partition the backup does not know is replayed from its start (the writer skips
    # what it already holds); one past retention from what Kafka still has.
    offsets = {
        key: min(max(wanted.get(key, earliest[key]), earliest[key]), end[key]) for key in earliest
    }
    group.reset(offsets)
    return offsets, end


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Replace the database with a backup (stack stopped); Kafka replays what came after."""
    source = Path(args.src).resolve()
    check_stopped(settings)
    size = (source / backup.DATABASE).stat().st_size if (source / backup.DATABASE).exists() else 0
    with Progress("verify", size, unit="bytes") as progress:
        manifest = restore.verify(
            source, lambda done, _total: progress.update(done - progress.done)
        )
    kafka = services.KafkaService(settings)
    started = kafka.ensure().started
    try:
        # Offsets first: a restore stopped before the file swap leaves the group behind the
        # old database, which the bridge's resume rule walks forward again.
        offsets, end = set_replay_offsets(settings, manifest, args.force)
        kept = restore.install(source, settings.duckdb_file)
    finally:
        if started:
            kafka.stop()
    with Progress("rebuild-latest", None, unit="rows") as progress:
        restore.rebuild_derived(
            settings.duckdb_file, lambda done, _total: progress.update(done - progress.done)
        )
    print(f"restored {source} (taken {manifest.created_at}) into {settings.duckdb_file}")
    if kept is not None:
        print(f"  the replaced database is kept as {kept}")
    for (topic, partition), offset in sorted(offsets.items()):
        replay = end[(topic, partition)] - offset
        print(f"  {topic}[{partition}]: resumes at offset {offset}, {replay} messages to replay")
    print(
        "  on `fstore up` the bridge replays them; the online store keeps the newest value of "
        "each feature, so it ends as before (if Redis lost its data: `fstore rebuild-online`)."
        "\n  Model registry changes made after the backup are not in Kafka: they are gone."
    )
    return 0


def add_parsers(sub: Any) -> None:
    """The backup and restore subcommands."""
    taking = sub.add_parser("backup", help=(cmd_backup.__doc__ or "").strip())
    taking.set_defaults(handler=cmd_backup)
    taking.add_argument("dest", type=Path, help="a new or empty folder, outside the state folder")
    taking.add_argument(
        "--timeout", type=float, default=BACKUP_TIMEOUT_S, help="seconds to wait for the copy"
    )
    restoring = sub.add_parser("restore", help=(cmd_restore.__doc__ or "").strip())
    restoring.set_defaults(handler=cmd_restore)
    restoring.add_argument("src", type=Path, help="a folder written by `fstore backup`")
    restoring.add_argument(
        "--force",
        action="store_true",
        help="restore even when Kafka no longer holds every event after the backup",
    )
