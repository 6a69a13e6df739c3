"""`fstore model ...`: register, promote, archive, list and show model versions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from featurestore import constants
from featurestore.serving import manifest
from featurestore.settings import Settings
from featurestore.store.registry import ModelRecord, list_sql, load_specs
from tasks.client.query import query


def _change(app: Celery, settings: Settings, operation: str, arguments: dict[str, Any]) -> None:
    app.send_task(
        constants.TASK_REGISTRY_CHANGE, args=[operation, arguments], queue=settings.write_queue
    ).get(timeout=settings.query_timeout_s)


def _print(records: list[ModelRecord]) -> None:
    print(f"{'MODEL':<24}{'VERSION':<12}{'ARTIFACT':<12}{'STATUS':<12}{'TRAINED':<12}FEATURES")
    for r in records:
        features = ", ".join(f"{f.index}:{f.name}:{f.type}" for f in r.expected_features)
        trained = r.trained_date.isoformat() if r.trained_date else "-"
        print(
            f"{r.model_id:<24}{r.version:<12}{r.artifact_type:<12}{r.status:<12}"
            f"{trained:<12}{features}"
        )


def _print_serving(client: redis.Redis, model_ids: list[str]) -> None:
    """Per model: whether it is served, which version, and its last sync outcome."""
    if not model_ids:
        return
    print(f"\n{'MODEL':<24}{'SERVED':<8}{'VERSION':<12}{'LAST SYNC':<22}LAST SYNC ERROR")
    for model_id in model_ids:
        served = manifest.read_manifest(client, model_id)
        status = manifest.read_status(client, model_id)
        synced = status.last_success_at if status is not None else None
        error = "-"
        if status is not None and status.last_error_reason:
            rejected = f" (version {status.rejected_version} not served)"
            error = status.last_error_reason + (rejected if status.rejected_version else "")
        print(
            f"{model_id:<24}{'yes' if served else 'no':<8}"
            f"{served.version if served else '-':<12}"
            f"{synced.strftime('%Y-%m-%d %H:%M:%S') if synced else '-':<22}{error}"
        )


def run(settings: Settings, app: Celery, args: argparse.Namespace) -> int:
    """Carry out one `fstore model` subcommand."""
    if args.model_command == "register":
        specs = load_specs(args.file)
        for spec in specs:
            _change(app, settings, "register", spec.model_dump(mode="json"))
            print(f"registered {spec.model_id} {spec.version} {spec.artifact_type} (staging)")
        return 0
    if args.model_command in ("promote", "archive"):
        _change(
            app, settings, args.model_command, {"model_id": args.model_id, "version": args.version}
        )
        print(f"{args.model_command}d {args.model_id} {args.version}")
        # Serve the change now rather than at the next scheduled sync.
        app.send_task(constants.TASK_SYNC_MODELS, queue=settings.model_sync_queue)
        return 0
    model_id = getattr(args, "model_id", None)
    sql, params = list_sql(model_id, getattr(args, "status", None))
    records = query(app, sql, params, ModelRecord, timeout=settings.query_timeout_s)
    if args.model_command == "show":
        records = [r for r in records if args.version in (None, r.version)]
        if not records:
            print(f"no model {model_id}" + (f" version {args.version}" if args.version else ""))
            return 1
    _print(records)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.query_timeout_s)
    try:
        _print_serving(client, sorted({r.model_id for r in records}))
    finally:
        client.close()
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `model` subcommand and its own subcommands."""
    model: argparse.ArgumentParser = sub.add_parser(
        "model", help="register, promote, archive, list and show models"
    )
    commands = model.add_subparsers(dest="model_command", required=True)
    commands.add_parser(
        "register", help="register artifacts from a JSON or YAML file"
    ).add_argument("file", type=Path)
    for name in ("promote", "archive"):
        command = commands.add_parser(name, help=f"{name} a model version")
        command.add_argument("model_id")
        command.add_argument("version")
    listing = commands.add_parser("list", help="list registered artifacts")
    listing.add_argument("--status", choices=["production", "staging", "archived"])
    show = commands.add_parser("show", help="show one model's versions")
    show.add_argument("model_id")
    show.add_argument("--version")
    return model
