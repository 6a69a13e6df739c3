"""The short form of `make faults`: under steady ingest, reads and Predicts, SIGKILL the
parts of the stack that the bridge's fault tests do not (the gRPC server, the model-sync
worker, beat, Azurite, Prometheus, then the worker and the bridge together); afterwards
DuckDB holds exactly the events produced, the online store equals DuckDB's newest values,
and the model is served at its production version. Each kill's figures go to the log only:
timings are the benchmark's business (bench/faults.py), not a test's."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from bench.faults import Plan, run_faults, summary, table
from featurestore.settings import Settings

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

KILLS: list[tuple[str, ...]] = [
    ("grpc",),
    ("model-sync",),
    ("beat",),
    ("azurite",),
    ("prometheus",),
    ("duckdb-worker", "bridge"),
]


def test_nothing_lost_or_duplicated_when_parts_of_the_stack_are_killed(
    stack: Settings, tmp_path: Path
) -> None:
    model_id = f"fault_{uuid.uuid4().hex[:6]}"
    plan = Plan(kills=KILLS, rate=1000, entities=500, warmup_s=3, between_s=1, seed_entities=100)
    report = run_faults(stack, tmp_path, plan, model_id=model_id, checked_models=[model_id])
    log.info("faults_short_form\n%s", table(report))
    log.info("faults_short_form_json %s", json.dumps(summary(report)))
    assert report.delivery_errors == []
    assert report.produced > 0
    assert report.checks.stored == report.produced
    assert report.checks.checksum_equal
    assert report.checks.online_compared > 0
    assert report.checks.online_mismatches == 0
    assert report.checks.model_mismatches == []
    # Every part came back and ingestion moved again after each restart (how soon is
    # measured by make faults).
    assert [k.name for k in report.kills] == ["+".join(parts) for parts in KILLS]
    assert all(k.ingest_stall_s is not None for k in report.kills), summary(report)
