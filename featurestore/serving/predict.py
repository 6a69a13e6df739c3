"""Predict: a served model's features for many entities, gathered and run in one go."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import redis

from featurestore import metrics
from featurestore.errors import (
    InputRangeError,
    LimitError,
    MissingFeaturesError,
    QueryTimeoutError,
    UnusableFeaturesError,
    ValidationError,
)
from featurestore.reads.features import LatestFeature, latest_features
from featurestore.reads.reader import Reader
from featurestore.serving.results import (
    FALLBACK,
    MISSING,
    ONLINE,
    ORIGINS,
    REQUEST,
    CallArrays,
    EntityPrediction,
    Origin,
    PredictionResult,
    UsedFeature,
)
from featurestore.serving.runtime import LoadedModel, ModelCache
from featurestore.store.online import OnlineStore
from featurestore.store.online_grid import to_micros

# Names other modules import from here.
__all__ = [
    "ORIGINS",
    "CallArrays",
    "EntityPrediction",
    "Origin",
    "PredictionResult",
    "Predictor",
    "UsedFeature",
]
MAX_ENTITY_ID_CHARS = 256
# Fallback reads of this process in flight at once, all calls together (the read client
# sends them to the DuckDB service in batches, tasks.client.coalescer).
FALLBACK_THREADS = 16
# A call's features being gathered: values, event micros and origin codes, (entities, features).
_Cells = tuple[np.ndarray, np.ndarray, np.ndarray]


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
        cells, gaps = self._online(model, entity_ids, overrides)
        if gaps and self.reader is not None:
            limit = self.fallback_timeout_s if timeout_s is None else timeout_s
            self._fallback(model, entity_ids, cells, gaps, min(limit, self.fallback_timeout_s))
        if gaps:
            missing = {entity_ids[i]: names for i, names in gaps.items()}
            for names in missing.values():
                for name in names:
                    metrics.MISSING_FEATURES.labels(model_id, name).inc()
            raise MissingFeaturesError(model_id, missing)
        values, micros, origins = cells
        # The values reported (and logged) stay as stored or sent, before the model's casts:
        # the skew report compares them with the offline store's.
        try:
            inferred = model.infer(values, entity_ids)
        except InputRangeError as exc:
            if all(origins[r, c] == REQUEST for r, c in exc.cells):
                raise
            raise UnusableFeaturesError(exc.args[0]) from exc
        rows = {name: _as_rows(a, len(entity_ids)) for name, a in inferred.items()}
        arrays = CallArrays(tuple(model.feature_names), values, micros, origins, rows)
        outputs = {name: array.tolist() for name, array in rows.items()}
        predictions = [
            EntityPrediction(
                entity, {name: listed[i] for name, listed in outputs.items()}, arrays=arrays, row=i
            )
            for i, entity in enumerate(entity_ids)
        ]
        metrics.PREDICT_SECONDS.labels(model_id).observe(time.perf_counter() - started)
        return PredictionResult(model.model_id, model.version, predictions, arrays)

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
    ) -> tuple[_Cells, dict[int, list[str]]]:
        """Each entity's features in expected order from one round trip (no MULTI: the
        reads need no isolation) as (values, event micros, origins) arrays, request values
        first; origin MISSING where missing, and the missing names by entity position."""
        names = model.feature_names
        grid = self.online.grid(entity_ids, names)
        values, micros = grid.values, grid.event_micros
        origins = np.full(values.shape, ONLINE, dtype=np.uint8)
        if not grid.complete:
            origins[~grid.present] = MISSING
        if overrides:
            column = {name: j for j, name in enumerate(names)}
            for i, entity in enumerate(entity_ids):
                for name, value in overrides.get(entity, {}).items():
                    j = column[name]
                    values[i, j], micros[i, j], origins[i, j] = float(value), 0, REQUEST
        gaps: dict[int, list[str]] = {}
        if not grid.complete:
            for i, j in zip(*np.nonzero(origins == MISSING), strict=True):
                gaps.setdefault(int(i), []).append(names[j])
        return (values, micros, origins), gaps

    def _fallback(
        self,
        model: LoadedModel,
        entity_ids: list[str],
        cells: _Cells,
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
        values, micros, origins = cells
        for index, latest_of_entity in zip(positions, results, strict=True):
            found = {f.feature_name: f for f in latest_of_entity}
            still: list[str] = []
            for j, feature in enumerate(model.features):
                if origins[index, j] != MISSING:
                    continue
                latest = found.get(feature.name)
                if latest is None:
                    still.append(feature.name)
                else:
                    values[index, j] = latest.value
                    micros[index, j] = to_micros(latest.event_timestamp)
                    origins[index, j] = FALLBACK
            if still:
                gaps[index] = still
            else:
                del gaps[index]


def _as_rows(array: np.ndarray, n: int) -> np.ndarray:
    """An output as one row per entity, (n, k): (n,) gives k = 1; numbers as float64, text
    (labels of classes named by text) kept."""
    values = array if array.dtype.kind in "OUS" else array.astype(np.float64, copy=False)
    return values.reshape(n, -1)
