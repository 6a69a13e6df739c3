"""The observability of the running stack, against the real Prometheus, Alertmanager and
Flower: every dashboard panel's query returns data once ingest, reads, predictions and a
failing model sync have run; every alert expression evaluates and the provoked alerts fire;
a stopped bridge with events waiting reaches Alertmanager as IngestionStalled."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import yaml
from azure.storage.blob import BlobServiceClient
from confluent_kafka import Producer

from featurestore import constants
from featurestore import stack as stack_module
from featurestore.services import PrometheusService
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tasks.app import configure
from tests.grpc_server.test_stack_serving import FEATURES, publish_through_azure
from tests.helpers import run_cli, wait_for_count, wait_until

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"


def get_json(url: str, basic_auth: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if basic_auth is not None:
        token = base64.b64encode(basic_auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def prom(settings: Settings, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    reply = get_json(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/{path}{query}")
    assert reply["status"] == "success", reply
    return reply["data"]


def has_numbers(data: dict[str, Any]) -> bool:
    """True when a query's result holds at least one series with a number (not NaN)."""
    return any(not math.isnan(float(r["value"][1])) for r in data["result"])


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard: panel title, expression) of every target, all instances selected."""
    return [
        (f"{path.stem}: {panel['title']}", target["expr"].replace("$instance", ".*"))
        for path in sorted(DASHBOARDS.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def produce(settings: Settings, tag: str, entities: int, features: list[str]) -> int:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    for i in range(entities):
        for j, name in enumerate(features):
            event = {"entity_id": f"{tag}{i}", "feature_name": name, "value": 0.1 * (i + j)}
            producer.produce(
                settings.features_topic, orjson.dumps({**event, "event_timestamp": now})
            )
    producer.flush(30)
    return entities * len(features)


def failing_model(settings: Settings, tmp_path: Path) -> str:
    """A promoted model whose ONNX blob is not ONNX: its sync fails, nothing is served."""
    model_id = f"obs_broken_{uuid.uuid4().hex[:6]}"
    container = BlobServiceClient.from_connection_string(
        settings.azure_connection_string
    ).get_container_client(settings.azure_container)
    container.upload_blob(f"{model_id}/model_production.onnx", b"not onnx")
    spec = tmp_path / "broken.json"
    spec.write_text(
        json.dumps(
            {
                "model_id": model_id,
                "artifact_type": "model",
                "version": "1.0.0",
                "azure_location": settings.azure_container,
                "expected_features": [{"index": 0, "name": "age_years", "type": "int"}],
            }
        )
    )
    for args in (["register", str(spec)], ["promote", model_id, "1.0.0"]):
        result = run_cli(settings, "model", *args)
        assert result.returncode == 0, result.stderr
    return model_id


def predict(settings: Settings, model_id: str, entities: list[str]) -> bool:
    """One Predict call: True when answered, False while the model is not served yet."""
    with grpc.insecure_channel(f"localhost:{settings.grpc_port}") as channel:
        stub = pb_grpc.FeatureStoreStub(channel)
        request = pb.PredictRequest(model_id=model_id, entity_ids=entities)
        try:
            return len(stub.Predict(request, timeout=30).predictions) == len(entities)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False


@pytest.fixture(scope="module")
def driven(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Ingest, reads, predictions (served, and missing a feature), a sync that changes
    nothing, a failing sync and an invalid message: every path leaves its metrics."""
    tmp_path = tmp_path_factory.mktemp("observability")
    app = configure(stack)
    tag = f"obs{uuid.uuid4().hex[:6]}_"
    names = [name for name, _ in FEATURES]
    sent = produce(stack, tag, 20, names)
    sent += produce(stack, f"{tag}half_", 1, names[:1])
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(stack.features_topic, b"not json")
    producer.flush(30)
    assert wait_for_count(app, tag, sent) == sent  # reads, through the DuckDB service

    model_id = f"obs_model_{uuid.uuid4().hex[:6]}"
    publish_through_azure(stack, model_id, tmp_path)
    broken = failing_model(stack, tmp_path)
    entities = [f"{tag}1", f"{tag}2"]
    assert wait_until(lambda: predict(stack, model_id, entities), timeout=180)
    # A labelled series starts at its first count, which rate() cannot see: the calls
    # that the panels' rates show come after Prometheus has scraped the series.
    scraped = f'fstore_predict_seconds_count{{model="{model_id}"}}'
    assert wait_until(lambda: bool(prom(stack, "query", query=scraped)["result"]), 60)
    for _ in range(20):
        assert predict(stack, model_id, entities)
    with pytest.raises(grpc.RpcError) as caught:
        predict(stack, model_id, [f"{tag}half_0"])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A second sync of the served model finds its blobs unchanged.
    app.send_task(constants.TASK_SYNC_MODELS, queue=stack.model_sync_queue).get(timeout=120)
    return {"tag": tag, "model": model_id, "broken": broken, "entity": entities[0]}


def test_prometheus_scrapes_every_program(stack: Settings) -> None:
    jobs = set(PrometheusService(stack).scrape_targets())
    assert {"kafka", "redis_exporter", "alertmanager", "flower", "bridge"} <= jobs

    def all_up() -> bool:
        result = prom(stack, "query", query="up")["result"]
        return {r["metric"]["job"]: r["value"][1] for r in result} == dict.fromkeys(jobs, "1")

    assert wait_until(all_up, timeout=90)


def test_every_dashboard_panel_query_returns_data(driven: dict[str, str], stack: Settings) -> None:
    queries = panel_queries()
    assert len(queries) >= 60
    pending = dict(queries)

    def all_have_data() -> bool:
        for name, expr in list(pending.items()):
            if has_numbers(prom(stack, "query", query=expr)):
                del pending[name]
        return not pending

    # Rates need two scrapes after the first count; one deadline bounds the whole wait.
    wait_until(all_have_data, timeout=180)
    assert not pending, f"panels without data: {sorted(pending)}"


def running_rules(settings: Settings) -> dict[str, str]:
    rules: dict[str, str] = {}
    for path in sorted((PrometheusService(settings).folder / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.update({rule["alert"]: rule["expr"] for rule in group["rules"]})
    return rules


def test_every_alert_expression_evaluates(driven: dict[str, str], stack: Settings) -> None:
    rules = running_rules(stack)
    assert len(rules) == 11
    for name, expr in rules.items():
        assert prom(stack, "query", query=expr)["resultType"] == "vector", name

    def evaluated() -> dict[str, str]:
        groups = prom(stack, "rules", type="alert")["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}

    assert wait_until(lambda: set(evaluated().values()) == {"ok"}, timeout=60), evaluated()
    assert set(evaluated()) == set(rules)


def firing(settings: Settings, alertname: str, **labels: str) -> bool:
    return any(
        a["labels"]["alertname"] == alertname
        and a["state"] == "firing"
        and labels.items() <= a["labels"].items()
        for a in prom(settings, "alerts")["alerts"]
    )


def test_the_provoked_alerts_fire(driven: dict[str, str], stack: Settings) -> None:
    assert wait_until(
        lambda: firing(
            stack, "DeadLettersRising", topic=stack.features_topic, reason="invalid_message"
        ),
        timeout=90,
    )
    assert wait_until(lambda: firing(stack, "ModelSyncFailing", model=driven["broken"]), timeout=90)
    # The served model synced a moment ago: not stale.
    assert not firing(stack, "ModelSyncStale", model=driven["model"])


def alertmanager_alerts(settings: Settings, alertname: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"', "active": "true"})
    url = f"http://127.0.0.1:{settings.alertmanager_port}/api/v2/alerts?{query}"
    alerts: list[dict[str, Any]] = get_json(url)
    return alerts


def test_a_stopped_bridge_with_events_waiting_reaches_alertmanager(stack: Settings) -> None:
    app = configure(stack)
    tag = f"stall{uuid.uuid4().hex[:6]}_"
    # One event through first: the group has a committed offset that then stands still.
    assert wait_for_count(app, tag, produce(stack, tag, 1, ["f"])) == 1
    stack_module.stop_program(stack, "bridge")
    try:
        waiting = produce(stack, f"{tag}w_", 5, ["f"])

        def stalled() -> bool:
            alerts = alertmanager_alerts(stack, "IngestionStalled")
            return any(a["labels"].get("topic") == stack.features_topic for a in alerts)

        # Lag above 0 for a minute and no commit for two, evaluated every second here.
        assert wait_until(stalled, timeout=300)
        [alert] = [
            a
            for a in alertmanager_alerts(stack, "IngestionStalled")
            if a["labels"]["topic"] == stack.features_topic
        ]
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["description"].count("Check first") == 1
        assert any(
            a["labels"].get("job") == "bridge" for a in alertmanager_alerts(stack, "ProgramDown")
        )
    finally:
        stack_module.start_program(stack, "bridge")
    assert wait_for_count(app, f"{tag}w_", waiting) == waiting


def test_flower_api_lists_the_workers_and_the_tasks_that_ran(
    driven: dict[str, str], stack: Settings
) -> None:
    base = f"http://127.0.0.1:{stack.flower_port}/api"

    def workers() -> set[str]:
        workers = get_json(f"{base}/workers?refresh=1", stack.flower_basic_auth())
        return {name.split("@")[0] for name in workers}

    assert wait_until(lambda: {"duckdb", "model-sync"} <= workers(), timeout=60)
    tasks = get_json(f"{base}/tasks?limit=100000", stack.flower_basic_auth())
    succeeded = {t["name"] for t in tasks.values() if t["state"] == "SUCCESS"}
    assert {
        constants.TASK_WRITE_BATCH,
        constants.TASK_WRITE_PREDICTIONS,
        constants.TASK_SYNC_MODELS,
    } <= succeeded
    worker_of = {t["name"]: t["worker"].split("@")[0] for t in tasks.values() if t.get("worker")}
    assert worker_of[constants.TASK_WRITE_BATCH] == "duckdb"
    assert worker_of[constants.TASK_SYNC_MODELS] == "model-sync"


def test_status_watch_shows_the_flow_from_prometheus(
    driven: dict[str, str], stack: Settings
) -> None:
    # Predict now: the p99 is over the last 5 minutes, and the fixture's calls may be older.
    for _ in range(5):
        assert predict(stack, driven["model"], [driven["entity"]])
    rate = 'sum(rate(fstore_grpc_request_seconds_count{method="Predict"}[1m])) > 0'
    assert wait_until(lambda: bool(prom(stack, "query", query=rate)["result"]), 60)
    result = run_cli(stack, "status", "--watch", "--count", "1", "--interval", "0")
    assert result.returncode == 0, result.stderr
    screen = result.stdout
    model_line = re.search(rf"\n{driven['model']} +3\.1\.0 +(\d+)([smh]) ago\n", screen)
    assert model_line is not None, screen
    events = re.search(r"events/s (\S+)", screen)
    assert events is not None and events.group(1) != "-", screen
    assert re.search(rf"lag .*{stack.features_topic} \d+", screen), screen
    assert re.search(r"Predict p99 \d+\.\d+ ms", screen), screen
    # The broken model's sync fails at every beat period: its alert stays firing.
    assert f"ModelSyncFailing [warning] Model sync of {driven['broken']} failing" in screen
