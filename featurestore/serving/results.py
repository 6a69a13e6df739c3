"""What a Predict answers, per entity and as arrays for the whole call (no transport)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np

from featurestore.store.online import from_micros
from featurestore.store.online_grid import to_micros

Origin = Literal["online", "fallback", "request"]


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, about
# three times the cost.
@dataclass(slots=True)
class UsedFeature:
    """A feature value a prediction used, its event time (None for request values) and origin."""

    name: str
    value: float
    event_timestamp: dt.datetime | None
    origin: Origin


# Codes of CallArrays.origins; MISSING only while a call is being gathered.
ORIGINS: tuple[Origin, ...] = ("online", "fallback", "request")
ONLINE, FALLBACK, REQUEST, MISSING = 0, 1, 2, 255


@dataclass(frozen=True, slots=True)
class CallArrays:
    """A whole call as arrays, row i for entity i and column j for feature j: what a transport
    encodes in one go. event_micros is the event time in microseconds since the epoch (0 for
    request values), origins index ORIGINS; outputs are (entities, k) arrays, float64 or
    text."""

    feature_names: tuple[str, ...]
    values: np.ndarray
    event_micros: np.ndarray
    origins: np.ndarray
    outputs: dict[str, np.ndarray]

    def used(self, row: int) -> list[UsedFeature]:
        """Row `row` as UsedFeature objects."""
        times: dict[int, dt.datetime] = {}
        used: list[UsedFeature] = []
        micros_row = self.event_micros[row].tolist()
        for name, value, micros, code in zip(
            self.feature_names,
            self.values[row].tolist(),
            micros_row,
            self.origins[row].tolist(),
            strict=True,
        ):
            at = None
            if code != REQUEST:
                at = times.get(micros)
                if at is None:
                    at = times[micros] = from_micros(micros)
            used.append(UsedFeature(name, value, at, ORIGINS[code]))
        return used


class EntityPrediction:
    """One entity's model outputs and the features that produced them."""

    __slots__ = ("_arrays", "_features", "_row", "entity_id", "outputs")

    def __init__(
        self,
        entity_id: str,
        outputs: dict[str, list[float] | list[str]],
        features: list[UsedFeature] | None = None,
        *,
        arrays: CallArrays | None = None,
        row: int = 0,
    ) -> None:
        if features is None and arrays is None:
            raise ValueError("an EntityPrediction needs its features or the call's arrays")
        self.entity_id = entity_id
        self.outputs = outputs
        self._features = features
        self._arrays = arrays
        self._row = row

    @property
    def features(self) -> list[UsedFeature]:
        """The features the model was given, in expected order (built on first use: a
        transport encoding the call's arrays never needs them)."""
        if self._features is None:
            assert self._arrays is not None
            self._features = self._arrays.used(self._row)
        return self._features

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityPrediction):
            return NotImplemented
        return (self.entity_id, self.outputs, self.features) == (
            other.entity_id,
            other.outputs,
            other.features,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntityPrediction({self.entity_id!r}, {self.outputs!r}, {self.features!r})"


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """The version that answered and one prediction per requested entity, in order; arrays
    holds the same call as arrays when the Predictor built it."""

    model_id: str
    version: str
    predictions: list[EntityPrediction]
    arrays: CallArrays | None = None


def arrays_of(result: PredictionResult) -> CallArrays:
    """The call's arrays: the ones the Predictor kept, or built from the per-entity values
    (a result put together by hand)."""
    if result.arrays is not None:
        return result.arrays
    first = result.predictions[0].features if result.predictions else []
    names = tuple(f.name for f in first)
    rows = [p.features for p in result.predictions]
    values = np.array([[f.value for f in row] for row in rows], dtype=np.float64)
    micros = np.array(
        [
            [0 if f.event_timestamp is None else to_micros(f.event_timestamp) for f in row]
            for row in rows
        ],
        dtype=np.int64,
    )
    origins = np.array([[ORIGINS.index(f.origin) for f in row] for row in rows], dtype=np.uint8)
    shape = (len(rows), len(names))
    outputs: dict[str, np.ndarray] = {}
    for name in result.predictions[0].outputs if result.predictions else {}:
        listed = [p.outputs[name] for p in result.predictions]
        text = any(isinstance(v, str) for row in listed for v in row)
        outputs[name] = np.array(listed, dtype=object if text else np.float64)
    return CallArrays(
        names, values.reshape(shape), micros.reshape(shape), origins.reshape(shape), outputs
    )
