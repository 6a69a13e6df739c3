"""Served models in this process: validated, loaded once per version, run in ONNX Runtime."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydantic
import redis

from featurestore import metrics
from featurestore.constants import PROD_MODELS_KEY, model_manifest_key
from featurestore.errors import (
    ArtifactError,
    InputRangeError,
    ModelNotFoundError,
    ValidationError,
)
from featurestore.logs import quoted
from featurestore.serving import loaders
from featurestore.serving import manifest as published
from featurestore.serving.loaders import (
    ONNX_EXTENSION,
    PICKLE_EXTENSIONS,
    SCALER_EXTENSION,
    Runner,
)
from featurestore.serving.manifest import Manifest
from featurestore.store.online import as_text
from featurestore.store.registry import ExpectedFeature

log = logging.getLogger(__name__)

# Out-of-range values named in an error; the rest are counted.
MAX_NAMED_CELLS = 5


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
        # Finite rows stay finite in float64 without a scaler; otherwise the cast to float32
        # or the scaling can overflow to inf (checked in infer).
        self._may_overflow = scaler is not None or input_dtype != np.dtype(np.float64)

    def infer(
        self, rows: np.ndarray, row_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Every model output by name for raw rows (n, len(features)) in expected-feature
        order: values cast per declared type, then scaled, then run. A value that is no
        longer finite once cast and scaled is refused (ValidationError naming it, by
        `row_names` when given, else by row index)."""
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValidationError(
                f"model {self.model_id} takes rows of {len(self.features)} features, "
                f"got shape {rows.shape}"
            )
        x = self._cast(rows)
        if not self._may_overflow:
            return self._runner(x.astype(self.input_dtype, copy=False))
        # A finite value past the input type's range (1e300 into float32, or through a tiny
        # scale) became inf here, and ONNX Runtime answered NaN or a saturated score as a
        # valid prediction. The overflow is looked for once, after the cast (errstate keeps
        # numpy's warning out of the log): errstate 1.3 us, the check 1-3.5 us per call of 1
        # or 100 rows (timeit, load average 12).
        with np.errstate(over="ignore"):
            if self._scaler is not None:
                mean, scale = self._scaler
                x = (x - mean) / scale
            x = x.astype(self.input_dtype, copy=False)
        if not np.isfinite(x).all():
            bad = [(r, c) for r, c in np.argwhere(~np.isfinite(x)).tolist()]
            raise InputRangeError(self._out_of_range(rows, bad, row_names), bad)
        return self._runner(x)

    def _cast(self, rows: np.ndarray) -> np.ndarray:
        """Rows with int features rounded and bool features 0/1 (float64); `rows` itself
        when the model has neither."""
        if not (self._ints.size or self._bools.size):
            return rows
        x = np.array(rows, dtype=np.float64)
        if self._ints.size:
            x[:, self._ints] = np.rint(x[:, self._ints])
        if self._bools.size:
            x[:, self._bools] = x[:, self._bools] != 0
        return x

    def _out_of_range(
        self, rows: np.ndarray, bad: list[tuple[int, int]], row_names: Sequence[str] | None
    ) -> str:
        cells = [
            f"{self.feature_names[c]}={float(rows[r, c]):g} of "
            + (repr(row_names[r]) if row_names is not None else f"row {r}")
            for r, c in bad[:MAX_NAMED_CELLS]
        ]
        more = f" and {len(bad) - MAX_NAMED_CELLS} more" if len(bad) > MAX_NAMED_CELLS else ""
        return (
            f"model {self.model_id} cannot take {', '.join(cells)}{more}: outside the range "
            f"of its {self.input_dtype} input once cast and scaled"
        )


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
        scaler = loaders.scaler(artifacts[SCALER_EXTENSION], width, where)
    if models[0] == ONNX_EXTENSION:
        runner, outputs, dtype = loaders.onnx(artifacts[ONNX_EXTENSION], width, where)
    else:
        runner, outputs, dtype = loaders.pickled(artifacts[models[0]], models[0], width, where)
    model = LoadedModel(manifest, runner, outputs, dtype, scaler)
    try:
        # Some graphs load and fail only when run (a shape inside that does not fit).
        model.infer(np.zeros((1, width)))
    except Exception as exc:
        reason = "onnx_invalid" if models[0] == ONNX_EXTENSION else "unsupported_artifact"
        raise ArtifactError(reason, f"{where}: fails on a row of zeros: {exc}") from exc
    return model


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
