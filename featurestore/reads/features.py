"""Reads that every service shares, built on the one query function."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from featurestore.reads.reader import Reader

# From the latest-values table (featurestore.store.merger): one row per feature of the entity,
# however long its history, as fresh as the last merge (one merge interval behind at most
# while writes arrive). Sorted here: an ORDER BY costs DuckDB more than this sort.
LATEST_SQL = """
    SELECT feature_name, value, event_timestamp
    FROM latest_features WHERE entity_id = ?
"""


@dataclass(frozen=True)
class LatestFeature:
    """The newest value of one feature of an entity, in DuckDB."""

    feature_name: str
    value: float
    event_timestamp: dt.datetime


def latest_features(
    reader: Reader, entity_id: str, *, timeout: float = 10.0
) -> list[LatestFeature]:
    """Newest value of every feature of one entity, by feature name (empty when unknown)."""
    found = reader.query(LATEST_SQL, [entity_id], LatestFeature, timeout=timeout)
    return sorted(found, key=lambda feature: feature.feature_name)
