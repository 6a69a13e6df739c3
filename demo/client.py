"""The demo's side of the gRPC API: wait for the model and the features, then predict."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import grpc
import numpy as np

from featurestore.errors import ServiceError
from featurestore.settings import Settings
from grpc_server.auth import client_channel
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 10.0
# Per GetOnlineFeatures call while waiting for the features (under max_entities_per_call).
ENTITIES_PER_CALL = 500


def address(settings: Settings) -> str:
    """Where the stack's gRPC server answers on this machine."""
    return f"localhost:{settings.grpc_port}"


def connect(settings: Settings) -> tuple[grpc.Channel, pb_grpc.FeatureStoreStub]:
    """A channel to the gRPC server and the FeatureStore stub on it."""
    channel = client_channel(settings, address(settings))
    return channel, pb_grpc.FeatureStoreStub(channel)


def wait_served(
    stub: pb_grpc.FeatureStoreStub,
    model_id: str,
    version: str,
    etags: dict[str, str],
    *,
    timeout_s: float = 120.0,
) -> pb.GetModelResponse:
    """Wait until GetModel reports this version served with exactly these artifacts (their
    ETags); a sync error reported meanwhile for this version fails at once."""
    deadline = time.monotonic() + timeout_s
    started = dt.datetime.now(dt.UTC)
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            model = stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            # NOT_FOUND until the first sync; UNAVAILABLE while the server starts.
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise
            last = f"GetModel {exc.code().name}: {exc.details()}"
        else:
            last = f"GetModel: served={model.served} version={model.version or '-'}"
            served = {a.extension: a.etag.strip('"') for a in model.artifacts}
            if model.served and model.version == version and served == etags:
                return model  # type: ignore[no-any-return]
            error = model.last_sync_error
            if (
                model.HasField("last_sync_error")
                and error.time.ToDatetime(dt.UTC) >= started
                and model.rejected_version == version
            ):
                raise ServiceError(
                    f"the model sync refused {model_id} {version}: {error.reason}: {error.message}"
                )
        time.sleep(0.2)
    raise ServiceError(
        f"{model_id} {version} was not served within {timeout_s:.0f}s ({last}); see the "
        "model-sync and grpc logs"
    )


def wait_online(
    stub: pb_grpc.FeatureStoreStub,
    entity_ids: list[str],
    feature_names: list[str],
    event_time: dt.datetime,
    *,
    timeout_s: float = 180.0,
) -> None:
    """Wait until every entity has every feature online with this event time (so values of
    an earlier run do not count)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(entity_ids)
    while waiting:
        chunk = waiting[:ENTITIES_PER_CALL]
        reply = stub.GetOnlineFeatures(
            pb.GetOnlineFeaturesRequest(entity_ids=chunk, feature_names=feature_names),
            timeout=CALL_TIMEOUT_S,
        )
        fresh = {
            result.entity_id
            for result in reply.results
            if all(
                f.present and f.event_timestamp.ToDatetime(dt.UTC) >= event_time
                for f in result.features
            )
        }
        waiting = [e for e in chunk if e not in fresh] + waiting[len(chunk) :]
        if waiting and len(fresh) < len(chunk):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{len(waiting)} of {len(entity_ids)} entities still lack features "
                    f"after {timeout_s:.0f}s (first: {waiting[0]}); see the bridge and "
                    "duckdb-worker logs"
                )
            time.sleep(0.2)


@dataclass(frozen=True)
class Served:
    """What Predict returned for some entities: version, scores, the feature values used."""

    version: str
    scores: np.ndarray
    used: np.ndarray


def predict_current(
    stub: pb_grpc.FeatureStoreStub,
    model_id: str,
    entity_ids: list[str],
    expected: np.ndarray,
    *,
    tolerance: float,
    timeout_s: float,
) -> tuple[Served, float]:
    """Predict until the scores are the expected ones or timeout_s passes; the last reply
    and the seconds waited. GetModel reports what Redis serves; each gRPC process loads a
    newly published version at its next refresh (model_refresh_interval_s), and a reply
    names the version, not the upload, so a new upload of the same version shows only in
    the scores. A model the process has not loaded yet is NOT_FOUND meanwhile."""
    began = time.monotonic()
    while True:
        try:
            served = predict(stub, model_id, entity_ids)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND or time.monotonic() - began > timeout_s:
                raise
        else:
            close = served.scores.shape == expected.shape and bool(
                np.all(np.abs(served.scores - expected) <= tolerance)
            )
            if close or time.monotonic() - began > timeout_s:
                return served, time.monotonic() - began
        time.sleep(0.1)


def predict(stub: pb_grpc.FeatureStoreStub, model_id: str, entity_ids: list[str]) -> Served:
    """Predict over gRPC; the probability of class 1 and the inputs used, per entity."""
    reply = stub.Predict(
        pb.PredictRequest(model_id=model_id, entity_ids=entity_ids), timeout=CALL_TIMEOUT_S
    )
    scores, used = [], []
    for prediction in reply.predictions:
        outputs = {o.name: list(o.values) for o in prediction.outputs}
        scores.append(outputs["probabilities"][1])
        used.append([f.value for f in prediction.features])
    return Served(reply.model_version, np.asarray(scores), np.asarray(used, dtype=np.float64))
