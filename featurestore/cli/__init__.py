"""The `fstore` command: run, stop and inspect the stack, and each of its programs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from featurestore import services, stack
from featurestore.cli import backup as cli_backup
from featurestore.cli import models as cli_models
from featurestore.cli import predictions as cli_predictions
from featurestore.cli import serving as cli_serving
from featurestore.cli import watch as cli_watch
from featurestore.errors import FeatureStoreError
from featurestore.logs import quoted, setup_logging
from featurestore.priority import lower_priority, program_nice
from featurestore.settings import Settings, load_settings

log = logging.getLogger("featurestore.cli")

# The commands supervisord runs (supervisord.conf); the others are typed by a person.
PROGRAM_COMMANDS = frozenset(
    {"service", "worker", "bridge", "model-sync", "beat", "grpc", "flower"}
)

SERVICES: dict[str, Callable[[Settings], services.ManagedService]] = {
    "kafka": services.KafkaService,
    "redis": services.RedisService,
    "azurite": services.AzuriteService,
    "prometheus": services.PrometheusService,
    "alertmanager": services.AlertmanagerService,
    "redis-exporter": services.RedisExporterService,
}


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    """Start the stack and wait until every program runs."""
    began = time.monotonic()
    stack.up(settings)
    print(f"stack up in {time.monotonic() - began:.1f}s")
    return cmd_status(settings, _args)


def cmd_down(settings: Settings, _args: argparse.Namespace) -> int:
    """Stop the stack."""
    stack.down(settings)
    print("stack stopped")
    return 0


def cmd_status(settings: Settings, _args: argparse.Namespace) -> int:
    """Show every program and backing service (--watch: the flow, from Prometheus)."""
    if getattr(_args, "watch", False):
        return cli_watch.run(settings, _args.interval, _args.count)
    rows = stack.programs(settings)
    print(f"{'PROGRAM':<16}{'STATE':<10}{'PID':>8}  DETAIL")
    if not rows:
        print("(supervisord is not running)")
    for p in rows:
        print(f"{p.name:<16}{p.state:<10}{p.pid:>8}  {p.description}")
    print()
    print(f"{'SERVICE':<16}{'REACHABLE':<10}{'VERSION':<12}ADDRESS")
    healthy = True
    for s in stack.service_statuses(settings):
        healthy &= s.reachable
        print(f"{s.name:<16}{'yes' if s.reachable else 'no':<10}{s.version or '-':<12}{s.address}")
    print(f"\nstate: {settings.state_dir}  logs: {settings.logs_dir}")
    return 0 if healthy and all(p.state == "RUNNING" for p in rows) else 1


def cmd_ensure(settings: Settings, _args: argparse.Namespace) -> int:
    """Start the backing services that do not answer (without supervisord)."""
    for status in services.ensure_all(settings):
        print(
            f"{status.name}: {status.address} version={status.version or '-'} "
            f"started={'yes' if status.started else 'no'} pid={status.pid or '-'}"
        )
    return 0


def cmd_service(settings: Settings, args: argparse.Namespace) -> int:
    """Run one backing service in the foreground (the supervisord program)."""
    return SERVICES[args.name](settings).run_foreground()


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the DuckDB service worker."""
    from tasks.worker import run_worker

    run_worker(settings)
    return 0


def cmd_model_sync(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the model-sync worker (Azure artifacts into Redis)."""
    from tasks.model_sync_worker import run_model_sync

    run_model_sync(settings)
    return 0


def cmd_beat(settings: Settings, _args: argparse.Namespace) -> int:
    """Run Celery beat (model sync schedule)."""
    from tasks.worker import run_beat

    run_beat(settings)
    return 0


def cmd_flower(settings: Settings, _args: argparse.Namespace) -> int:
    """Run Flower."""
    from tasks.worker import run_flower

    run_flower(settings)
    return 0


def cmd_bridge(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the Kafka -> Celery bridge."""
    from bridge.main import run_bridge

    run_bridge(settings)
    return 0


def cmd_grpc(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the gRPC server (settings.grpc_processes processes on its port)."""
    from grpc_server.processes import process_settings, run_group

    return run_group(settings, lambda index: _serve_grpc(process_settings(settings, index)))


def _serve_grpc(settings: Settings) -> None:
    """One gRPC server process, with transports of its own."""
    from bridge.prediction_publisher import KafkaPredictionLog
    from bridge.publisher import KafkaEventPublisher
    from grpc_server.main import run_grpc
    from tasks.app import configure
    from tasks.client.query import CeleryReader

    # The transports of Predict's fallback reads, of PushFeatures and of the prediction log
    # are built here, above both the domain and grpc_server, and passed in.
    publisher = KafkaEventPublisher(settings)
    predictions = KafkaPredictionLog(settings)
    predictions.start()
    try:
        reader = CeleryReader(configure(settings), settings.query_timeout_s)
        run_grpc(settings, reader, publisher, predictions)
    finally:
        predictions.close()
        publisher.close()


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    """Validate feature files and publish them to the features topic."""
    from bridge.producer import REJECTS_SHOWN, FileProducer
    from featurestore.ingest.event_decode import ARROW_CONTENT_TYPE, JSON_CONTENT_TYPE

    services.ensure_kafka(settings)
    content_type = ARROW_CONTENT_TYPE if args.arrow else JSON_CONTENT_TYPE
    producer = FileProducer(settings, args.rows_per_message, content_type=content_type)
    report = producer.run(args.paths, strict=args.strict)
    for reject in report.rejects[:REJECTS_SHOWN]:
        print(f"rejected {reject}", file=sys.stderr)
    if len(report.rejects) > REJECTS_SHOWN:
        print(f"... and {len(report.rejects) - REJECTS_SHOWN} more rejected", file=sys.stderr)
    if args.strict and report.rows_rejected:
        print("nothing sent: --strict and some rows were rejected", file=sys.stderr)
    print(report.summary())
    return 1 if report.rows_rejected else 0


def cmd_rebuild_online(settings: Settings, _args: argparse.Namespace) -> int:
    """Rebuild the online store (Redis) from every row in DuckDB."""
    from featurestore import constants
    from tasks.app import configure

    app = configure(settings)
    result = app.send_task(constants.TASK_REBUILD_ONLINE, queue=settings.read_queue)
    print(f"online store rebuilt: {result.get(timeout=3600)} feature values written")
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    """Model registry commands."""
    from tasks.app import configure

    return cli_models.run(settings, configure(settings), args)


def cmd_training_set(settings: Settings, args: argparse.Namespace) -> int:
    """Build a point-in-time training set (Parquet) inside the DuckDB service."""
    from featurestore import constants
    from featurestore.errors import ValidationError
    from featurestore.progress import Progress
    from featurestore.store.training import parse_max_age
    from tasks.app import configure

    if args.from_log:
        if args.features or args.max_age:
            raise ValidationError("--from-log takes the served values: no --features, --max-age")
        return cli_predictions.training_set_from_log(settings, args)
    if not args.features:
        raise ValidationError("name the features (--features a,b) or a model (--from-log MODEL)")
    ages = dict(parse_max_age(text) for text in args.max_age)
    result = configure(settings).send_task(
        constants.TASK_TRAINING_SET,
        args=[
            str(args.spine.resolve()),
            args.features.split(","),
            {name: age.total_seconds() for name, age in ages.items()},
            str(args.output.resolve()),
        ],
        queue=settings.read_queue,
    )
    with Progress("training-set", None, unit="steps") as progress:
        while not result.ready():
            info = result.info if isinstance(result.info, dict) else {}
            progress.update(int(info.get("done", progress.done)) - progress.done)
            time.sleep(0.2)
    report = result.get(timeout=10)
    print(
        f"training set: {report['rows']} rows x {report['features']} features in "
        f"{report['seconds']:.1f}s -> {report['output_path']}"
    )
    if report.get("features_without_values"):
        names = ", ".join(repr(name) for name in report["features_without_values"])
        print(f"warning: no row has a value of {names} (is the name right?)", file=sys.stderr)
    return 0


Handler = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="fstore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=(handler.__doc__ or "").strip())
        command.set_defaults(handler=handler)
        return command

    add("up", cmd_up)
    add("down", cmd_down)
    status = add("status", cmd_status)
    status.add_argument(
        "--watch", action="store_true", help="one screen of the flow, refreshed from Prometheus"
    )
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    status.add_argument("--count", type=int, default=0, help="refreshes, then exit (0: until ^C)")
    add("ensure", cmd_ensure)
    add("service", cmd_service).add_argument("name", choices=sorted(SERVICES))
    add("worker", cmd_worker)
    add("model-sync", cmd_model_sync)
    add("beat", cmd_beat)
    add("flower", cmd_flower)
    add("bridge", cmd_bridge)
    add("grpc", cmd_grpc)
    add("rebuild-online", cmd_rebuild_online)
    training = add("training-set", cmd_training_set)
    training.add_argument("spine", type=Path, help="Parquet/CSV: entity_id, timestamp[, label]")
    training.add_argument("--features", help="comma-separated feature names")
    training.add_argument(
        "--from-log",
        metavar="MODEL",
        help="the feature values MODEL was served (prediction log) instead; spine needs label",
    )
    training.add_argument(
        "--max-age",
        action="append",
        default=[],
        metavar="FEATURE=AGE",
        help="e.g. debt_to_income_ratio=30d (s, m, h, d); repeatable",
    )
    training.add_argument("--output", type=Path, required=True)
    cli_models.add_parser(sub).set_defaults(handler=cmd_model)
    cli_serving.add_parsers(sub)
    cli_predictions.add_parser(sub)
    cli_backup.add_parsers(sub)
    produce = add("produce", cmd_produce)
    produce.add_argument("paths", nargs="+", type=Path, help="files or folders")
    produce.add_argument("--rows-per-message", type=int, default=500)
    produce.add_argument(
        "--arrow",
        action="store_true",
        help="send Arrow IPC messages (bulk loads: the bridge checks whole columns, not each "
        "event); try --rows-per-message 10000",
    )
    produce.add_argument(
        "--strict", action="store_true", help="send nothing when any row is rejected"
    )
    # `fstore CMD --help` showed only the usage: each says what `fstore --help` lists.
    for listed in sub._choices_actions:
        command = sub.choices[listed.dest]
        command.description = command.description or listed.help
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = load_settings()
    nice = program_nice(settings, args.command, getattr(args, "name", None))
    if nice:
        log.info("program_priority command=%s nice=%d", args.command, lower_priority(nice))
    try:
        code = int(args.handler(settings, args))
        sys.stdout.flush()  # output still buffered meets a reader gone here
    except BrokenPipeError:
        # The reader has gone (`fstore query ... | head`): end quietly, as Unix tools do,
        # with the status a shell gives one ended by SIGPIPE; stdout to /dev/null so that
        # the interpreter's last flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except FeatureStoreError as exc:
        # A program's log keeps the event line; a person reads the plain line below, which
        # the event line only repeated, timestamped, above it.
        level = logging.ERROR if args.command in PROGRAM_COMMANDS else logging.DEBUG
        log.log(level, "command_failed command=%s error=%s", args.command, quoted(exc))
        print(f"fstore {args.command}: {exc}", file=sys.stderr)
        return 2
    return code
