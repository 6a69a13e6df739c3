"""Protobuf <-> domain values of the featurestore.v1 service (no logic beyond the mapping)."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.serving.predict import PredictionResult
from featurestore.serving.service import EntityFeatures, FeatureLookup, ModelInfo
from grpc_server.generated import featurestore_pb2 as pb

ORIGINS = {
    "online": pb.UsedFeature.ONLINE,
    "fallback": pb.UsedFeature.FALLBACK,
    "request": pb.UsedFeature.REQUEST,
}


def timestamp(value: dt.datetime) -> Timestamp:
    """A datetime (naive means UTC) as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _iso(stamp: Timestamp) -> str:
    """A Timestamp as the producer's ISO-8601 text (microseconds; nanoseconds dropped)."""
    try:
        return stamp.ToDatetime().isoformat(timespec="microseconds") + "Z"
    except (ValueError, OverflowError):
        # Outside 0001-9999: the event check then reports the text as not ISO-8601.
        return f"{stamp.seconds}s"


def feature_value(lookup: FeatureLookup) -> pb.FeatureValue:
    """One looked-up feature; present=False when the entity has no value for it."""
    if lookup.value is None:
        return pb.FeatureValue(feature_name=lookup.feature_name, present=False)
    return pb.FeatureValue(
        feature_name=lookup.feature_name,
        value=lookup.value.value,
        present=True,
        event_timestamp=timestamp(lookup.value.event_timestamp),
    )


def online_response(results: list[EntityFeatures]) -> pb.GetOnlineFeaturesResponse:
    """Every entity's features; the single-entity fields too when one entity was asked."""
    response = pb.GetOnlineFeaturesResponse(
        results=[
            pb.EntityFeatures(
                entity_id=entity.entity_id, features=[feature_value(f) for f in entity.features]
            )
            for entity in results
        ]
    )
    if len(results) == 1:
        response.entity_id = results[0].entity_id
        response.features.extend(response.results[0].features)
    return response


def model_response(info: ModelInfo) -> pb.GetModelResponse:
    """A model's served version, artifacts, inputs and last sync outcome."""
    response = pb.GetModelResponse(model_id=info.model_id, served=info.served)
    if info.manifest is not None:
        response.version = info.manifest.version
        response.published_at.CopyFrom(timestamp(info.manifest.published_at))
        for ext, artifact in sorted(info.manifest.artifacts.items()):
            response.artifacts.append(
                pb.ArtifactInfo(
                    extension=ext,
                    bytes=artifact.bytes,
                    etag=artifact.etag,
                    synced_at=timestamp(artifact.synced_at),
                    artifact_type=artifact.artifact_type,
                    container=artifact.container,
                    blob=artifact.blob,
                )
            )
        for feature in sorted(info.manifest.expected_features, key=lambda f: f.index):
            response.expected_features.append(
                pb.ExpectedFeature(index=feature.index, name=feature.name, type=feature.type)
            )
    status = info.status
    if status is not None:
        if status.last_success_at is not None:
            response.last_success_at.CopyFrom(timestamp(status.last_success_at))
        if status.last_error_at is not None:
            response.last_sync_error.CopyFrom(
                pb.SyncError(
                    reason=status.last_error_reason or "",
                    message=status.last_error or "",
                    time=timestamp(status.last_error_at),
                )
            )
        response.rejected_version = status.rejected_version or ""
    return response


def overrides(request: pb.PredictRequest) -> dict[str, dict[str, float]]:
    """entity id -> feature name -> value given with the request."""
    return {entity: dict(given.values) for entity, given in request.overrides.items()}


def predict_response(result: PredictionResult, request_id: str) -> pb.PredictResponse:
    """Each entity's outputs and the features the model was given."""
    response = pb.PredictResponse(
        model_id=result.model_id, model_version=result.version, request_id=request_id
    )
    # Features of one event share a time: one Timestamp per time, not per feature. A
    # 100-entity x 10-feature response was built several times faster this way (README,
    # Benchmarks: Serving).
    stamps: dict[dt.datetime, Timestamp] = {}
    for prediction in result.predictions:
        entity = response.predictions.add(entity_id=prediction.entity_id)
        for name, values in prediction.outputs.items():
            output = entity.outputs.add(name=name)
            if values and isinstance(values[0], str):
                output.labels.extend(str(v) for v in values)
            else:
                output.values.extend(float(v) for v in values)
        add = entity.features.add
        for used in prediction.features:
            # Fields given to add() and the Timestamp copied in afterwards: passing the
            # Timestamp to add() as well cost more (README, Benchmarks: Serving).
            feature = add(name=used.name, value=used.value, origin=ORIGINS[used.origin])
            at = used.event_timestamp
            if at is not None:
                stamp = stamps.get(at)
                if stamp is None:
                    stamp = stamps[at] = timestamp(at)
                feature.event_timestamp.CopyFrom(stamp)
    return response


def push_rows(request: pb.PushFeaturesRequest) -> list[dict[str, object]]:
    """Events as the producer's rows; an unset field (empty text, no timestamp) is left
    out, so the producer's check names it as missing."""
    rows: list[dict[str, object]] = []
    for event in request.events:
        row: dict[str, object] = {"value": event.value}
        if event.entity_id:
            row["entity_id"] = event.entity_id
        if event.feature_name:
            row["feature_name"] = event.feature_name
        if event.HasField("event_timestamp"):
            row["event_timestamp"] = _iso(event.event_timestamp)
        rows.append(row)
    return rows
