"""Serving logic behind the gRPC transport: online features, served models, predictions,
pushed events. Knows nothing of protobuf."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from featurestore.constants import PROD_MODELS_KEY, online_feature_key
from featurestore.errors import LimitError, ModelNotFoundError, ServiceError, ValidationError
from featurestore.ingest.events import CONTROL_CHARACTERS, MAX_NAME_LENGTH
from featurestore.ingest.publisher import EventPublisher, push_events
from featurestore.serving import manifest
from featurestore.serving.manifest import Manifest, SyncStatus
from featurestore.serving.predict import PredictionResult, Predictor
from featurestore.serving.prediction_log import PredictionSink
from featurestore.store.online import OnlineStore, as_text
from featurestore.store.online_grid import OnlineGrid, parse_grid


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    """Latest values of many entities' features: row i of the grid is entity_ids[i], column
    j names[j]. listed says which cells belong to the answer (None: all of them); when no
    feature was named, each entity lists only the features it has."""

    entity_ids: list[str]
    names: list[str]
    grid: OnlineGrid
    listed: np.ndarray | None


@dataclass(frozen=True)
class ModelInfo:
    """What is served of one model (manifest None when nothing) and its last sync outcome."""

    model_id: str
    served: bool
    manifest: Manifest | None
    status: SyncStatus | None


def check_entity_ids(entity_ids: Sequence[str], field: str, max_entities: int) -> None:
    """ValidationError naming the first bad id; LimitError over max_entities."""
    if not entity_ids:
        raise ValidationError(f"{field} must not be empty")
    if len(entity_ids) > max_entities:
        raise LimitError(f"{len(entity_ids)} entities asked for; at most {max_entities} per call")
    check_names(entity_ids, field)


def check_names(names: Sequence[str], field: str) -> None:
    """ValidationError naming the first name no event may carry (the ingest rules)."""
    for index, name in enumerate(names):
        where = field if field == "entity_id" else f"{field}[{index}]"
        if not name:
            raise ValidationError(f"{where} must not be empty")
        if len(name) > MAX_NAME_LENGTH:
            raise ValidationError(f"{where} is longer than {MAX_NAME_LENGTH} characters")
        if CONTROL_CHARACTERS.search(name):
            raise ValidationError(f"{where} contains control characters")


class Serving:
    """What the gRPC servicers call."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_entities: int = 1000,
        predictor: Predictor | None = None,
        publisher: EventPublisher | None = None,
        max_message_bytes: int = 900_000,
        predictions: PredictionSink | None = None,
    ) -> None:
        self.client = client
        self.online = OnlineStore(client)
        # Every answered Predict (and ModelInfer) is handed to it; None: nothing logged.
        self.predictions = predictions
        self.max_entities = max_entities
        self.predictor = predictor
        self.publisher = publisher
        self.max_message_bytes = max_message_bytes

    def online_features_many(
        self, entity_ids: Sequence[str], feature_names: Sequence[str], *, field: str = "entity_ids"
    ) -> OnlineFeatures:
        """Latest values of the named features of every entity, in request order, read in one
        Redis round trip (every feature of each entity when none is named)."""
        check_entity_ids(entity_ids, field, self.max_entities)
        # Such a name was answered as an absent feature (an empty one from "a,b,".split).
        check_names(feature_names, "feature_names")
        ids, names = list(entity_ids), list(feature_names)
        if names:
            # One round trip for many entities, parsed into arrays at once (OnlineStore.fields).
            return OnlineFeatures(ids, names, self.online.grid(ids, names), None)
        # Not a transaction: each hash is read atomically, and entities are written
        # independently anyway. MULTI bought nothing and made a one-entity read slower
        # (equal at 100 entities; README, Benchmarks).
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hgetall(online_feature_key(entity_id))
        found = [{as_text(f): raw for f, raw in reply.items()} for reply in pipe.execute()]
        every = sorted(set().union(*found))
        grid = parse_grid([[row.get(name) for name in every] for row in found], len(every))
        return OnlineFeatures(ids, every, grid, grid.present)

    def ready(self) -> bool:
        """True when the online store answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def list_models(self) -> list[str]:
        """Ids of the models served from Redis, sorted."""
        return sorted(as_text(m) for m in self.client.smembers(PROD_MODELS_KEY))

    def model_info(self, model_id: str) -> ModelInfo:
        """The served version of a model and its last sync outcome; ModelNotFoundError when
        it is not served and no sync has recorded anything about it."""
        if not model_id:
            raise ValidationError("model_id must not be empty")
        served = bool(self.client.sismember(PROD_MODELS_KEY, model_id))
        current = manifest.read_manifest(self.client, model_id)
        status = manifest.read_status(self.client, model_id)
        if not served and current is None and status is None:
            raise ModelNotFoundError(f"model {model_id} is not served and has no sync record")
        return ModelInfo(model_id, served, current, status)

    def predict(
        self,
        model_id: str,
        entity_ids: list[str],
        overrides: dict[str, dict[str, float]] | None,
        *,
        timeout_s: float,
        request_id: str = "",
    ) -> PredictionResult:
        """The model's outputs for each entity; a feature read falling back to DuckDB gets
        at most timeout_s. The answer goes to the prediction log under request_id."""
        if self.predictor is None:
            raise ServiceError("this server was started without a predictor")
        result = self.predictor.predict(model_id, entity_ids, overrides, timeout_s=timeout_s)
        if self.predictions is not None:
            self.predictions.log_predict(request_id, result)
        return result

    def push_features(self, rows: Sequence[Mapping[str, object]], *, timeout_s: float) -> int:
        """Validate events (producer's rules) and publish them all; events delivered."""
        if self.publisher is None:
            raise ServiceError("this server was started without an event publisher")
        return push_events(
            self.publisher, rows, max_message_bytes=self.max_message_bytes, timeout_s=timeout_s
        )
