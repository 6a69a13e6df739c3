"""FeatureStore servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from featurestore.serving.service import Serving
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.status import handle_errors


def _timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class FeatureStoreServicer(pb_grpc.FeatureStoreServicer):
    """Online features and served models over gRPC."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    @handle_errors
    def GetOnlineFeatures(  # noqa: N802 - name set by the proto
        self, request: pb.GetOnlineFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetOnlineFeaturesResponse:
        """Latest values of one entity's features."""
        lookups = self.serving.online_features(request.entity_id, list(request.feature_names))
        features = [
            pb.FeatureValue(feature_name=lookup.feature_name, present=False)
            if lookup.value is None
            else pb.FeatureValue(
                feature_name=lookup.feature_name,
                value=lookup.value.value,
                present=True,
                event_timestamp=_timestamp(lookup.value.event_timestamp),
            )
            for lookup in lookups
        ]
        return pb.GetOnlineFeaturesResponse(entity_id=request.entity_id, features=features)

    @handle_errors
    def ListModels(  # noqa: N802 - name set by the proto
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """Ids of the production models served from Redis."""
        return pb.ListModelsResponse(model_ids=self.serving.list_models())
