"""Served models in this process: validated, loaded once per version, run in ONNX Runtime."""

from __future__ import annotations

import io
import logging
import math
import pickle
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pydantic
import redis

from featurestore import metrics
from featurestore.constants import PROD_MODELS_KEY, model_manifest_key
from featurestore.errors import ArtifactError, ModelNotFoundError, ValidationError
from featurestore.logs import quoted
from featurestore.serving import manifest as published
from featurestore.serving.manifest import Manifest
from featurestore.store.online import as_text
from featurestore.store.registry import ExpectedFeature

log = logging.getLogger(__name__)

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


class LoadedModel:
    """One served version, ready to run: casts, scaler and the model itself."""

    def __init__(
        self,
        manifest: Manifest,
        runner: Runner,
        output_names: list[str],
        input_dtype: np.dtype[Any],
        scaler: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.version = manifest.version
        self.fingerprint = manifest.fingerprint
        self.features: list[ExpectedFeature] = sorted(
            manifest.expected_features, key=lambda f: f.index
        )
        self.feature_names = [f.name for f in self.features]
        self.output_names = output_names
        self.input_dtype = input_dtype
        self._runner = runner
        self._scaler = scaler
        self._ints = np.array([i for i, f in enumerate(self.features) if f.type == "int"], int)
        self._bools = np.array([i for i, f in enumerate(self.features) if f.type == "bool"], int)

    def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every model output by name for raw rows (n, len(features)) in expected-feature
        order: values cast per declared type, then scaled, then run."""
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValidationError(
                f"model {self.model_id} takes rows of {len(self.features)} features, "
                f"got shape {rows.shape}"
            )
        x = rows
        if self._ints.size or self._bools.size:
            x = np.array(rows, dtype=np.float64)
            if self._ints.size:
                x[:, self._ints] = np.rint(x[:, self._ints])
            if self._bools.size:
                x[:, self._bools] = x[:, self._bools] != 0
        if self._scaler is not None:
            mean, scale = self._scaler
            x = (x - mean) / scale
        return self._runner(x.astype(self.input_dtype, copy=False))


def load_model(
    manifest: Manifest, artifacts: dict[str, bytes], *, allow_pickle: bool
) -> LoadedModel:
    """Validate and load one version; ArtifactError(reason, message) names what is wrong."""
    width = len(manifest.expected_features)
    where = f"model {manifest.model_id} {manifest.version}"
    known = PICKLE_EXTENSIONS | {ONNX_EXTENSION, SCALER_EXTENSION}
    unknown = sorted(set(artifacts) - known)
    if unknown:
        raise ArtifactError("unsupported_artifact", f"{where}: unsupported artifact .{unknown[0]}")
    pickles = sorted(PICKLE_EXTENSIONS & set(artifacts))
    if pickles and not allow_pickle:
        raise ArtifactError(
            "pickle_refused",
            f"{where}: .{pickles[0]} artifacts are refused (unpickling runs arbitrary code; "
            "set allow_pickle to accept them)",
        )
    models = sorted(pickles + ([ONNX_EXTENSION] if ONNX_EXTENSION in artifacts else []))
    if not models:
        raise ArtifactError("no_model", f"{where}: no .onnx artifact")
    if len(models) > 1:
        raise ArtifactError(
            "unsupported_artifact", f"{where}: several model artifacts ({', '.join(models)})"
        )
    scaler = None
    if SCALER_EXTENSION in artifacts:
        scaler = _scaler(artifacts[SCALER_EXTENSION], width, where)
    if models[0] == ONNX_EXTENSION:
        runner, outputs, dtype = _onnx(artifacts[ONNX_EXTENSION], width, where)
    else:
        runner, outputs, dtype = _pickled(artifacts[models[0]], models[0], width, where)
    model = LoadedModel(manifest, runner, outputs, dtype, scaler)
    try:
        # Some graphs load and fail only when run (a shape inside that does not fit).
        model.infer(np.zeros((1, width)))
    except Exception as exc:
        reason = "onnx_invalid" if models[0] == ONNX_EXTENSION else "unsupported_artifact"
        raise ArtifactError(reason, f"{where}: fails on a row of zeros: {exc}") from exc
    return model


def _scaler(raw: bytes, width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
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


def _onnx(data: bytes, width: int, where: str) -> tuple[Runner, list[str], np.dtype[Any]]:
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


def _pickled(
    data: bytes, extension: str, width: int, where: str
) -> tuple[Runner, list[str], np.dtype[Any]]:
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


class ModelCache:
    """Per gRPC process: each (model, fingerprint) loaded once; a refresh picks up new
    versions without a restart."""

    def __init__(self, client: redis.Redis, *, allow_pickle: bool) -> None:
        self.client = client
        self.allow_pickle = allow_pickle
        # Replaced whole by refresh, never changed in place: get() reads it without a lock.
        self._models: dict[str, LoadedModel] = {}
        # The fingerprint that last failed to load, per model: not retried every refresh.
        self._failed: dict[str, str] = {}
        self._refreshing = threading.Lock()

    def get(self, model_id: str) -> LoadedModel:
        """The served version of a model, from memory (no Redis round trip)."""
        model = self._models.get(model_id)
        if model is None:
            raise ModelNotFoundError(f"model {model_id!r} is not served")
        return model

    def served(self) -> list[str]:
        """Ids of the models loaded in this process, sorted."""
        return sorted(self._models)

    def refresh(self) -> None:
        """Read prod_models and the manifests; load changed versions, drop removed models.
        A version that fails to load leaves the one loaded before in place."""
        with self._refreshing:
            served = {as_text(m) for m in self.client.smembers(PROD_MODELS_KEY)}
            ids = sorted(served)
            raws = self.client.mget([model_manifest_key(i) for i in ids]) if ids else []
            models: dict[str, LoadedModel] = {}
            for model_id, raw in zip(ids, raws, strict=True):
                loaded = self._refresh_one(model_id, raw)
                if loaded is not None:
                    models[model_id] = loaded
            for gone in sorted(set(self._models) - set(models)):
                log.info("model_dropped model=%s", gone)
            self._models = models
            self._failed = {i: f for i, f in self._failed.items() if i in served}

    def _refresh_one(self, model_id: str, raw: bytes | str | None) -> LoadedModel | None:
        old = self._models.get(model_id)
        if raw is None:
            return None
        try:
            fingerprint = Manifest.from_json(raw).fingerprint
            unchanged = old is not None and old.fingerprint == fingerprint
            if unchanged or self._failed.get(model_id) == fingerprint:
                return old
            found = published.read_published(self.client, model_id)
        except pydantic.ValidationError:
            log.warning("model_manifest_invalid model=%s", model_id)
            return old
        if found is None:
            return old
        try:
            model = load_model(*found, allow_pickle=self.allow_pickle)
        except ArtifactError as exc:
            self._failed[model_id] = found[0].fingerprint
            metrics.MODEL_LOADS.labels(model_id, exc.reason).inc()
            log.error(
                "model_load_failed model=%s version=%s reason=%s kept=%s error=%s",
                model_id,
                found[0].version,
                exc.reason,
                None if old is None else old.version,
                quoted(exc),
            )
            return old
        self._failed.pop(model_id, None)
        metrics.MODEL_LOADS.labels(model_id, "ok").inc()
        log.info(
            "model_loaded model=%s version=%s fingerprint=%s",
            model_id,
            model.version,
            model.fingerprint,
        )
        return model

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Refresh every interval until stop is set (a thread's target); failures are
        logged and retried at the next interval."""
        while not stop.is_set():
            try:
                self.refresh()
            except redis.RedisError as exc:
                log.warning("model_refresh_failed error=%s", type(exc).__name__)
            except Exception:
                # The loop is the only way new versions arrive: it must outlive a bug.
                log.exception("model_refresh_failed error=unexpected")
            stop.wait(interval_s)
