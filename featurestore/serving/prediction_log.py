"""The prediction log: every served call (Predict, ModelInfer) kept as records, without
blocking the response.

A serving call hands its result to a PredictionSink, which only appends it to a bounded
in-process buffer (after the per-model switch and the sampling); a transport drains the
buffer in a thread of its own (bridge.prediction_publisher sends it to Kafka). When the
transport falls behind, the buffer drops its OLDEST calls and counts their records in
fstore_prediction_log_records_total{outcome="dropped_full"}.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from featurestore import metrics
from featurestore.errors import ValidationError
from featurestore.ingest.prediction_decode import MAX_REQUEST_ID
from featurestore.ingest.predictions import Output, Record, encode_record
from featurestore.serving.predict import PredictionResult
from featurestore.serving.runtime import LoadedModel
from featurestore.settings import Settings

_EPOCH = dt.datetime(1970, 1, 1)


def request_id_for(given: str) -> str:
    """The id a call is answered and logged under: the caller's, else a new uuid4 hex;
    ValidationError when the log could not keep it."""
    # The bridge dead-letters a record with a longer id: the call was answered, its
    # predictions never reached prediction_log (found sending a 100k-character id).
    if len(given) > MAX_REQUEST_ID:
        raise ValidationError(f"request_id is longer than {MAX_REQUEST_ID} characters")
    return given or uuid.uuid4().hex


class PredictionSink(Protocol):
    """Where a serving process hands each answered call; must return at once."""

    def log_predict(self, request_id: str, result: PredictionResult) -> None:
        """A Predict answer: one record per entity, features with origin and event time."""
        ...

    def log_infer(
        self, request_id: str, model: LoadedModel, rows: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> None:
        """A ModelInfer answer: one record per input row (no entity, values of origin
        'request')."""
        ...


@dataclass(frozen=True, slots=True)
class Predicted:
    """A Predict call waiting in the buffer, as answered (expanded into records later)."""

    request_id: str
    result: PredictionResult
    served_at: float

    @property
    def size(self) -> int:
        """Records this call becomes."""
        return len(self.result.predictions)


@dataclass(frozen=True, slots=True)
class Inferred:
    """A ModelInfer call waiting in the buffer."""

    request_id: str
    model_id: str
    version: str
    feature_names: list[str]
    rows: np.ndarray
    outputs: dict[str, np.ndarray]
    served_at: float

    @property
    def size(self) -> int:
        """Records this call becomes."""
        return int(self.rows.shape[0])


Entry = Predicted | Inferred


def served_time(unix_s: float) -> dt.datetime:
    """A time.time() value as a naive UTC datetime (microseconds)."""
    return _EPOCH + dt.timedelta(microseconds=round(unix_s * 1_000_000))


def _outputs(named: Iterator[tuple[str, list[Any]]]) -> list[Output]:
    result = []
    for name, values in named:
        text = bool(values) and isinstance(values[0], str)
        result.append(Output(name, [] if text else values, values if text else []))
    return result


def records(entry: Entry) -> list[Record]:
    """The records of one call (ingest.predictions' fields), one per entity or row."""
    served_at = served_time(entry.served_at)
    if isinstance(entry, Predicted):
        result = entry.result
        request_id, model_id, version = entry.request_id, result.model_id, result.version
        return [
            # The UsedFeature dataclasses go as they are: msgspec writes them in C, 2.5 us
            # for 10 of them (README, Benchmarks).
            Record(
                request_id,
                model_id,
                version,
                p.entity_id,
                served_at,
                "predict",
                p.features,
                _outputs(iter(p.outputs.items())),
            )
            for p in result.predictions
        ]
    n = entry.size
    outputs = {
        name: (array if array.dtype.kind in "OUS" else array.astype(np.float64)).reshape(n, -1)
        for name, array in entry.outputs.items()
    }
    values = entry.rows.astype(np.float64).tolist()
    return [
        Record(
            entry.request_id,
            entry.model_id,
            entry.version,
            None,
            served_at,
            "infer",
            [
                {"name": name, "value": value, "origin": "request", "event_timestamp": None}
                for name, value in zip(entry.feature_names, row, strict=True)
            ],
            _outputs((name, [*map(_plain, o[i].tolist())]) for name, o in outputs.items()),
        )
        for i, row in enumerate(values)
    ]


def _plain(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def encode(entry: Entry) -> list[bytes]:
    """The records of one call as JSON messages."""
    return [encode_record(record) for record in records(entry)]


class PredictionLog:
    """The PredictionSink of a serving process: which calls are logged, and the bounded
    buffer they wait in until a transport takes them."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        models: list[str] | None = None,
        sample_rate: float = 1.0,
        buffer_size: int = 10_000,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.enabled = enabled
        self.models = frozenset(models or ())
        self.sample_rate = sample_rate
        self._draw = draw
        self._buffer: deque[Entry] = deque(maxlen=buffer_size)
        # Makes "full? then append" one step, so each call a full deque pushes out is counted
        # once; uncontended it costs next to nothing (README, Benchmarks).
        self._lock = threading.Lock()
        self._dropped = metrics.PREDICTION_LOG_RECORDS.labels("dropped_full")
        self.dropped_records = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictionLog:
        """The log as the settings configure it."""
        return cls(
            enabled=settings.prediction_log_enabled,
            models=settings.prediction_log_models,
            sample_rate=settings.prediction_log_sample_rate,
            buffer_size=settings.prediction_log_buffer,
        )

    def wants(self, model_id: str) -> bool:
        """Whether a call of this model is logged: switched on for it, and sampled."""
        if not self.enabled or (self.models and model_id not in self.models):
            return False
        return self.sample_rate >= 1.0 or self._draw() < self.sample_rate

    def log_predict(self, request_id: str, result: PredictionResult) -> None:
        """Buffer a Predict answer when its model is logged and the call sampled."""
        if self.wants(result.model_id):
            self._put(Predicted(request_id or uuid.uuid4().hex, result, time.time()))

    def log_infer(
        self, request_id: str, model: LoadedModel, rows: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> None:
        """Buffer a ModelInfer answer when its model is logged and the call sampled."""
        if self.wants(model.model_id):
            entry = Inferred(
                request_id or uuid.uuid4().hex,
                model.model_id,
                model.version,
                model.feature_names,
                rows,
                outputs,
                time.time(),
            )
            self._put(entry)

    def _put(self, entry: Entry) -> None:
        buffer = self._buffer
        with self._lock:
            oldest = buffer[0] if len(buffer) == buffer.maxlen else None
            buffer.append(entry)  # a full deque drops its oldest
            if oldest is not None:
                self.dropped_records += oldest.size
        if oldest is not None:
            self._dropped.inc(oldest.size)

    def take(self, max_calls: int) -> list[Entry]:
        """Up to max_calls calls, oldest first, removed from the buffer."""
        taken: list[Entry] = []
        buffer = self._buffer
        with self._lock:
            while buffer and len(taken) < max_calls:
                taken.append(buffer.popleft())
        return taken

    def __len__(self) -> int:
        return len(self._buffer)
