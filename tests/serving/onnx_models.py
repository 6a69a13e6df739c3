"""Tiny ONNX models built with onnx.helper, their numpy references, and test publishing.

Shapes follow what skl2onnx exports: a classifier (zipmap=False) gives 'label' int64 (N,)
and 'probabilities' float32 (N, 2); a regressor gives 'variable' (N, 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

import numpy as np
import onnx
import orjson
import redis
from onnx import TensorProto, helper, numpy_helper

from featurestore.constants import model_artifact_key
from featurestore.serving import manifest
from featurestore.serving.manifest import ArtifactInfo, Manifest
from featurestore.store.registry import ExpectedFeature

# ONNX Runtime 1.31 reads IR 10 / opset 17 models; pinned so onnx upgrades change nothing.
_IR_VERSION = 10
_OPSET = 17

FeatureSpec = Sequence[tuple[str, str] | ExpectedFeature]


def _elem(dtype: type[np.floating]) -> int:
    return TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT


def _finish(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR_VERSION
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _linear_nodes(
    n_features: int,
    weights: Sequence[float],
    bias: float,
    dtype: type[np.floating],
    inner_mean: Sequence[float] | None,
    inner_scale: Sequence[float] | None,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing z = w.x + b (N, 1) from 'input', optionally scaling x in the graph."""
    if len(weights) != n_features:
        raise ValueError(f"{len(weights)} weights for {n_features} features")
    inits = [
        numpy_helper.from_array(np.asarray(weights, dtype=dtype).reshape(n_features, 1), "W"),
        numpy_helper.from_array(np.asarray([bias], dtype=dtype), "B"),
    ]
    nodes: list[onnx.NodeProto] = []
    x = "input"
    if inner_mean is not None and inner_scale is not None:
        inits.append(numpy_helper.from_array(np.asarray(inner_mean, dtype=dtype), "M"))
        inits.append(numpy_helper.from_array(np.asarray(inner_scale, dtype=dtype), "S"))
        nodes += [
            helper.make_node("Sub", [x, "M"], ["xc"]),
            helper.make_node("Div", ["xc", "S"], ["xs"]),
        ]
        x = "xs"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["z"]),
    ]
    return nodes, inits


def linear_classifier(
    n_features: int,
    weights: Sequence[float] | None = None,
    bias: float = 0.0,
    *,
    dtype: type[np.floating] = np.float32,
    inner_mean: Sequence[float] | None = None,
    inner_scale: Sequence[float] | None = None,
) -> bytes:
    """Binary classifier: p1 = sigmoid(w.x + b); 'probabilities' [1-p1, p1], 'label' argmax.
    `n_features` is the graph's input width (give a manifest another count to test
    'input_width'); inner_mean/inner_scale put a scaler inside the graph."""
    weights = list(weights) if weights is not None else default_weights(n_features)
    elem = _elem(dtype)
    nodes, inits = _linear_nodes(n_features, weights, bias, dtype, inner_mean, inner_scale)
    inits.append(numpy_helper.from_array(np.asarray([1.0], dtype=dtype), "one"))
    nodes += [
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probs"], axis=1),
        helper.make_node("Cast", ["probs"], ["probabilities"], to=TensorProto.FLOAT),
        helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "linear_classifier",
        [helper.make_tensor_value_info("input", elem, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        inits,
    )
    return _finish(graph)


def linear_regressor(
    n_features: int,
    weights: Sequence[float] | None = None,
    bias: float = 0.0,
    *,
    dtype: type[np.floating] = np.float32,
) -> bytes:
    """Regressor: 'variable' (N, 1) = w.x + b, in the input's dtype."""
    weights = list(weights) if weights is not None else default_weights(n_features)
    nodes, inits = _linear_nodes(n_features, weights, bias, dtype, None, None)
    nodes.append(helper.make_node("Identity", ["z"], ["variable"]))
    elem = _elem(dtype)
    graph = helper.make_graph(
        nodes,
        "linear_regressor",
        [helper.make_tensor_value_info("input", elem, [None, n_features])],
        [helper.make_tensor_value_info("variable", elem, [None, 1])],
        inits,
    )
    return _finish(graph)


def two_input_model(n_features: int) -> bytes:
    """A graph with two inputs (the runtime serves one-input graphs only)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["variable"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, n_features]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, n_features]),
        ],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, n_features])],
    )
    return _finish(graph)


def unknown_width_model() -> bytes:
    """A graph whose input width is symbolic: the width cannot be checked."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["variable"])],
        "unknown_width",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, "width"])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, "width"])],
    )
    return _finish(graph)


def default_weights(n_features: int) -> list[float]:
    """Distinct, small weights so that every feature changes the score."""
    return [0.5 - 0.25 * i for i in range(n_features)]


def scaler_json(mean: Sequence[float], scale: Sequence[float]) -> bytes:
    """A JSON scaler artifact as the runtime reads it."""
    return orjson.dumps({"mean": list(mean), "scale": list(scale)})


def cast_rows(rows: np.ndarray, types: Sequence[str] | None) -> np.ndarray:
    """Raw rows cast per declared type: int rounded, bool as 0/1, float unchanged."""
    out = np.array(rows, dtype=np.float64, copy=True)
    for column, kind in enumerate(types or ()):
        if kind == "int":
            out[:, column] = np.round(out[:, column])
        elif kind == "bool":
            out[:, column] = (out[:, column] != 0).astype(np.float64)
    return out


def _prepare(
    rows: np.ndarray,
    types: Sequence[str] | None,
    mean: Sequence[float] | None,
    scale: Sequence[float] | None,
    dtype: type[np.floating],
) -> np.ndarray:
    x = cast_rows(rows, types)
    if mean is not None and scale is not None:
        x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)
    return x.astype(dtype)


def expected_classifier(
    rows: np.ndarray,
    weights: Sequence[float],
    bias: float = 0.0,
    *,
    types: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    dtype: type[np.floating] = np.float32,
) -> dict[str, np.ndarray]:
    """What linear_classifier (served with that scaler and those types) returns for raw rows."""
    x = _prepare(rows, types, mean, scale, dtype)
    z = x @ np.asarray(weights, dtype=dtype) + dtype(bias)
    p1 = 1.0 / (1.0 + np.exp(-z))
    probs = np.stack([1.0 - p1, p1], axis=1)
    return {
        "label": np.argmax(probs, axis=1).astype(np.int64),
        "probabilities": probs.astype(np.float32),
    }


def expected_regressor(
    rows: np.ndarray,
    weights: Sequence[float],
    bias: float = 0.0,
    *,
    types: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    dtype: type[np.floating] = np.float32,
) -> dict[str, np.ndarray]:
    """What linear_regressor returns for raw rows."""
    x = _prepare(rows, types, mean, scale, dtype)
    z = x @ np.asarray(weights, dtype=dtype) + dtype(bias)
    return {"variable": z.reshape(-1, 1).astype(dtype)}


def expected_features(features: FeatureSpec) -> list[ExpectedFeature]:
    """ExpectedFeature list from (name, type) pairs (indexes in order), or as given."""
    out: list[ExpectedFeature] = []
    for index, item in enumerate(features):
        if isinstance(item, ExpectedFeature):
            out.append(item)
        else:
            name, kind = item
            out.append(ExpectedFeature.model_validate({"index": index, "name": name, "type": kind}))
    return out


def make_manifest(
    model_id: str,
    version: str,
    artifacts: dict[str, bytes],
    features: FeatureSpec,
    *,
    container: str = "models",
) -> Manifest:
    """A manifest for these artifact bytes; each ETag is a digest of its bytes, so changed
    bytes change the fingerprint as a new blob would."""
    now = dt.datetime.now(dt.UTC)
    infos = {
        ext: ArtifactInfo(
            extension=ext,
            artifact_type="scaler" if ext == "json" else "model",
            container=container,
            blob=f"{model_id}/{version}_production.{ext}",
            etag='"0x' + hashlib.sha1(data).hexdigest()[:16].upper() + '"',
            bytes=len(data),
            synced_at=now,
        )
        for ext, data in artifacts.items()
    }
    return Manifest(
        model_id=model_id,
        version=version,
        expected_features=expected_features(features),
        artifacts=infos,
        published_at=now,
    )


def publish_model(
    client: redis.Redis,
    model_id: str,
    version: str,
    artifacts: dict[str, bytes],
    features: FeatureSpec,
) -> Manifest:
    """Serve these artifacts straight from Redis (no Azure): one MULTI as the sync does;
    artifact keys of a previous version's other extensions are removed."""
    published = make_manifest(model_id, version, artifacts, features)
    previous = manifest.read_manifest(client, model_id)
    stale = (
        []
        if previous is None
        else [
            model_artifact_key(model_id, ext) for ext in previous.artifacts if ext not in artifacts
        ]
    )
    pipe = client.pipeline(transaction=True)
    manifest.publish(pipe, published, artifacts, stale)
    pipe.execute()
    return published
