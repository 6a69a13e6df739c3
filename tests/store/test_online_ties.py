"""One tie rule for the online store, the latest-values table and its rebuild: at equal
event_timestamp the row DuckDB wrote last wins, then the larger value; a redelivered batch
keeps its first write's created_at (a DuckDBService in this process, on the test Redis)."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pyarrow as pa

from featurestore.constants import online_feature_key
from featurestore.ingest import write_batch
from featurestore.store.database import OffsetSpan
from featurestore.store.online import as_text, from_micros
from featurestore.store.service import DuckDBService

T0 = dt.datetime(2024, 3, 1)
Stored = dict[tuple[str, str], tuple[float, dt.datetime, dt.datetime]]


class Batches:
    """Write batches of one topic partition through the service, each at its own offsets."""

    def __init__(self, service: DuckDBService) -> None:
        self.service = service
        self.topic = f"t{uuid.uuid4().hex[:8]}"
        self.next_offset = 0
        self.sent: list[tuple[bytes, OffsetSpan]] = []

    def write(self, rows: list[tuple[str, str, float, dt.datetime]]) -> int:
        """Write a new batch; returns its index (for redelivery)."""
        first = self.next_offset
        self.next_offset += len(rows)
        table = pa.table(
            {
                "entity_id": [r[0] for r in rows],
                "feature_name": [r[1] for r in rows],
                "value": [r[2] for r in rows],
                "event_timestamp": pa.array([r[3] for r in rows], pa.timestamp("us")),
                "offset": list(range(first, self.next_offset)),
                "kafka_timestamp": pa.nulls(len(rows), pa.timestamp("ms")),
            }
        )
        self.sent.append(
            (write_batch.encode(table), OffsetSpan(self.topic, 0, first, self.next_offset - 1))
        )
        return self.redeliver(len(self.sent) - 1)

    def redeliver(self, index: int) -> int:
        payload, span = self.sent[index]
        self.service.write_batch(payload, span)
        return index


def latest_table(service: DuckDBService, entities: list[str]) -> Stored:
    assert service.merger.wait_merged(timeout=60)
    rows = (
        service.store.cursor()
        .execute(
            "SELECT entity_id, feature_name, value, event_timestamp, created_at "
            "FROM latest_features WHERE list_contains(?, entity_id)",
            [entities],
        )
        .fetchall()
    )
    return {(e, f): (v, ts, created) for e, f, v, ts, created in rows}


def online(service: DuckDBService, entities: list[str]) -> Stored:
    """The online store's values with the created_at each carries."""
    found: Stored = {}
    for entity in entities:
        raw = service.online.client.hgetall(online_feature_key(entity))
        for field, stored in raw.items():
            micros, value, created = as_text(stored).split(":")
            found[(entity, as_text(field))] = (
                float(value),
                from_micros(int(micros)),
                from_micros(int(created)),
            )
    return found


def test_equal_event_times_across_batches_in_both_orders(service: DuckDBService) -> None:
    tag = uuid.uuid4().hex[:8]
    ab, ba = f"{tag}ab", f"{tag}ba"
    batches = Batches(service)
    # The same two events, written in opposite orders for two entities: the later write wins
    # whatever the value (3.0 loses to 1.0 when 1.0 is written last).
    batches.write([(ab, "f", 3.0, T0)])
    batches.write([(ab, "f", 1.0, T0), (ba, "f", 1.0, T0)])
    batches.write([(ba, "f", 3.0, T0)])
    table = latest_table(service, [ab, ba])
    assert table[(ab, "f")][0] == 1.0 and table[(ba, "f")][0] == 3.0
    assert online(service, [ab, ba]) == table


def test_equal_event_time_and_write_the_larger_value_wins(service: DuckDBService) -> None:
    entity = f"{uuid.uuid4().hex[:8]}v"
    Batches(service).write([(entity, "f", 2.0, T0), (entity, "f", 5.0, T0), (entity, "f", 4.0, T0)])
    table = latest_table(service, [entity])
    assert table[(entity, "f")][0] == 5.0
    assert online(service, [entity]) == table


def test_a_redelivered_older_batch_does_not_overwrite(service: DuckDBService) -> None:
    entity = f"{uuid.uuid4().hex[:8]}r"
    batches = Batches(service)
    older = batches.write([(entity, "f", 9.0, T0), (entity, "g", 1.0, T0)])
    batches.write([(entity, "f", 2.0, T0), (entity, "g", 0.5, T0 - dt.timedelta(seconds=1))])
    before = online(service, [entity])
    assert before[(entity, "f")][0] == 2.0 and before[(entity, "g")][0] == 1.0
    batches.redeliver(older)  # all duplicates: re-applied with the first write's created_at
    assert online(service, [entity]) == before == latest_table(service, [entity])


def test_a_lost_online_update_is_applied_by_the_redelivery(service: DuckDBService) -> None:
    entity = f"{uuid.uuid4().hex[:8]}l"
    batches = Batches(service)
    first = batches.write([(entity, "f", 7.0, T0)])
    # As if the worker died between the DuckDB commit and the online update.
    service.online.client.delete(online_feature_key(entity))
    batches.write([(entity, "g", 1.0, T0)])
    batches.redeliver(first)
    assert online(service, [entity]) == latest_table(service, [entity])


def test_random_batches_and_redeliveries_match_the_latest_table(service: DuckDBService) -> None:
    rng = random.Random(14)
    tag = uuid.uuid4().hex[:8]
    entities = [f"{tag}e{i}" for i in range(6)]
    batches = Batches(service)
    for _ in range(40):
        if batches.sent and rng.random() < 0.3:
            batches.redeliver(rng.randrange(len(batches.sent)))
            continue
        batches.write(
            [
                (
                    rng.choice(entities),
                    rng.choice("fg"),
                    float(rng.randrange(4)),
                    T0 + dt.timedelta(seconds=rng.randrange(3)),
                )
                for _ in range(rng.randrange(1, 6))
            ]
        )
    table = latest_table(service, entities)
    assert online(service, entities) == table
    # The rebuild follows the same rule: nothing to change, and the same values from empty.
    assert service.rebuild_online() == 0
    service.online.client.delete(*[online_feature_key(e) for e in entities])
    service.rebuild_online()
    assert online(service, entities) == table


def test_rebuild_replaces_a_value_stored_without_its_created_at(service: DuckDBService) -> None:
    entity = f"{uuid.uuid4().hex[:8]}o"
    Batches(service).write([(entity, "f", 1.0, T0)])
    table = latest_table(service, [entity])
    micros = int((T0 - dt.datetime(1970, 1, 1)) / dt.timedelta(microseconds=1))
    service.online.client.hset(online_feature_key(entity), "f", f"{micros}:8.0")
    service.rebuild_online()
    assert online(service, [entity]) == table
