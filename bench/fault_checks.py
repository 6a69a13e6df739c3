"""The fault run's set-up (the demo's features and model, served) and its final checks:
exactly the events produced, the online store equal to DuckDB's newest values, and the
served models the production ones."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from confluent_kafka import Consumer, TopicPartition

from bench.fault_traffic import CHECKSUM_SQL, expected_checksum
from bridge.producer import FileProducer
from demo import client, data, model, publish
from featurestore.constants import online_feature_key
from featurestore.settings import Settings
from featurestore.store.online import parse_stored
from featurestore.store.registry import ModelRecord, list_sql
from grpc_server.generated import featurestore_pb2 as pb
from tasks.app import configure
from tasks.client.query import query, query_table

log = logging.getLogger("bench.faults")


def seed_model(
    settings: Settings, folder: Path, prefix: str, model_id: str, entities: int
) -> list[str]:
    """The demo's applicants' features through Kafka and its model trained, published and
    served under model_id; the applicants' ids once Predict answers for them."""
    credit = data.generate(entities, prefix=prefix)
    path = folder / f"{prefix}features.parquet"
    data.write_parquet(credit, path, dt.datetime.now(dt.UTC))
    FileProducer(settings, 1000).run([path])
    artifacts = model.export(model.train(credit))
    etags = publish.upload(settings, model_id, artifacts)
    specs = publish.specs(settings, model_id, publish.VERSION, data.FEATURES)
    publish.register_and_promote(settings, configure(settings), specs, folder)
    channel, stub = client.connect(settings)
    with channel:
        client.wait_served(stub, model_id, publish.VERSION, etags, timeout_s=300)
        client.wait_online(
            stub, credit.entity_ids, data.FEATURE_NAMES, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        )
        shown = credit.entity_ids[:5]
        expected = model.InProcessModel(artifacts).scores(credit.rows(shown))
        served, _ = client.predict_current(
            stub, model_id, shown, expected, tolerance=1e-5, timeout_s=60
        )
    if not np.allclose(served.scores, expected, rtol=0, atol=1e-5):
        raise RuntimeError(f"{model_id}: the served scores differ from the in-process ones")
    return credit.entity_ids


def wait_all_committed(settings: Settings, timeout: float = 600) -> bool:
    """Wait until the bridge's group has committed the features topic to its end: every
    batch is then in DuckDB and none is waiting for a resend."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.consumer_group})
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = consumer.list_topics(settings.features_topic, timeout=10)
            parts = [
                TopicPartition(settings.features_topic, p)
                for p in meta.topics[settings.features_topic].partitions
            ]
            committed = consumer.committed(parts, timeout=10)
            ends = [consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts]
            if all(c.offset == end for c, end in zip(committed, ends, strict=True)):
                return True
            time.sleep(1.0)
        return False
    finally:
        consumer.close()


@dataclass
class Checks:
    """What the end of a fault run found."""

    produced: int
    stored: int
    checksum_equal: bool
    online_mismatches: int
    online_compared: int
    model_mismatches: list[str]

    @property
    def exactly_once(self) -> bool:
        """DuckDB holds exactly the events produced."""
        return self.produced == self.stored and self.checksum_equal

    @property
    def ok(self) -> bool:
        """Every end check holds."""
        return self.exactly_once and not self.online_mismatches and not self.model_mismatches


def check_exactly_once(
    settings: Settings, tag: str, produced: int, entities: int
) -> tuple[int, bool]:
    """Rows of the stream stored, and whether count and checksum equal the produced ones."""
    table = query_table(
        configure(settings), CHECKSUM_SQL.format(source="features"), [tag], timeout=120
    )
    stored = (int(table.column("n")[0].as_py()), str(table.column("checksum")[0].as_py()))
    return stored[0], stored == expected_checksum(tag, produced, entities)


NEWEST_SQL = """SELECT entity_id, feature_name,
                       arg_max(value, (event_timestamp, created_at, value)) AS value,
                       epoch_us(max(event_timestamp)) AS micros
                FROM features WHERE starts_with(entity_id, ?) GROUP BY ALL"""


def online_mismatches(settings: Settings, prefix: str) -> tuple[int, int]:
    """(values differing between Redis and DuckDB's newest, values compared) for the
    entities with this prefix; a value missing on either side counts as differing."""
    newest: pa.Table = query_table(configure(settings), NEWEST_SQL, [prefix], timeout=120)
    in_duckdb = {
        (e, f): (int(m), float(v))
        for e, f, v, m in zip(
            *(
                newest.column(c).to_pylist()
                for c in ("entity_id", "feature_name", "value", "micros")
            ),
            strict=True,
        )
    }
    entities = sorted(set(pc.unique(newest.column("entity_id")).to_pylist()))
    online = redis.Redis.from_url(settings.redis_url)
    in_redis: dict[tuple[str, str], tuple[int, float]] = {}
    for start in range(0, len(entities), 500):
        chunk = entities[start : start + 500]
        pipe = online.pipeline(transaction=False)
        for entity in chunk:
            pipe.hgetall(online_feature_key(entity))
        for entity, fields in zip(chunk, pipe.execute(), strict=True):
            for name, stored in fields.items():
                in_redis[(entity, name.decode())] = parse_stored(stored)
    keys = in_duckdb.keys() | in_redis.keys()
    differing = [k for k in keys if in_duckdb.get(k) != in_redis.get(k)]
    for key in differing[:5]:
        log.error(
            "fault_online_mismatch key=%s duckdb=%s redis=%s",
            key,
            in_duckdb.get(key),
            in_redis.get(key),
        )
    return len(differing), len(keys)


def served_mismatches(settings: Settings, model_ids: list[str] | None = None) -> list[str]:
    """Production models (of model_ids, or all) not served at their production version over
    gRPC, and served models that are not production."""
    sql, params = list_sql(None, "production")
    records = query(configure(settings), sql, params, ModelRecord, timeout=60)
    production = {
        r.model_id: r.version for r in records if model_ids is None or r.model_id in model_ids
    }
    channel, stub = client.connect(settings)
    out = []
    with channel:
        listed = set(stub.ListModels(pb.ListModelsRequest(), timeout=10).model_ids)
        if model_ids is not None:
            listed &= set(model_ids)
        out += [f"{m}: served, not production" for m in sorted(listed - production.keys())]
        for model_id, version in sorted(production.items()):
            try:
                got = stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=10)
            except grpc.RpcError as exc:
                out.append(f"{model_id}: GetModel {exc.code().name}")
                continue
            if not got.served or got.version != version:
                out.append(f"{model_id}: served={got.served} version={got.version} want {version}")
    return out


def final_checks(
    settings: Settings,
    tag: str,
    produced: int,
    entities: int,
    seed_prefix: str,
    model_ids: list[str] | None,
) -> Checks:
    """Every end check, once the bridge has committed everything produced."""
    if not wait_all_committed(settings):
        log.error("fault_not_all_committed topic=%s", settings.features_topic)
    stored, equal = check_exactly_once(settings, tag, produced, entities)
    mismatched, compared = online_mismatches(settings, tag)
    seed_mismatched, seed_compared = online_mismatches(settings, seed_prefix)
    return Checks(
        produced=produced,
        stored=stored,
        checksum_equal=equal,
        online_mismatches=mismatched + seed_mismatched,
        online_compared=compared + seed_compared,
        model_mismatches=served_mismatches(settings, model_ids),
    )
