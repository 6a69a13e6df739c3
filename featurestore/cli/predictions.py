"""`fstore skew` and `fstore training-set --from-log`: the prediction log, read back inside
the DuckDB service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from featurestore import constants
from featurestore.settings import Settings
from featurestore.store.skew import parse_time

TASK_TIMEOUT_S = 3600.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.3f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def cmd_skew(settings: Settings, args: argparse.Namespace) -> int:
    """Training-serving skew of a model's logged predictions, per feature."""
    from tasks.app import configure

    # Parsed here too, so a bad time is reported before anything is sent.
    since = None if args.since is None else parse_time(args.since).isoformat()
    until = None if args.until is None else parse_time(args.until).isoformat()
    output = None if args.output is None else str(args.output.resolve())
    result = configure(settings).send_task(
        constants.TASK_SKEW, args=[args.model_id, since, until, output], queue=settings.read_queue
    )
    report: dict[str, Any] = result.get(timeout=TASK_TIMEOUT_S)
    if args.format == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0 if report["predictions"] else 1
    if not report["predictions"]:
        print(f"no logged predictions of {args.model_id} with stored features in that range")
        return 1
    print(
        f"model {args.model_id}: {report['predictions']} predictions, "
        f"{report['rows']} feature values compared"
    )
    rows = [
        [
            "FEATURE",
            "PREDICTIONS",
            "DIFFERED",
            "SHARE",
            "NO_TRUTH",
            "MEAN_ABS_DIFF",
            "STALENESS_P50",
            "STALENESS_P99",
        ]
    ]
    for f in report["features"]:
        mean = f["mean_abs_diff"]
        rows.append(
            [
                f["feature_name"],
                str(f["predictions"]),
                str(f["differed"]),
                f"{f['differed_share']:.2%}",
                str(f["no_truth"]),
                "-" if mean is None else f"{mean:.6g}",
                _duration(f["staleness_p50_s"]),
                _duration(f["staleness_p99_s"]),
            ]
        )
    _print_table(rows)
    if report["output_path"]:
        print(f"rows -> {report['output_path']}")
    return 0


def training_set_from_log(settings: Settings, args: argparse.Namespace) -> int:
    """`fstore training-set SPINE --from-log MODEL --output OUT`."""
    from tasks.app import configure

    result = configure(settings).send_task(
        constants.TASK_TRAINING_SET_FROM_LOG,
        args=[str(args.spine.resolve()), args.from_log, str(args.output.resolve())],
        queue=settings.read_queue,
    )
    report: dict[str, Any] = result.get(timeout=TASK_TIMEOUT_S)
    print(
        f"training set from the prediction log of {args.from_log}: {report['rows']} rows "
        f"({report['matched']} with a served prediction) x {len(report['features'])} features "
        f"in {report['seconds']:.1f}s -> {report['output_path']}"
    )
    return 0


def add_parser(sub: Any) -> None:
    """The skew subcommand."""
    skew = sub.add_parser("skew", help=(cmd_skew.__doc__ or "").strip())
    skew.set_defaults(handler=cmd_skew)
    skew.add_argument("model_id", metavar="MODEL")
    skew.add_argument("--since", metavar="T", help="served at or after (ISO-8601, UTC if no zone)")
    skew.add_argument("--until", metavar="T", help="served before (ISO-8601)")
    skew.add_argument("--output", type=Path, help="rows as .parquet")
    skew.add_argument("--format", choices=["table", "json"], default="table")
