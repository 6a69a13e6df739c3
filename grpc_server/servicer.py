"""FeatureStore servicer: protobuf in, domain call, protobuf out (mapping in convert)."""

from __future__ import annotations

import grpc

from featurestore.errors import ValidationError
from featurestore.serving.prediction_log import request_id_for
from featurestore.serving.service import Serving
from grpc_server import convert
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from grpc_server.status import handle_errors, remaining_s


class FeatureStoreServicer(pb_grpc.FeatureStoreServicer):
    """Online features, served models, predictions and pushed events over gRPC."""

    def __init__(self, serving: Serving, *, read_timeout_s: float) -> None:
        self.serving = serving
        # A read (Predict's fallback, PushFeatures' delivery) is given the client's remaining
        # time, at most this.
        self.read_timeout_s = read_timeout_s

    @handle_errors
    def GetOnlineFeatures(  # noqa: N802 - name set by the proto
        self, request: pb.GetOnlineFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetOnlineFeaturesResponse:
        """Latest values of one or many entities' features."""
        names = list(request.feature_names)
        if not request.entity_ids:
            found = self.serving.online_features_many([request.entity_id], names, field="entity_id")
        elif request.entity_id:
            raise ValidationError("set entity_id or entity_ids, not both")
        else:
            found = self.serving.online_features_many(list(request.entity_ids), names)
        return convert.online_response(found)

    @handle_errors
    def ListModels(  # noqa: N802 - name set by the proto
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """Ids of the production models served from Redis."""
        return pb.ListModelsResponse(model_ids=self.serving.list_models())

    @handle_errors
    def GetModel(  # noqa: N802 - name set by the proto
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.GetModelResponse:
        """The served version of a model, its artifacts, inputs and last sync outcome."""
        return convert.model_response(self.serving.model_info(request.model_id))

    @handle_errors
    def Predict(  # noqa: N802 - name set by the proto
        self, request: pb.PredictRequest, context: grpc.ServicerContext
    ) -> pb.PredictResponse:
        """Model outputs for each entity, with the features used."""
        request_id = request_id_for(request.request_id)
        result = self.serving.predict(
            request.model_id,
            list(request.entity_ids),
            convert.overrides(request),
            timeout_s=remaining_s(context, self.read_timeout_s),
            request_id=request_id,
        )
        return convert.predict_response(result, request_id)

    @handle_errors
    def PushFeatures(  # noqa: N802 - name set by the proto
        self, request: pb.PushFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.PushFeaturesResponse:
        """Validate the events and send them all to the features topic."""
        accepted = self.serving.push_features(
            convert.push_rows(request), timeout_s=remaining_s(context, self.read_timeout_s)
        )
        return pb.PushFeaturesResponse(accepted=accepted)
