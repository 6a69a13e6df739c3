"""Predict: a served model's features for many entities, gathered and run in one go."""

from __future__ import annotations

import datetime as dt
import math
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis

from featurestore import metrics
from featurestore.errors import LimitError, MissingFeaturesError, QueryTimeoutError, ValidationError
from featurestore.reads.features import LatestFeature, latest_features
from featurestore.reads.reader import Reader
from featurestore.serving.runtime import LoadedModel, ModelCache
from featurestore.store.online import OnlineStore, from_micros, parse_stored

Origin = Literal["online", "fallback", "request"]
MAX_ENTITY_ID_CHARS = 256
# Fallback reads of this process in flight at once, all calls together (the read client
# sends them to the DuckDB service in batches, tasks.client.coalescer).
FALLBACK_THREADS = 16


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, about
# three times the cost, and a Predict builds one per feature of each entity.
@dataclass(slots=True)
class UsedFeature:
    """A feature value a prediction used, its event time (None for request values) and origin."""

    name: str
    value: float
    event_timestamp: dt.datetime | None
    origin: Origin


@dataclass(frozen=True, slots=True)
class EntityPrediction:
    """One entity's model outputs and the features that produced them."""

    entity_id: str
    outputs: dict[str, list[float] | list[str]]
    features: list[UsedFeature]


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """The version that answered and one prediction per requested entity, in order."""

    model_id: str
    version: str
    predictions: list[EntityPrediction]


class Predictor:
    """Predictions for served models from the online store, with the DuckDB fallback."""

    def __init__(
        self,
        client: redis.Redis,
        models: ModelCache,
        reader: Reader | None,
        *,
        max_entities: int,
        fallback_timeout_s: float,
    ) -> None:
        self.client = client
        self.online = OnlineStore(client)
        self.models = models
        self.reader = reader
        self.max_entities = max_entities
        self.fallback_timeout_s = fallback_timeout_s
        # Threads for the fallback reads of one call side by side; started on first use.
        self._pool = ThreadPoolExecutor(FALLBACK_THREADS, thread_name_prefix="predict-fallback")

    def predict(
        self,
        model_id: str,
        entity_ids: list[str],
        overrides: dict[str, dict[str, float]] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> PredictionResult:
        """Outputs of the model's served version for each entity. Request values win over
        stored ones; entities missing a feature in Redis fall back to DuckDB, within
        timeout_s (the caller's remaining time) when it is shorter than the fallback's."""
        started = time.perf_counter()
        self._check_entities(entity_ids)
        model = self.models.get(model_id)
        overrides = overrides or {}
        self._check_overrides(model, entity_ids, overrides)
        used, gaps = self._online(model, entity_ids, overrides)
        if gaps and self.reader is not None:
            limit = self.fallback_timeout_s if timeout_s is None else timeout_s
            self._fallback(model, entity_ids, used, gaps, min(limit, self.fallback_timeout_s))
        if gaps:
            missing = {entity_ids[i]: names for i, names in gaps.items()}
            for names in missing.values():
                for name in names:
                    metrics.MISSING_FEATURES.labels(model_id, name).inc()
            raise MissingFeaturesError(model_id, missing)
        features = [[f for f in row if f is not None] for row in used]
        rows = np.array([[f.value for f in row] for row in features], dtype=np.float64)
        outputs = _per_entity(model.infer(rows), len(entity_ids))
        predictions = [
            EntityPrediction(entity, {name: values[i] for name, values in outputs.items()}, row)
            for i, (entity, row) in enumerate(zip(entity_ids, features, strict=True))
        ]
        metrics.PREDICT_SECONDS.labels(model_id).observe(time.perf_counter() - started)
        return PredictionResult(model.model_id, model.version, predictions)

    def _check_entities(self, entity_ids: list[str]) -> None:
        if not entity_ids:
            raise ValidationError("entity_ids must not be empty")
        if len(entity_ids) > self.max_entities:
            raise LimitError(
                f"{len(entity_ids)} entities in one call, over the limit of {self.max_entities}"
            )
        for index, entity in enumerate(entity_ids):
            if not entity or "\x00" in entity or len(entity) > MAX_ENTITY_ID_CHARS:
                raise ValidationError(
                    f"entity_ids[{index}] must be 1-{MAX_ENTITY_ID_CHARS} characters without NUL"
                )

    def _check_overrides(
        self, model: LoadedModel, entity_ids: list[str], overrides: dict[str, dict[str, float]]
    ) -> None:
        names = {f.name for f in model.features}
        requested = set(entity_ids)
        for entity, values in overrides.items():
            if entity not in requested:
                raise ValidationError(
                    f"feature values given for {entity!r}, not a requested entity"
                )
            for name, value in values.items():
                if name not in names:
                    raise ValidationError(
                        f"{name!r} (given for {entity!r}) is not a feature of model "
                        f"{model.model_id}; it takes {', '.join(f.name for f in model.features)}"
                    )
                if not math.isfinite(value):
                    raise ValidationError(f"{name!r} of {entity!r} is not a finite number")

    def _online(
        self, model: LoadedModel, entity_ids: list[str], overrides: dict[str, dict[str, float]]
    ) -> tuple[list[list[UsedFeature | None]], dict[int, list[str]]]:
        """Each entity's features in expected order from one round trip (no MULTI: the
        reads need no isolation), request values first; None where missing, and the
        missing names by entity position."""
        names = model.feature_names
        replies = self.online.fields(entity_ids, names)
        # Features written by one event share a time: each datetime is built once per call.
        times: dict[int, dt.datetime] = {}
        used: list[list[UsedFeature | None]] = []
        gaps: dict[int, list[str]] = {}
        for index, (entity, stored) in enumerate(zip(entity_ids, replies, strict=True)):
            given = overrides.get(entity, {})
            row: list[UsedFeature | None] = []
            for name, raw in zip(names, stored, strict=True):
                if name in given:
                    row.append(UsedFeature(name, float(given[name]), None, "request"))
                elif raw is not None:
                    micros, value = parse_stored(raw)
                    at = times.get(micros)
                    if at is None:
                        at = times[micros] = from_micros(micros)
                    row.append(UsedFeature(name, value, at, "online"))
                else:
                    row.append(None)
                    gaps.setdefault(index, []).append(name)
            used.append(row)
        return used, gaps

    def _fallback(
        self,
        model: LoadedModel,
        entity_ids: list[str],
        used: list[list[UsedFeature | None]],
        gaps: dict[int, list[str]],
        timeout_s: float,
    ) -> None:
        """Fill gaps from DuckDB's latest values, one read per entity, the reads side by
        side, all within timeout_s; gaps keeps only what is still missing."""
        reader = self.reader
        assert reader is not None
        deadline = time.monotonic() + timeout_s

        def read(entity: str) -> list[LatestFeature]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QueryTimeoutError(f"the feature fallback took over {timeout_s:.3f} s")
            return latest_features(reader, entity, timeout=remaining)

        positions = list(gaps)
        if len(positions) == 1:
            results = [read(entity_ids[positions[0]])]
        else:
            # Side by side, not one after the other: reads asked for at the same moment
            # travel to the DuckDB service together (tasks.client.coalescer), so many
            # entities missing from Redis cost a few reads' time, not one each (README,
            # Benchmarks: Serving).
            futures = [self._pool.submit(read, entity_ids[i]) for i in positions]
            _done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            for future in pending:
                future.cancel()
            if pending:
                raise QueryTimeoutError(f"the feature fallback took over {timeout_s:.3f} s")
            results = [future.result() for future in futures]
        for index, latest_of_entity in zip(positions, results, strict=True):
            found = {f.feature_name: f for f in latest_of_entity}
            row = used[index]
            for position, feature in enumerate(model.features):
                latest = found.get(feature.name)
                if row[position] is None and latest is not None:
                    row[position] = UsedFeature(
                        feature.name, latest.value, latest.event_timestamp, "fallback"
                    )
            names = _missing(model, row)
            if names:
                gaps[index] = names
            else:
                del gaps[index]


def _missing(model: LoadedModel, row: list[UsedFeature | None]) -> list[str]:
    return [f.name for f, used in zip(model.features, row, strict=True) if used is None]


def _per_entity(outputs: dict[str, np.ndarray], n: int) -> dict[str, list[list[float] | list[str]]]:
    """Each output as one list per entity: (n,) gives [value], (n, k) gives k values; numbers
    as floats, strings (labels of classes named by text) as strings."""
    result: dict[str, list[list[float] | list[str]]] = {}
    for name, array in outputs.items():
        values = array if array.dtype.kind in "OUS" else array.astype(np.float64, copy=False)
        result[name] = values.reshape(n, -1).tolist()
    return result
