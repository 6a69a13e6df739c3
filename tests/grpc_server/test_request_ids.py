"""Request ids the prediction log cannot keep: the bridge dead-letters a record whose
request_id is longer than 1024 characters, so Predict and ModelInfer refuse such an id up
front rather than answer a call that would never reach prediction_log."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import redis

from featurestore.ingest.prediction_decode import MAX_REQUEST_ID
from featurestore.services import ManagedService
from featurestore.serving.predict import PredictionResult
from featurestore.serving.runtime import LoadedModel
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from tests.grpc_server.inprocess import put_online
from tests.grpc_server.prediction_env import LoggingServer, logging_server
from tests.serving.onnx_models import linear_classifier, publish_model

pytestmark = pytest.mark.integration

FEATURES = [("x", "float"), ("y", "float")]


@dataclass
class RecordingSink:
    """Keeps the request id of every call handed to the log."""

    ids: list[str] = field(default_factory=list)

    def log_predict(self, request_id: str, result: PredictionResult) -> None:
        self.ids.append(request_id)

    def log_infer(
        self, request_id: str, model: LoadedModel, rows: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> None:
        self.ids.append(request_id)


@pytest.fixture
def served(
    settings: Settings, redis_service: ManagedService
) -> Iterator[tuple[LoggingServer, RecordingSink, str]]:
    client = redis.Redis.from_url(settings.redis_url)
    model_id = f"ids_{uuid.uuid4().hex[:6]}"
    publish_model(client, model_id, "1.0", {"onnx": linear_classifier(2)}, FEATURES)
    stamp = dt.datetime(2024, 1, 1)
    put_online(client, f"{model_id}_e", {"x": (1.0, stamp), "y": (2.0, stamp)})
    sink = RecordingSink()
    with logging_server(settings, sink) as running:
        running.models.refresh()
        yield running, sink, model_id


def _refused_then_kept(call: Any, request: Any, id_field: str, sink: RecordingSink) -> None:
    """One id past the bound is INVALID_ARGUMENT and not logged; one at the bound is served
    and logged under that id (id_field: the id's name in both request and response)."""
    setattr(request, id_field, "r" * (MAX_REQUEST_ID + 1))
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"request_id is longer than {MAX_REQUEST_ID} characters"
    assert sink.ids == []

    setattr(request, id_field, "r" * MAX_REQUEST_ID)
    assert getattr(call(request, timeout=10), id_field) == getattr(request, id_field)
    assert sink.ids == [getattr(request, id_field)]


def test_predict_refuses_a_request_id_the_log_cannot_keep(
    served: tuple[LoggingServer, RecordingSink, str],
) -> None:
    server, sink, model_id = served
    request = pb.PredictRequest(model_id=model_id, entity_ids=[f"{model_id}_e"])
    _refused_then_kept(server.stub.Predict, request, "request_id", sink)


def test_model_infer_refuses_an_id_the_log_cannot_keep(
    served: tuple[LoggingServer, RecordingSink, str],
) -> None:
    server, sink, model_id = served
    request = oip.ModelInferRequest(model_name=model_id)
    request.inputs.add(
        name="input",
        datatype="FP64",
        shape=[1, 2],
        contents=oip.InferTensorContents(fp64_contents=[1.0, 2.0]),
    )
    _refused_then_kept(server.infer.ModelInfer, request, "id", sink)
