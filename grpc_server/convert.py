"""Protobuf <-> domain values of the featurestore.v1 service (no logic beyond the mapping)."""

from __future__ import annotations

import datetime as dt

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.serving import results
from featurestore.serving.results import PredictionResult, arrays_of
from featurestore.serving.service import ModelInfo, OnlineFeatures
from grpc_server import wire, wire_grid
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
    if not 0 <= stamp.nanos <= 999_999_999:
        return f"{stamp.seconds} s and {stamp.nanos} ns after 1970 (nanos must be 0-999999999)"
    try:
        return stamp.ToDatetime().isoformat(timespec="microseconds") + "Z"
    except (ValueError, OverflowError):
        # The event check then reports this text as not ISO-8601; it names what was sent
        # (the bare "253402300800s" said nothing of a range).
        return f"{stamp.seconds} s after 1970 (outside years 1-9999)"


# From this many feature values on, a response is encoded in one numpy pass (see wire);
# below, message by message: the pass has a fixed cost of about 0.3 ms of CPU and then
# 0.5 us a value, messages 1.3-1.8 us a value (README, Benchmarks: Serving).
NUMPY_FROM_VALUES = 200


def online_response(found: OnlineFeatures) -> pb.GetOnlineFeaturesResponse:
    """Every entity's features; the single-entity fields too when one entity was asked."""
    grid = found.grid
    if grid.values.size < NUMPY_FROM_VALUES:
        return _online_messages(found)
    if grid.complete and found.listed is None and len(found.entity_ids) > 1:
        # Every cell present: one template row per entity, values and times written into
        # it (wire_grid); about a quarter of the general layout's CPU (README, Benchmarks:
        # Serving).
        fixed = wire_grid.entity_records(
            3, found.entity_ids, found.names, grid.values, grid.event_micros
        )
        if fixed is not None:
            return pb.GetOnlineFeaturesResponse.FromString(fixed)
    # FeatureValue's fields (name, value, present, event time) of every cell in one numpy
    # pass and the response parsed once: 100 entities x 10 features in a fraction of the
    # time of 1,000 messages built one by one (README, Benchmarks: Serving).
    cells = wire.feature_cells(
        found.names,
        grid.values,
        grid.present.view(np.uint8),
        grid.event_micros,
        grid.present,
        found.listed,
    )
    keep = None if found.listed is None else found.listed.reshape(-1)
    features = wire.per_row(wire.records(2, cells, keep), len(found.entity_ids))
    entities = wire.join([wire.string_field(1, found.entity_ids), features])
    encoded = wire.encode(wire.records(3, entities))
    if len(found.entity_ids) == 1:
        # The single-entity fields: entity_id and features are fields 1 and 2 of the
        # response as of EntityFeatures, so the one entity's body is them as they are.
        encoded += wire.encode(entities)
    return pb.GetOnlineFeaturesResponse.FromString(encoded)


def _online_messages(found: OnlineFeatures) -> pb.GetOnlineFeaturesResponse:
    grid = found.grid
    every = [True] * len(found.names)
    stamps: dict[int, Timestamp] = {}
    response = pb.GetOnlineFeaturesResponse()
    for i, entity_id in enumerate(found.entity_ids):
        features = response.results.add(entity_id=entity_id).features
        cells = zip(
            found.names,
            grid.values[i].tolist(),
            grid.event_micros[i].tolist(),
            grid.present[i].tolist(),
            every if found.listed is None else found.listed[i].tolist(),
            strict=True,
        )
        for name, value, micros, present, wanted in cells:
            if not wanted:
                continue
            if not present:
                features.add(feature_name=name, present=False)
                continue
            feature = features.add(feature_name=name, value=value, present=True)
            feature.event_timestamp.CopyFrom(_stamp(stamps, micros))
    if len(found.entity_ids) == 1:
        response.entity_id = found.entity_ids[0]
        response.features.extend(response.results[0].features)
    return response


def _stamp(stamps: dict[int, Timestamp], micros: int) -> Timestamp:
    """The Timestamp of an event time in microseconds, built once per call."""
    stamp = stamps.get(micros)
    if stamp is None:
        seconds, rest = divmod(micros, 1_000_000)
        stamp = stamps[micros] = Timestamp(seconds=seconds, nanos=rest * 1000)
    return stamp


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


# Origin codes of the domain's CallArrays (ORIGINS order) as the proto's enum values.
_ORIGIN_ENUM = [ORIGINS[name] for name in results.ORIGINS]
_ORIGIN_CODES = np.array(_ORIGIN_ENUM, dtype=np.uint8)


def predict_response(result: PredictionResult, request_id: str) -> pb.PredictResponse:
    """Each entity's outputs and the features the model was given."""
    arrays = arrays_of(result)
    if arrays.values.size < NUMPY_FROM_VALUES:
        return _predict_messages(result, arrays, request_id)
    n = len(result.predictions)
    # The whole list of predictions in one numpy pass, the response parsed once (see wire):
    # 100 entities x 10 features built several times faster than message by message
    # (README, Benchmarks: Serving).
    cells = wire.feature_cells(
        arrays.feature_names,
        arrays.values,
        _ORIGIN_CODES[arrays.origins],
        arrays.event_micros,
        arrays.origins != results.REQUEST,
    )
    body = wire.join(
        [
            wire.string_field(1, [p.entity_id for p in result.predictions]),
            *[wire.records(2, _output_part(name, rows)) for name, rows in arrays.outputs.items()],
            wire.per_row(wire.records(3, cells), n),
        ]
    )
    head = pb.PredictResponse(
        model_id=result.model_id, model_version=result.version, request_id=request_id
    ).SerializeToString()
    return pb.PredictResponse.FromString(head + wire.encode(wire.records(4, body)))


def _predict_messages(
    result: PredictionResult, arrays: results.CallArrays, request_id: str
) -> pb.PredictResponse:
    response = pb.PredictResponse(
        model_id=result.model_id, model_version=result.version, request_id=request_id
    )
    stamps: dict[int, Timestamp] = {}
    for i, prediction in enumerate(result.predictions):
        entity = response.predictions.add(entity_id=prediction.entity_id)
        for name, values in prediction.outputs.items():
            output = entity.outputs.add(name=name)
            if values and isinstance(values[0], str):
                output.labels.extend(str(v) for v in values)
            else:
                output.values.extend(float(v) for v in values)
        add = entity.features.add
        cells = zip(
            arrays.feature_names,
            arrays.values[i].tolist(),
            arrays.event_micros[i].tolist(),
            arrays.origins[i].tolist(),
            strict=True,
        )
        for name, value, micros, origin in cells:
            # Fields given to add() and the Timestamp copied in afterwards: passing the
            # Timestamp to add() as well cost more (README, Benchmarks: Serving).
            feature = add(name=name, value=value, origin=_ORIGIN_ENUM[origin])
            if origin != results.REQUEST:
                feature.event_timestamp.CopyFrom(_stamp(stamps, micros))
    return response


def _output_part(name: str, rows: np.ndarray) -> wire.Block:
    """The ModelOutput of one output for each entity."""
    if rows.dtype.kind not in "OUS":
        return wire.output_part(name, rows)
    return wire.texts(
        [
            pb.ModelOutput(name=name, labels=[str(v) for v in row]).SerializeToString()
            for row in rows.tolist()
        ]
    )


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
