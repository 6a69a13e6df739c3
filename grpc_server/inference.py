"""The Open Inference Protocol (KServe v2) over gRPC: protobuf in, model call, protobuf out."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np

import featurestore
from featurestore.errors import ModelNotFoundError
from featurestore.serving.prediction_log import PredictionSink, request_id_for
from featurestore.serving.runtime import LoadedModel, ModelCache
from grpc_server import tensors
from grpc_server.generated import grpc_predict_v2_pb2 as oip
from grpc_server.generated import grpc_predict_v2_pb2_grpc as oip_grpc
from grpc_server.status import handle_errors

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "featurestore"
# Triton's platform name for ONNX models, which v2 clients know.
PLATFORM = "onnxruntime_onnx"
REPOSITORY_UNIMPLEMENTED = (
    "models are loaded and unloaded by the model sync (production models in the registry)"
)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """ServerLive/Ready/Metadata, ModelReady/Metadata and ModelInfer on the served models."""

    def __init__(
        self,
        models: ModelCache,
        ready: Callable[[], bool],
        max_rows: int,
        predictions: PredictionSink | None = None,
    ) -> None:
        self.models = models
        self.ready = ready
        self.max_rows = max_rows
        # Answered calls go to the prediction log (one record per row); None: not logged.
        self.predictions = predictions

    def _model(self, name: str, version: str) -> LoadedModel:
        """The served model; a version other than the served one is not found either."""
        model = self.models.get(name)
        if version and version != model.version:
            raise ModelNotFoundError(
                f"model {name!r} version {version!r} is not served (it serves {model.version!r})"
            )
        return model

    @handle_errors
    def ServerLive(  # noqa: N802 - name set by the proto
        self, request: oip.ServerLiveRequest, context: grpc.ServicerContext
    ) -> oip.ServerLiveResponse:
        """Live whenever the process answers."""
        return oip.ServerLiveResponse(live=True)

    @handle_errors
    def ServerReady(  # noqa: N802 - name set by the proto
        self, request: oip.ServerReadyRequest, context: grpc.ServicerContext
    ) -> oip.ServerReadyResponse:
        """Ready as the health service is: first model sync done and Redis answering."""
        return oip.ServerReadyResponse(ready=self.ready())

    @handle_errors
    def ServerMetadata(  # noqa: N802 - name set by the proto
        self, request: oip.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> oip.ServerMetadataResponse:
        """Server name and version; no protocol extensions."""
        return oip.ServerMetadataResponse(
            name=SERVER_NAME, version=featurestore.__version__, extensions=[]
        )

    @handle_errors
    def ModelReady(  # noqa: N802 - name set by the proto
        self, request: oip.ModelReadyRequest, context: grpc.ServicerContext
    ) -> oip.ModelReadyResponse:
        """A served model is loaded, hence ready; others are NOT_FOUND, as in KServe."""
        self._model(request.name, request.version)
        return oip.ModelReadyResponse(ready=True)

    @handle_errors
    def ModelMetadata(  # noqa: N802 - name set by the proto
        self, request: oip.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> oip.ModelMetadataResponse:
        """The model's one input [-1, n_features] and its outputs."""
        model = self._model(request.name, request.version)
        tensor = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=model.model_id,
            versions=[model.version],
            platform=PLATFORM,
            inputs=[
                tensor(
                    name=tensors.INPUT_NAME,
                    datatype=tensors.datatype_of(model.input_dtype),
                    shape=[-1, len(model.features)],
                )
            ],
            outputs=[
                tensor(name=name, datatype=datatype, shape=shape)
                for name, datatype, shape in _outputs(model)
            ],
        )

    @handle_errors
    def ModelInfer(  # noqa: N802 - name set by the proto
        self, request: oip.ModelInferRequest, context: grpc.ServicerContext
    ) -> oip.ModelInferResponse:
        """Run the model on the input rows (raw feature values in expected-feature order)."""
        request_id = request_id_for(request.id)
        model = self._model(request.model_name, request.model_version)
        rows = tensors.decode_rows(request, len(model.features), self.max_rows)
        names = tensors.select_outputs([o.name for o in request.outputs], model.output_names)
        results = model.infer(rows)
        if self.predictions is not None:
            self.predictions.log_infer(request_id, model, rows, results)
        response = oip.ModelInferResponse(
            model_name=model.model_id, model_version=model.version, id=request.id
        )
        # Answer in the form asked in, as KServe's servers do.
        tensors.encode_outputs(response, results, names, raw=bool(request.raw_input_contents))
        return response

    def RepositoryModelLoad(  # noqa: N802 - name set by the proto
        self, request: oip.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> oip.RepositoryModelLoadResponse:
        """Not offered: the model sync decides what is served."""
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details(REPOSITORY_UNIMPLEMENTED)
        return oip.RepositoryModelLoadResponse()

    def RepositoryModelUnload(  # noqa: N802 - name set by the proto
        self, request: oip.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> oip.RepositoryModelUnloadResponse:
        """Not offered: the model sync decides what is served."""
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details(REPOSITORY_UNIMPLEMENTED)
        return oip.RepositoryModelUnloadResponse()


def _outputs(model: LoadedModel) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of each output, the batch dimension as -1. The runtime
    names its outputs only; one row of zeros, which load_model runs too, shows each one's
    type and trailing dimensions, for ONNX and pickled models alike."""
    results = model.infer(np.zeros((1, len(model.features))))
    described = []
    for name in model.output_names:
        array = np.asarray(results[name])
        described.append((name, tensors.datatype_of(array.dtype), [-1, *array.shape[1:]]))
    return described


def add_inference_service(
    server: grpc.Server,
    models: ModelCache,
    ready: Callable[[], bool],
    *,
    max_rows: int = 1000,
    predictions: PredictionSink | None = None,
) -> str:
    """Serve the Open Inference Protocol on this server; returns its full name (reflection).
    `max_rows` bounds a ModelInfer's rows, like the entities of a Predict; answered calls
    go to `predictions` (the prediction log) when given."""
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(models, ready, max_rows, predictions), server
    )
    return SERVICE_NAME
