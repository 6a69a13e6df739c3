"""Serving logic behind the gRPC transport: online features and served models."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from featurestore.constants import PROD_MODELS_KEY
from featurestore.errors import ValidationError
from featurestore.store.online import OnlineStore, OnlineValue, as_text


@dataclass(frozen=True)
class FeatureLookup:
    """One requested feature: its latest value, or None when the entity has none."""

    feature_name: str
    value: OnlineValue | None


class Serving:
    """What the gRPC servicers call; knows nothing of protobuf."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.online = OnlineStore(client)

    def online_features(self, entity_id: str, feature_names: list[str]) -> list[FeatureLookup]:
        """Latest values of the named features (every known one when none is named)."""
        if not entity_id:
            raise ValidationError("entity_id must not be empty")
        latest = self.online.get(entity_id)
        names = feature_names or sorted(latest)
        return [FeatureLookup(name, latest.get(name)) for name in names]

    def ready(self) -> bool:
        """True when the online store answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def list_models(self) -> list[str]:
        """Ids of the models served from Redis, sorted."""
        return sorted(as_text(m) for m in self.client.smembers(PROD_MODELS_KEY))
