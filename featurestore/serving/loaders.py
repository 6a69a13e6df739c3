"""Artifact bytes -> something that runs: an ONNX graph in ONNX Runtime, a JSON scaler, and
(only when an operator allows it) a pickled model. Each raises ArtifactError naming why."""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from featurestore.errors import ArtifactError

ONNX_EXTENSION = "onnx"
SCALER_EXTENSION = "json"
PICKLE_EXTENSIONS = frozenset({"pkl", "pickle", "joblib"})
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
}

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def session_options() -> ort.SessionOptions:
    """ONNX Runtime options for one-row requests served by many threads at once."""
    options = ort.SessionOptions()
    # bench/ort_options.py, 2 cores, 6-feature models (linear, sklearn logistic, GBM of
    # 100 trees): one row costs about the same whatever the threads, execution mode or
    # graph optimisation (except two intra-op threads without spinning: far slower on the
    # GBM). One intra-op thread means no thread pool: no pool threads spinning on the 2
    # cores that the gRPC threads need, and calls from several request threads run side by
    # side. The cost: 100 GBM rows are slower at p50 than with 2 threads (faster at p99),
    # far inside Predict's budget; parallel execution gained nothing (README, Benchmarks).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def scaler(raw: bytes, width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A JSON scaler's mean and scale, checked against the model's width."""
    shape = 'not {"mean": [...], "scale": [...]} of finite numbers with no zero scale'
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ArtifactError("scaler_invalid", f"{where}: scaler is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ArtifactError("scaler_invalid", f"{where}: scaler {shape}")
    columns = []
    for key in ("mean", "scale"):
        values = data.get(key)
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise ArtifactError("scaler_invalid", f"{where}: scaler {key!r} {shape}")
        columns.append(np.asarray(values, dtype=np.float64))
    mean, scale = columns
    if not np.all(scale != 0):
        raise ArtifactError("scaler_invalid", f"{where}: scaler has a zero scale")
    if len(mean) != width or len(scale) != width:
        raise ArtifactError(
            "scaler_width",
            f"{where}: scaler has {len(mean)} means and {len(scale)} scales for {width} features",
        )
    return mean, scale


def onnx(data: bytes, width: int, where: str) -> tuple[Runner, list[str], np.dtype[Any]]:
    """An ONNX graph in ONNX Runtime: its runner, output names and input dtype."""
    try:
        session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises several unrelated pybind11 types
        raise ArtifactError("onnx_invalid", f"{where}: ONNX Runtime cannot load it: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ArtifactError("input_width", f"{where}: the graph has {len(inputs)} inputs, not 1")
    shape = inputs[0].shape
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ArtifactError("input_width", f"{where}: input shape {shape} is not [batch, {width}]")
    if shape[1] != width:
        raise ArtifactError(
            "input_width", f"{where}: the graph takes {shape[1]} features, the registry {width}"
        )
    dtype = _INPUT_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise ArtifactError(
            "unsupported_artifact", f"{where}: input type {inputs[0].type} (float or double only)"
        )
    name: str = inputs[0].name
    outputs: list[str] = [o.name for o in session.get_outputs()]
    run = session.run

    def runner(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, run(outputs, {name: x}), strict=True))

    return runner, outputs, dtype


def pickled(
    data: bytes, extension: str, width: int, where: str
) -> tuple[Runner, list[str], np.dtype[Any]]:
    """A pickled or joblib model with predict(): its runner, outputs and input dtype."""
    # Only reached when an operator set allow_pickle: unpickling runs the artifact's code.
    try:
        if extension == "joblib":
            import joblib  # in the train extra, not the server's dependencies

            model = joblib.load(io.BytesIO(data))
        else:
            model = pickle.loads(data)  # noqa: S301 (only when the operator allowed pickles)
    except ImportError as exc:
        raise ArtifactError("unsupported_artifact", f"{where}: joblib is not installed") from exc
    except Exception as exc:
        raise ArtifactError("unsupported_artifact", f"{where}: cannot unpickle: {exc}") from exc
    if not callable(getattr(model, "predict", None)):
        raise ArtifactError("unsupported_artifact", f"{where}: the object has no predict()")
    declared = getattr(model, "n_features_in_", width)
    if declared != width:
        raise ArtifactError(
            "input_width", f"{where}: the model takes {declared} features, the registry {width}"
        )
    proba = getattr(model, "predict_proba", None)
    outputs = ["label", "probabilities"] if callable(proba) else ["variable"]

    def runner(x: np.ndarray) -> dict[str, np.ndarray]:
        if callable(proba):
            return {"label": np.asarray(model.predict(x)), "probabilities": np.asarray(proba(x))}
        return {"variable": np.asarray(model.predict(x))}

    return runner, outputs, np.dtype(np.float64)
