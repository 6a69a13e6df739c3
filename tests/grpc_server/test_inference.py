"""The Open Inference Protocol (KServe v2) through a real channel, called with stubs
generated at test time from KServe's own proto file; models served from real Redis."""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc  # type: ignore[import-untyped]

import featurestore
from featurestore.services import ManagedService
from featurestore.serving import manifest
from featurestore.serving.runtime import ModelCache
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2
from grpc_server.inference import add_inference_service
from tests.grpc_server.inprocess import running_server
from tests.serving import onnx_models

pytestmark = pytest.mark.integration

KSERVE_PROTO = Path(__file__).resolve().parents[2] / "protos" / "kserve" / "grpc_predict_v2.proto"
FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
WEIGHTS = [2.0, -0.05, 1.5]
MEAN, SCALE = [0.3, 40.0, 0.5], [0.2, 12.0, 0.5]
MAX_ROWS = 50
ROWS = np.array([[0.31, 41.4, 0.0], [0.9, 23.0, 1.0], [0.05, 67.6, 3.0], [0.5, 40.0, 0.0]])


@dataclass(frozen=True)
class Kserve:
    """KServe's generated modules and a stub on the test server's channel."""

    pb: Any
    stub: Any
    channel: grpc.Channel


@dataclass(frozen=True)
class Served:
    """The models the test server serves: id, version, artifacts."""

    classifier: str
    regressor: str
    version: str
    classifier_onnx: bytes
    regressor_onnx: bytes


def load_kserve_modules(out: Path) -> tuple[ModuleType, ModuleType]:
    """grpc_tools.protoc on the vendored KServe file into `out`, imported from there. The
    modules get a descriptor pool of their own: the server's generated code (same package
    'inference') holds the default pool, which refuses a second definition of a message."""
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{KSERVE_PROTO.parent}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(KSERVE_PROTO),
        ]
    )
    assert code == 0, "protoc failed on the KServe proto"
    pool = descriptor_pool.DescriptorPool()
    default = descriptor_pool.Default
    descriptor_pool.Default = lambda: pool
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("grpc_predict_v2_pb2")
        pb_grpc = importlib.import_module("grpc_predict_v2_pb2_grpc")
    finally:
        sys.path.remove(str(out))
        descriptor_pool.Default = default
        # The modules are held here; their top-level names are left free.
        for name in ("grpc_predict_v2_pb2", "grpc_predict_v2_pb2_grpc"):
            sys.modules.pop(name, None)
    assert pb.DESCRIPTOR.pool is pool
    assert pb.DESCRIPTOR.package == "inference"
    return pb, pb_grpc


@pytest.fixture(scope="module")
def store(settings: Settings, redis_service: ManagedService) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def served(store: redis.Redis) -> Iterator[Served]:
    tag = uuid.uuid4().hex[:8]
    models = Served(
        classifier=f"oip_clf_{tag}",
        regressor=f"oip_reg_{tag}",
        version="1.0.0",
        classifier_onnx=onnx_models.linear_classifier(3, WEIGHTS, 0.25),
        regressor_onnx=onnx_models.linear_regressor(3, WEIGHTS, -1.0, dtype=np.float64),
    )
    onnx_models.publish_model(
        store,
        models.classifier,
        models.version,
        {"onnx": models.classifier_onnx, "json": onnx_models.scaler_json(MEAN, SCALE)},
        FEATURES,
    )
    onnx_models.publish_model(
        store, models.regressor, models.version, {"onnx": models.regressor_onnx}, FEATURES
    )
    yield models
    for model_id in (models.classifier, models.regressor):
        pipe = store.pipeline(transaction=True)
        manifest.unpublish(pipe, model_id, [f"model:{model_id}:onnx", f"model:{model_id}:json"])
        pipe.execute()


@pytest.fixture(scope="module")
def ready() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def cache(store: redis.Redis, served: Served) -> ModelCache:
    models = ModelCache(store, allow_pickle=False)
    models.refresh()
    return models


@pytest.fixture(scope="module")
def kserve_modules(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return load_kserve_modules(tmp_path_factory.mktemp("kserve"))


@pytest.fixture(scope="module")
def kserve(
    kserve_modules: tuple[Any, Any], cache: ModelCache, ready: threading.Event
) -> Iterator[Kserve]:
    pb, pb_grpc = kserve_modules
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    name = add_inference_service(server, cache, ready.is_set, max_rows=MAX_ROWS)
    reflection.enable_server_reflection((name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Kserve(pb=pb, stub=pb_grpc.GRPCInferenceServiceStub(channel), channel=channel)
    finally:
        channel.close()
        server.stop(grace=None)


def reference(model_onnx: bytes, rows: np.ndarray, dtype: type[np.floating], scaled: bool) -> Any:
    """The model run by ONNX Runtime in this process on the rows cast and scaled as declared."""
    x = onnx_models.cast_rows(rows, [kind for _, kind in FEATURES])
    if scaled:
        x = (x - np.asarray(MEAN)) / np.asarray(SCALE)
    session = ort.InferenceSession(model_onnx, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x.astype(dtype)}), strict=True))


def infer_request(
    pb: Any,
    model: str,
    rows: np.ndarray,
    datatype: str = "FP32",
    *,
    raw: bool = False,
    shape: list[int] | None = None,
    outputs: list[str] | None = None,
    version: str = "",
) -> Any:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="req-1")
    tensor = request.inputs.add(
        name="input", datatype=datatype, shape=list(rows.shape) if shape is None else shape
    )
    dtype = np.dtype("<f8") if datatype == "FP64" else np.dtype("<f4")
    flat = rows.astype(dtype).ravel()
    if raw:
        request.raw_input_contents.append(flat.tobytes())
    elif datatype == "FP64":
        tensor.contents.fp64_contents.extend(flat.tolist())
    else:
        tensor.contents.fp32_contents.extend(flat.tolist())
    for name in outputs or []:
        request.outputs.add(name=name)
    return request


def typed_output(tensor: Any) -> np.ndarray:
    values = {
        "INT64": (tensor.contents.int64_contents, np.int64),
        "FP32": (tensor.contents.fp32_contents, np.float32),
        "FP64": (tensor.contents.fp64_contents, np.float64),
    }[tensor.datatype]
    return np.asarray(values[0], dtype=values[1]).reshape(list(tensor.shape))


def raw_output(tensor: Any, raw: bytes) -> np.ndarray:
    dtype = {"INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}[tensor.datatype]
    return np.frombuffer(raw, dtype=dtype).reshape(list(tensor.shape))


def test_server_rpcs(kserve: Kserve, ready: threading.Event) -> None:
    pb = kserve.pb
    assert kserve.stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live is True
    assert kserve.stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is False
    ready.set()
    assert kserve.stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is True
    meta = kserve.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert (meta.name, meta.version, list(meta.extensions)) == (
        "featurestore",
        featurestore.__version__,
        [],
    )


def test_model_ready_and_metadata(kserve: Kserve, served: Served) -> None:
    pb = kserve.pb
    for version in ("", served.version):
        ready = kserve.stub.ModelReady(
            pb.ModelReadyRequest(name=served.classifier, version=version), timeout=10
        )
        assert ready.ready is True
    clf = kserve.stub.ModelMetadata(pb.ModelMetadataRequest(name=served.classifier), timeout=10)
    assert (clf.name, list(clf.versions)) == (served.classifier, [served.version])
    assert [(t.name, t.datatype, list(t.shape)) for t in clf.inputs] == [("input", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in clf.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    reg = kserve.stub.ModelMetadata(pb.ModelMetadataRequest(name=served.regressor), timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in reg.inputs] == [("input", "FP64", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in reg.outputs] == [
        ("variable", "FP64", [-1, 1])
    ]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_infer_typed_contents_equal_onnx_runtime(
    kserve: Kserve, served: Served, datatype: str
) -> None:
    rows = ROWS if datatype == "FP64" else ROWS.astype(np.float32).astype(np.float64)
    reply = kserve.stub.ModelInfer(
        infer_request(kserve.pb, served.classifier, ROWS, datatype), timeout=10
    )
    assert (reply.model_name, reply.model_version, reply.id) == (
        served.classifier,
        served.version,
        "req-1",
    )
    assert not reply.raw_output_contents
    got = {t.name: typed_output(t) for t in reply.outputs}
    want = reference(served.classifier_onnx, rows, np.float32, scaled=True)
    assert [t.datatype for t in reply.outputs] == ["INT64", "FP32"]
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    assert len(set(got["label"].tolist())) == 2, "rows chosen to give both classes"


def test_infer_raw_contents_answer_raw(kserve: Kserve, served: Served) -> None:
    reply = kserve.stub.ModelInfer(
        infer_request(kserve.pb, served.regressor, ROWS, "FP64", raw=True), timeout=10
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.outputs] == [
        ("variable", "FP64", [4, 1])
    ]
    assert not reply.outputs[0].contents.ListFields()
    got = raw_output(reply.outputs[0], reply.raw_output_contents[0])
    want = reference(served.regressor_onnx, ROWS, np.float64, scaled=False)
    np.testing.assert_allclose(got, want["variable"], rtol=1e-12)

    reply = kserve.stub.ModelInfer(
        infer_request(kserve.pb, served.classifier, ROWS[:1], "FP32", raw=True), timeout=10
    )
    pairs = zip(reply.outputs, reply.raw_output_contents, strict=True)
    outputs = {t.name: raw_output(t, b) for t, b in pairs}
    want = reference(served.classifier_onnx, ROWS[:1].astype(np.float32), np.float32, True)
    np.testing.assert_array_equal(outputs["label"], want["label"])
    np.testing.assert_allclose(outputs["probabilities"], want["probabilities"], rtol=1e-6)


def test_infer_requested_outputs_only(kserve: Kserve, served: Served) -> None:
    reply = kserve.stub.ModelInfer(
        infer_request(kserve.pb, served.classifier, ROWS, "FP64", outputs=["probabilities"]),
        timeout=10,
    )
    assert [t.name for t in reply.outputs] == ["probabilities"]
    assert list(reply.outputs[0].shape) == [4, 2]


def test_new_version_served_after_refresh(
    kserve: Kserve, served: Served, store: redis.Redis, cache: ModelCache
) -> None:
    pb = kserve.pb
    model = f"oip_swap_{uuid.uuid4().hex[:8]}"
    first = onnx_models.linear_regressor(3, WEIGHTS, 0.0, dtype=np.float64)
    second = onnx_models.linear_regressor(3, WEIGHTS, 10.0, dtype=np.float64)
    onnx_models.publish_model(store, model, "1", {"onnx": first}, FEATURES)
    cache.refresh()
    request = infer_request(pb, model, ROWS[:1], "FP64")
    before = kserve.stub.ModelInfer(request, timeout=10)
    onnx_models.publish_model(store, model, "2", {"onnx": second}, FEATURES)
    cache.refresh()
    after = kserve.stub.ModelInfer(request, timeout=10)
    assert (before.model_version, after.model_version) == ("1", "2")
    assert typed_output(after.outputs[0])[0, 0] == pytest.approx(
        typed_output(before.outputs[0])[0, 0] + 10.0
    )
    meta = kserve.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
    assert list(meta.versions) == ["2"]
    with pytest.raises(grpc.RpcError) as info:
        kserve.stub.ModelInfer(infer_request(pb, model, ROWS[:1], version="1"), timeout=10)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    pipe = store.pipeline(transaction=True)
    manifest.unpublish(pipe, model, [f"model:{model}:onnx"])
    pipe.execute()


def _bad_requests(pb: Any, model: str) -> list[tuple[str, Any, str]]:
    """(case, request, a word the status message must contain)."""
    cases: list[tuple[str, Any, str]] = [
        ("width", infer_request(pb, model, ROWS[:, :2]), "shape"),
        ("no rows", infer_request(pb, model, ROWS[:0]), "shape"),
        ("one dimension", infer_request(pb, model, ROWS[:1], shape=[3]), "shape"),
        ("three dimensions", infer_request(pb, model, ROWS[:1], shape=[1, 3, 1]), "shape"),
        ("shape over contents", infer_request(pb, model, ROWS[:1], shape=[2, 3]), "values"),
        ("raw length", infer_request(pb, model, ROWS[:1], raw=True, shape=[2, 3]), "bytes"),
        ("datatype", infer_request(pb, model, ROWS, "INT64"), "datatype"),
        ("fp16", infer_request(pb, model, ROWS, "FP16", raw=True), "datatype"),
        ("not finite", infer_request(pb, model, np.full((1, 3), np.nan)), "NaN"),
        ("past float32", infer_request(pb, model, np.full((1, 3), 1e300), "FP64"), "range"),
        ("output", infer_request(pb, model, ROWS, outputs=["score"]), "output"),
        ("rows", infer_request(pb, model, np.zeros((MAX_ROWS + 1, 3))), "rows"),
    ]
    wrong_field = infer_request(pb, model, ROWS, "FP32")
    wrong_field.inputs[0].datatype = "FP64"
    cases.append(("contents field", wrong_field, "fp64_contents"))
    both = infer_request(pb, model, ROWS, "FP32")
    both.raw_input_contents.append(ROWS.astype(np.float32).tobytes())
    cases.append(("both forms", both, "raw_input_contents"))
    renamed = infer_request(pb, model, ROWS)
    renamed.inputs[0].name = "x"
    cases.append(("input name", renamed, "input"))
    two = infer_request(pb, model, ROWS)
    two.inputs.append(two.inputs[0])
    cases.append(("two inputs", two, "one input"))
    return cases


def test_bad_requests_are_invalid_argument_naming_the_problem(
    kserve: Kserve, served: Served
) -> None:
    for case, request, word in _bad_requests(kserve.pb, served.classifier):
        with pytest.raises(grpc.RpcError) as info:
            kserve.stub.ModelInfer(request, timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, case
        details = info.value.details() or ""
        assert word in details, (case, details)
        assert "Traceback" not in details and ".py" not in details, (case, details)


def test_unknown_model_and_version_are_not_found(kserve: Kserve, served: Served) -> None:
    pb = kserve.pb
    calls: list[Callable[[], object]] = [
        lambda: kserve.stub.ModelInfer(infer_request(pb, "no_such_model", ROWS), timeout=10),
        lambda: kserve.stub.ModelReady(pb.ModelReadyRequest(name="no_such_model"), timeout=10),
        lambda: kserve.stub.ModelMetadata(
            pb.ModelMetadataRequest(name="no_such_model"), timeout=10
        ),
        lambda: kserve.stub.ModelInfer(
            infer_request(pb, served.classifier, ROWS, version="9.9.9"), timeout=10
        ),
        lambda: kserve.stub.ModelReady(
            pb.ModelReadyRequest(name=served.classifier, version="9.9.9"), timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        details = info.value.details() or ""
        assert "no_such_model" in details or "9.9.9" in details, details
        assert "Traceback" not in details and ".py" not in details, details


def test_repository_rpcs_unimplemented(kserve: Kserve) -> None:
    with pytest.raises(grpc.RpcError) as info:
        kserve.stub.RepositoryModelLoad(
            kserve.pb.RepositoryModelLoadRequest(model_name="x"), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_inference_service(kserve: Kserve) -> None:
    database = ProtoReflectionDescriptorDatabase(kserve.channel)
    assert "inference.GRPCInferenceService" in database.get_services()
    symbol = database.FindFileContainingSymbol("inference.GRPCInferenceService")
    assert symbol.package == "inference"
    assert {m.name for m in symbol.service[0].method} >= {
        "ServerLive",
        "ServerReady",
        "ServerMetadata",
        "ModelReady",
        "ModelMetadata",
        "ModelInfer",
    }


def test_project_server_serves_the_protocol_beside_featurestore(
    settings: Settings, served: Served, kserve_modules: tuple[Any, Any]
) -> None:
    """The server main.build_server makes: OIP on the same port, listed by reflection."""
    pb, pb_grpc = kserve_modules
    with running_server(settings) as running:
        running.models.refresh()
        stub = pb_grpc.GRPCInferenceServiceStub(running.channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is False
        running.readiness.synced.set()
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is True
        reply = stub.ModelInfer(infer_request(pb, served.classifier, ROWS, "FP64"), timeout=10)
        got = {t.name: typed_output(t) for t in reply.outputs}
        want = reference(served.classifier_onnx, ROWS, np.float32, scaled=True)
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
        services = set(ProtoReflectionDescriptorDatabase(running.channel).get_services())
    featurestore_service = featurestore_pb2.DESCRIPTOR.services_by_name["FeatureStore"]
    assert {"inference.GRPCInferenceService", featurestore_service.full_name} <= services
