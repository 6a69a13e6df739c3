"""make faults: SIGKILL each part of the stack in turn under steady load, then check that
nothing was lost or duplicated.

Keeps a steady ingest (events into Kafka), steady reads (latest features through the DuckDB
service) and steady Predicts (gRPC) running, and kills with SIGKILL, one at a time, the
bridge, the DuckDB service worker, the model-sync worker, Celery beat, the gRPC server,
Redis, the Kafka broker, Azurite and Prometheus, then the worker and the bridge together.
Per kill: how long Predict and reads failed, and how long ingestion stalled after the
restart. At the end: DuckDB holds exactly the events produced (count and checksum), the
online store equals DuckDB's newest values, the served models are the production ones.
Exit 1 when ingestion took longer than the recovery target to move again after a restart,
or when an end check fails. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import bench_settings, running_stack
from bench.fault_checks import Checks, final_checks, seed_model
from bench.fault_kills import (
    ALL_KILLS,
    RECOVERY_TARGET_S,
    KillRecord,
    landing_times,
    longest_gap,
    settle,
    strike,
    wait_recovered,
)
from bench.fault_traffic import Traffic
from featurestore.logs import setup_logging
from featurestore.settings import Settings

log = logging.getLogger("bench.faults")

MODEL_ID = "fault_credit_v1"


@dataclass(frozen=True)
class Plan:
    """How much load and which kills."""

    kills: list[tuple[str, ...]] = field(default_factory=lambda: list(ALL_KILLS))
    rate: float = 2000.0  # events/s into Kafka
    entities: int = 2000  # stream entities, each updated again and again
    warmup_s: float = 10.0
    between_s: float = 5.0  # steady load after a recovery, before the next kill
    seed_entities: int = 300


@dataclass
class Report:
    """What a fault run measured and found."""

    kills: list[KillRecord]
    checks: Checks
    produced: int
    delivery_errors: list[str]
    seconds: float
    load_average: tuple[float, float, float]

    @property
    def ok(self) -> bool:
        """Every end check holds and every kill recovered within the target."""
        return (
            self.checks.ok and not self.delivery_errors and all(k.within_target for k in self.kills)
        )


def run_faults(
    settings: Settings,
    folder: Path,
    plan: Plan,
    model_id: str = MODEL_ID,
    checked_models: list[str] | None = None,
) -> Report:
    """The fault run on a running stack; model_id is trained, published and served first.
    The served models checked at the end are checked_models (default: every one)."""
    began = time.monotonic()
    tag = f"flt{uuid.uuid4().hex[:6]}_"
    seed_prefix = f"app{tag}"  # not under the stream's prefix: counted apart
    log.info("fault_seed model=%s entities=%d", model_id, plan.seed_entities)
    applicants = seed_model(settings, folder, seed_prefix, model_id, plan.seed_entities)
    stream_entities = [f"{tag}{i}" for i in range(plan.entities)]
    records: list[KillRecord] = []
    with Traffic(
        settings,
        (folder, tag, plan.entities),
        stream_entities,
        (model_id, applicants),
        rate=plan.rate,
    ) as traffic:
        log.info("fault_warmup seconds=%.0f rate=%.0f", plan.warmup_s, plan.rate)
        time.sleep(plan.warmup_s)
        for parts in plan.kills:
            record = strike(settings, parts, traffic)
            wait_recovered(settings, record, traffic, tag)
            if records:
                settle(records[-1], traffic, record.killed_at)
            records.append(record)
            log.info(
                "fault_recovered parts=%s down_s=%.1f ingest_stall_s=%s",
                record.name,
                record.down_s,
                "none" if record.ingest_stall_s is None else f"{record.ingest_stall_s:.1f}",
            )
            time.sleep(plan.between_s)
        settle(records[-1], traffic, time.time())
    times = landing_times(settings, tag)
    for record in records:
        record.ingest_gap_s = longest_gap(times, record.restarted_at, record.window_end)
    produced = traffic.sent_rows
    log.info("fault_checks produced=%d delivered=%d", produced, traffic.delivered_rows)
    checks = final_checks(settings, tag, produced, plan.entities, seed_prefix, checked_models)
    return Report(
        kills=records,
        checks=checks,
        produced=produced,
        delivery_errors=traffic.delivery_errors,
        seconds=time.monotonic() - began,
        load_average=os.getloadavg(),
    )


def table(report: Report) -> str:
    """Each kill's figures, then the end checks, for people."""
    lines = [
        f"{'KILLED':<22}{'DOWN s':>8}{'INGEST STALL s':>16}{'LONGEST GAP s':>15}"
        f"{'PREDICT FAIL s':>16}{'READ FAIL s':>13}  ERRORS"
    ]
    for k in report.kills:
        stall = "never" if k.ingest_stall_s is None else f"{k.ingest_stall_s:.1f}"
        gap = "-" if k.ingest_gap_s is None else f"{k.ingest_gap_s:.1f}"
        flag = "" if k.within_target else f"  (target {RECOVERY_TARGET_S:.0f} s MISSED)"
        lines.append(
            f"{k.name:<22}{k.down_s:>8.1f}{stall:>16}{gap:>15}{k.predict_failed_s:>16.1f}"
            f"{k.read_failed_s:>13.1f}  {','.join(k.error_kinds) or '-'}{flag}"
        )
    c = report.checks
    lines += [
        "",
        f"events produced {c.produced}, stored {c.stored}, checksum equal: {c.checksum_equal}",
        f"online store vs DuckDB newest: {c.online_mismatches} of {c.online_compared} differ",
        f"served models vs production: {'; '.join(c.model_mismatches) or 'equal'}",
        f"delivery errors: {', '.join(report.delivery_errors) or 'none'}",
        "load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in report.load_average),
        f"verdict: {'PASS' if report.ok else 'FAIL'}",
    ]
    return "\n".join(lines)


def summary(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    kills = []
    for k in report.kills:
        figures = {
            key: round(value, 2) if isinstance(value, float) else value
            for key, value in asdict(k).items()
            if key not in ("killed_at", "restarted_at", "recovered_at", "window_end")
        }
        kills.append({**figures, "down_s": round(k.down_s, 2), "within_target": k.within_target})
    return {
        "ok": report.ok,
        "recovery_target_s": RECOVERY_TARGET_S,
        "kills": kills,
        "produced": report.produced,
        "stored": report.checks.stored,
        "exactly_once": report.checks.exactly_once,
        "online_mismatches": report.checks.online_mismatches,
        "online_compared": report.checks.online_compared,
        "model_mismatches": report.checks.model_mismatches,
        "delivery_errors": report.delivery_errors,
        "seconds": round(report.seconds, 1),
        "load_average": [round(x, 2) for x in report.load_average],
    }


def main(argv: list[str] | None = None) -> int:
    """Start a stack of its own, run the faults, print the table and the JSON last."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument(
        "--only", nargs="*", help="kill only these (e.g. bridge redis worker+bridge)"
    )
    parser.add_argument("--rate", type=float, default=Plan.rate)
    args = parser.parse_args(argv)
    kills = ALL_KILLS
    if args.only:
        alias = {"worker": "duckdb-worker"}
        kills = [tuple(alias.get(x, x) for x in p.split("+")) for p in args.only]
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="fstore-faults-"))
    settings = bench_settings(folder / "state")
    report = None
    try:
        with running_stack(settings):
            report = run_faults(settings, folder, Plan(kills=kills, rate=args.rate))
    finally:
        # The logs of a failed run are what tells why: kept.
        if report is not None and report.ok:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs kept in {settings.logs_dir}", file=sys.stderr)
    print(table(report))
    print(json.dumps(summary(report)))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
