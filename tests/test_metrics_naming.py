"""Each program's metric names: Prometheus conventions, and no program exports another's
(from each program's registry, then scraped from the running stack)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import urllib.request
import uuid

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from featurestore import metrics
from featurestore.settings import Settings
from tasks.app import configure
from tests.helpers import wait_for_count, wait_until

# The process and platform collectors every program serves beside its own.
STANDARD = re.compile(r"^(process|python)_")
NAME = re.compile(r"^fstore_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Labels that would grow with the data (one series per entity, request or message).
UNBOUNDED_LABELS = {"entity", "entity_id", "request_id", "offset", "message", "error", "key"}
SHARED = {"fstore_up", "fstore_failures"}
PORTS = {
    "duckdb_worker": "metrics_port_worker",
    "bridge": "metrics_port_bridge",
    "grpc": "metrics_port_grpc",
    "beat": "metrics_port_beat",
    "model_sync": "metrics_port_model_sync",
}


def families(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names seen in samples), standard collectors left out."""
    found: dict[str, tuple[str, set[str]]] = {}
    for family in registry.collect():
        if not STANDARD.match(family.name):
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            found[family.name] = (family.type, labels)
    return found


def program_families(program: str) -> dict[str, tuple[str, set[str]]]:
    """The families a program's registry serves, with the label names its metrics declare
    (a labelled metric has no samples until first used)."""
    found = families(metrics.registry_for(program))
    for collector in (*metrics.SHARED, *metrics.PROGRAMS[program]):
        declared: tuple[str, ...] = tuple(
            getattr(collector, "_labelnames", None) or getattr(collector, "labelnames", None) or ()
        )
        for family in collector.collect():
            found[family.name][1].update(declared)
    return found


def violations(name: str, kind: str, labels: set[str]) -> list[str]:
    """What breaks the conventions in one family (prometheus_client's family names of
    counters lack the _total it writes on every sample)."""
    problems = []
    if not NAME.match(name):
        problems.append("not snake_case under fstore_")
    if re.search(r"_(total|count|sum|bucket)$", name):
        problems.append("ends with a suffix Prometheus reserves for counters and histograms")
    if re.search(r"(milli|micro|nano)seconds|_ms$|_us$|minutes|hours|kilobytes|megabytes", name):
        problems.append("not in a base unit (seconds, bytes)")
    if kind in ("histogram", "summary") and not re.search(r"_(seconds|bytes)$", name):
        problems.append(f"a {kind} without its unit (_seconds or _bytes) at the end")
    if "timestamp" in name and not name.endswith("_timestamp_seconds"):
        problems.append("a timestamp not in _timestamp_seconds")
    if kind not in ("counter", "gauge", "histogram", "summary", "info"):
        problems.append(f"untyped ({kind})")
    problems += [f"label {label} is unbounded" for label in labels & UNBOUNDED_LABELS]
    return problems


@pytest.mark.parametrize("program", sorted(metrics.PROGRAMS))
def test_each_programs_metric_names_follow_the_conventions(program: str) -> None:
    found = program_families(program)
    assert set(found) >= SHARED
    assert set(found) - SHARED, f"{program} has no metrics of its own"
    problems = {name: violations(name, kind, labels) for name, (kind, labels) in found.items()}
    assert {name: p for name, p in problems.items() if p} == {}


@pytest.mark.parametrize("program", sorted(metrics.PROGRAMS))
def test_promtool_finds_nothing_to_lint(program: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    text = generate_latest(metrics.registry_for(program))
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, b"")


def test_no_program_exports_anothers_metrics() -> None:
    owned = {p: set(program_families(p)) - SHARED for p in metrics.PROGRAMS}
    for program, names in owned.items():
        for other, other_names in owned.items():
            if other != program:
                assert not names & other_names, f"{program} and {other} both export them"


def test_every_defined_metric_has_one_owner() -> None:
    # The default registry holds every metric the project defines (and nothing serves it):
    # one left out of metrics.PROGRAMS would be served by no program.
    defined = set(families(REGISTRY)) - SHARED
    owned = set().union(*(set(program_families(p)) for p in metrics.PROGRAMS))
    assert {name for name in defined if name.startswith("fstore_")} - owned == set()


def test_the_checks_catch_a_bad_name() -> None:
    # The rules above fail on the mistakes they are written for.
    registry = CollectorRegistry()
    Histogram("fstore_latency", "no unit", registry=registry)
    Gauge("fstore_sent_total", "a gauge named like a counter", registry=registry)
    Gauge("fstore_last_ok_timestamp", "no unit", registry=registry)
    Counter("fstore_rows", "per entity", ["entity_id"], registry=registry).labels("e1").inc()
    Gauge("fstore_took_milliseconds", "not a base unit", registry=registry)
    found = families(registry)
    assert all(violations(name, kind, labels) for name, (kind, labels) in found.items())
    assert len(found) == 5


def test_an_unknown_program_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'brdige'.*known: duckdb_worker, bridge"):
        metrics.registry_for("brdige")


def scrape(settings: Settings, program: str) -> str | None:
    """The program's /metrics text, None while its port does not answer."""
    port = getattr(settings, PORTS[program])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def scraped_families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names) of an exposition, standard collectors left out."""
    found: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if not STANDARD.match(family.name):
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            found[family.name] = (family.type, labels)
    return found


@pytest.mark.integration
@pytest.mark.parametrize("program", sorted(PORTS))
def test_each_running_program_serves_only_its_own_metrics(stack: Settings, program: str) -> None:
    assert set(PORTS) == set(metrics.PROGRAMS)
    # A program serves its port once started; supervisord may still be starting it.
    assert wait_until(lambda: scrape(stack, program) is not None), f"{program} not serving"
    found = scraped_families(scrape(stack, program) or "")
    assert set(found) == set(program_families(program))
    problems = {name: violations(name, kind, labels) for name, (kind, labels) in found.items()}
    assert {name: p for name, p in problems.items() if p} == {}


Labels = frozenset[tuple[str, str]]


def sample_values(settings: Settings, program: str, name: str) -> dict[Labels, float]:
    """Labels -> value of one sample name served by a running program."""
    text = scrape(settings, program) or ""
    return {
        frozenset(s.labels.items()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@pytest.mark.integration
def test_the_stack_reports_freshness_lag_queues_and_commits(stack: Settings) -> None:
    tag = f"m{uuid.uuid4().hex[:8]}_"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    event = {"entity_id": f"{tag}0", "feature_name": "f", "value": 1.0, "event_timestamp": now}
    producer.produce(stack.features_topic, orjson.dumps(event))
    assert producer.flush(30) == 0
    assert wait_for_count(configure(stack), tag, 1) == 1

    def counted(program: str, name: str) -> float:
        return sum(sample_values(stack, program, name).values())

    kafka_count = "fstore_freshness_kafka_to_online_seconds_count"
    assert wait_until(lambda: counted("duckdb_worker", kafka_count) >= 1)
    assert counted("duckdb_worker", "fstore_freshness_event_to_commit_seconds_count") >= 1
    assert wait_until(lambda: counted("bridge", "fstore_bridge_last_commit_timestamp_seconds") > 0)
    queues = {
        dict(labels)["queue"]
        for labels in sample_values(stack, "beat", "fstore_celery_queue_length")
    }
    assert queues == {stack.write_queue, stack.read_queue, stack.model_sync_queue}
    # The bridge committed past the event: beat sees the group's offset and no lag left.
    features = frozenset({("topic", stack.features_topic), ("partition", "0")})

    def caught_up() -> bool:
        lag = sample_values(stack, "beat", "fstore_kafka_consumer_lag_messages")
        offsets = sample_values(stack, "beat", "fstore_kafka_committed_offset")
        return lag.get(features) == 0 and offsets.get(features, 0) >= 1

    assert wait_until(caught_up)
