"""The demo's steps, in order, each shown as it runs; `run` is what `make demo` calls."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from bridge.producer import FileProducer
from demo import client, data, model, publish
from featurestore import stack
from featurestore.errors import FeatureStoreError
from featurestore.settings import Settings
from tasks.app import configure

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
STEPS = 10


class StepError(Exception):
    """A demo step failed; the message says which and why."""


@dataclass(frozen=True)
class Options:
    """What the demo runs on: how many applicants, which of them to score, which model."""

    entities: int = 5000
    shown: int = 10
    model_id: str = publish.MODEL_ID
    version: str = publish.VERSION
    prefix: str = "applicant_"
    seed: int = 7


@dataclass(frozen=True)
class Outcome:
    """Scores of the shown entities three ways, and how far apart they are."""

    entity_ids: list[str]
    served: np.ndarray
    in_process: np.ndarray
    sklearn: np.ndarray
    served_version: str
    max_diff: float
    max_feature_diff: float
    credit: data.CreditData
    artifacts: model.Artifacts

    @property
    def ok(self) -> bool:
        """Every served score within TOLERANCE of both in-process scores."""
        return self.max_diff <= TOLERANCE and self.max_feature_diff == 0.0


class Steps:
    """Numbered progress lines: `[n/N] what ... done in 0.1s (detail)`."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.number = 0

    @contextmanager
    def step(self, what: str) -> Iterator[list[str]]:
        """Run one step; the list it yields collects the detail shown when it is done."""
        self.number += 1
        self.out(f"[{self.number}/{STEPS}] {what} ...")
        began = time.monotonic()
        detail: list[str] = []
        try:
            yield detail
        except Exception as exc:
            log.debug("demo_step_failed step=%s", what, exc_info=True)
            raise StepError(f"step {self.number} ({what}) failed: {describe(exc)}") from exc
        note = f" ({'; '.join(detail)})" if detail else ""
        self.out(f"      done in {time.monotonic() - began:.1f}s{note}")


def describe(exc: BaseException) -> str:
    """A one-line account of an error: gRPC status and details, or the error's own text."""
    import grpc

    if isinstance(exc, grpc.RpcError):
        code, details = exc.code(), exc.details()
        return f"gRPC {code.name if code else '?'}: {details}"
    if isinstance(exc, FeatureStoreError | StepError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def ensure_stack(settings: Settings) -> str:
    """Start the stack unless every program already runs; what was done."""
    programs = stack.programs(settings)
    if programs and all(p.state == "RUNNING" for p in programs):
        return f"{len(programs)} programs already running"
    stack.up(settings)
    return "started"


def run(settings: Settings, options: Options, out: Callable[[str], None] = print) -> Outcome:
    """Every step of the demo; raises StepError naming the step that failed."""
    steps = Steps(out)
    folder = settings.state_dir / "demo"
    with steps.step("stack") as note:
        note.append(ensure_stack(settings))
        folder.mkdir(parents=True, exist_ok=True)
        app = configure(settings)
    with steps.step(f"generate credit-risk data for {options.entities} applicants") as note:
        credit = data.generate(options.entities, seed=options.seed, prefix=options.prefix)
        event_time = dt.datetime.now(dt.UTC).replace(microsecond=0)
        parquet = folder / f"{options.prefix}features.parquet"
        events = data.write_parquet(credit, parquet, event_time)
        note.append(f"{events} feature events, default rate {credit.labels.mean():.0%}")
    with steps.step("train StandardScaler + LogisticRegression (scikit-learn)") as note:
        pipeline = model.train(credit)
        note.append(f"training accuracy {pipeline.score(credit.features, credit.labels):.3f}")
    with steps.step("export to ONNX (skl2onnx) and the scaler to JSON") as note:
        artifacts = model.export(pipeline)
        (folder / "model_production.onnx").write_bytes(artifacts.onnx)
        (folder / "scaler_production.json").write_bytes(artifacts.scaler_json)
        note.append(f"{len(artifacts.onnx)} + {len(artifacts.scaler_json)} bytes in {folder}")
    with steps.step(f"upload to Azure Blob container {settings.azure_container}") as note:
        etags = publish.upload(settings, options.model_id, artifacts)
        note.append(", ".join(f"{options.model_id}/{name}" for name, _ in publish.BLOBS.values()))
    with steps.step(f"register and promote {options.model_id} {options.version}") as note:
        specs = publish.specs(settings, options.model_id, options.version, data.FEATURES)
        new = publish.register_and_promote(settings, app, specs, folder)
        note.append(f"registered {', '.join(new)}" if new else "already registered")
    with steps.step(f"ingest features through Kafka (fstore produce {parquet.name})") as note:
        report = FileProducer(settings).run([parquet])
        if report.rows_rejected:
            raise StepError(f"{report.rows_rejected} rows rejected: {report.rejects[0]}")
        note.append(report.summary())
    channel, stub = client.connect(settings)
    with channel:
        with steps.step("wait until the model is served (GetModel)") as note:
            served_model = client.wait_served(stub, options.model_id, options.version, etags)
            note.append(f"version {served_model.version}, artifacts {sorted(etags)}")
        with steps.step("wait until the features are online (GetOnlineFeatures)") as note:
            client.wait_online(stub, credit.entity_ids, data.FEATURE_NAMES, event_time)
            note.append(f"{options.entities} entities x {len(data.FEATURE_NAMES)} features")
        shown = credit.entity_ids[: options.shown]
        in_process = model.InProcessModel(artifacts).scores(credit.rows(shown))
        with steps.step(f"Predict over gRPC for {len(shown)} entities") as note:
            # Bounded by a few refresh periods of the gRPC process's model cache.
            patience = 5 * settings.model_refresh_interval_s + 5
            served, waited = client.predict_current(
                stub, options.model_id, shown, in_process, tolerance=TOLERANCE, timeout_s=patience
            )
            note.append(f"model version {served.version}, scores current after {waited:.1f}s")
    rows = credit.rows(shown)
    by_sklearn = model.sklearn_scores(pipeline, rows)
    diff = max(
        float(np.max(np.abs(served.scores - in_process))),
        float(np.max(np.abs(served.scores - by_sklearn))),
    )
    feature_diff = float(np.max(np.abs(served.used - rows))) if served.used.size else np.inf
    return Outcome(
        shown,
        served.scores,
        in_process,
        by_sklearn,
        served.version,
        diff,
        feature_diff,
        credit,
        artifacts,
    )


def table(outcome: Outcome) -> str:
    """The scores side by side, and the largest difference."""
    header = ["ENTITY", "SERVED", "IN-PROCESS", "SKLEARN", "|SRV-ORT|", "|SRV-SKL|"]
    lines = [f"{header[0]:<18}" + "".join(f"{h:>12}" for h in header[1:])]
    for i, entity in enumerate(outcome.entity_ids):
        served, local, sk = outcome.served[i], outcome.in_process[i], outcome.sklearn[i]
        lines.append(
            f"{entity:<18}{served:>12.6f}{local:>12.6f}{sk:>12.6f}"
            f"{abs(served - local):>12.2e}{abs(served - sk):>12.2e}"
        )
    same = "equal" if outcome.max_feature_diff == 0 else "DIFFER FROM"
    lines.append(
        f"largest absolute difference: {outcome.max_diff:.2e} (tolerance {TOLERANCE:.0e}); "
        f"features used by the server {same} the ingested values; "
        f"served model version {outcome.served_version}"
    )
    return "\n".join(lines)
