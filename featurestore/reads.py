"""Reads that every service shares, built on the one query function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from celery import Celery

from featurestore.query import query

# Every event of the entity; the newest per feature is picked here rather than with a
# GROUP BY in DuckDB, whose fixed cost per query (about 1 ms) is larger than this loop.
ENTITY_EVENTS_SQL = """
    SELECT feature_name, value, event_timestamp, created_at
    FROM features WHERE entity_id = ?
"""


@dataclass(frozen=True)
class LatestFeature:
    """The newest value of one feature of an entity, in DuckDB."""

    feature_name: str
    value: float
    event_timestamp: dt.datetime


@dataclass(frozen=True)
class EntityEvent:
    """One stored event of an entity, as ENTITY_EVENTS_SQL returns it."""

    feature_name: str
    value: float
    event_timestamp: dt.datetime
    created_at: dt.datetime


def newest_per_feature(events: list[EntityEvent]) -> list[LatestFeature]:
    """The newest event of each feature; ties on event_timestamp go to the row written
    last, then to the largest value (the rule of the training sets too)."""
    best: dict[str, EntityEvent] = {}
    for event in events:
        current = best.get(event.feature_name)
        key = (event.event_timestamp, event.created_at, event.value)
        if current is None or key > (current.event_timestamp, current.created_at, current.value):
            best[event.feature_name] = event
    return [
        LatestFeature(e.feature_name, e.value, e.event_timestamp)
        for _name, e in sorted(best.items())
    ]


def latest_features(app: Celery, entity_id: str, *, timeout: float = 10.0) -> list[LatestFeature]:
    """Newest value of every feature of one entity (empty when the entity is unknown)."""
    return newest_per_feature(
        query(app, ENTITY_EVENTS_SQL, [entity_id], EntityEvent, timeout=timeout)
    )
