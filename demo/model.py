"""Train the credit-risk model, export it to ONNX plus a JSON scaler, and score in-process."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import orjson
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from demo.data import CreditData


@dataclass(frozen=True)
class Artifacts:
    """What gets published: the ONNX model (unscaled input) and the scaler as JSON."""

    onnx: bytes
    scaler_json: bytes


def train(data: CreditData) -> Pipeline:
    """A standard scaler and a logistic regression fitted on the data."""
    pipeline = Pipeline(
        [("scaler", StandardScaler()), ("classifier", LogisticRegression(max_iter=1000))]
    )
    pipeline.fit(data.features, data.labels)
    return pipeline


def export(pipeline: Pipeline) -> Artifacts:
    """The classifier as ONNX (input already scaled; outputs 'label' and 'probabilities')
    and the fitted scaler as {"mean": [...], "scale": [...]} in expected-feature order."""
    scaler: StandardScaler = pipeline.named_steps["scaler"]
    classifier: LogisticRegression = pipeline.named_steps["classifier"]
    width = len(scaler.mean_)
    model = to_onnx(
        classifier,
        np.zeros((1, width), dtype=np.float32),
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    scaler_json = orjson.dumps(
        {"mean": [float(v) for v in scaler.mean_], "scale": [float(v) for v in scaler.scale_]}
    )
    return Artifacts(onnx=model.SerializeToString(), scaler_json=scaler_json)


def sklearn_scores(pipeline: Pipeline, rows: np.ndarray) -> np.ndarray:
    """Probability of default by scikit-learn itself (float64 throughout)."""
    return np.asarray(pipeline.predict_proba(rows)[:, 1], dtype=np.float64)


class InProcessModel:
    """The published artifacts run in this process: scaler from the JSON, then ONNX Runtime."""

    def __init__(self, artifacts: Artifacts) -> None:
        scaler = orjson.loads(artifacts.scaler_json)
        self.mean = np.asarray(scaler["mean"], dtype=np.float64)
        self.scale = np.asarray(scaler["scale"], dtype=np.float64)
        self.session = ort.InferenceSession(artifacts.onnx, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def outputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every model output for raw (unscaled) rows in expected-feature order."""
        scaled = ((rows - self.mean) / self.scale).astype(np.float32)
        values = self.session.run(None, {self.input_name: scaled})
        return dict(zip(self.output_names, (np.asarray(v) for v in values), strict=True))

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Probability of default (class 1) of each row."""
        return np.asarray(self.outputs(rows)["probabilities"][:, 1], dtype=np.float64)
