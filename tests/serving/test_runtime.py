"""The runtime: validation reasons, casts, scaler, ONNX Runtime outputs against numpy."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from featurestore.errors import ArtifactError, ValidationError
from featurestore.serving.runtime import LoadedModel, load_model
from tests.serving import onnx_models as om

FEATURES = [("debt_to_income_ratio", "float"), ("age_years", "int"), ("has_default", "bool")]
WEIGHTS = [1.5, -0.04, 0.8]
MEAN = [0.3, 40.0, 0.5]
SCALE = [0.2, 12.0, 0.5]


def _rows(n: int = 64, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(0, 1, n), rng.uniform(18, 80, n), rng.choice([0.0, 1.0, 0.4, -2.0], n)]
    )


def _load(
    artifacts: dict[str, bytes], features: om.FeatureSpec = FEATURES, *, allow_pickle: bool = False
) -> LoadedModel:
    manifest = om.make_manifest("m", "1", artifacts, features)
    return load_model(manifest, artifacts, allow_pickle=allow_pickle)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_classifier_with_scaler_equals_the_numpy_reference(dtype: type[np.floating]) -> None:
    model = _load(
        {
            "onnx": om.linear_classifier(3, WEIGHTS, -0.2, dtype=dtype),
            "json": om.scaler_json(MEAN, SCALE),
        }
    )
    assert model.input_dtype == np.dtype(dtype)
    assert model.output_names == ["label", "probabilities"]
    assert [f.name for f in model.features] == [name for name, _ in FEATURES]
    rows = _rows()
    got = model.infer(rows)
    want = om.expected_classifier(
        rows, WEIGHTS, -0.2, types=["float", "int", "bool"], mean=MEAN, scale=SCALE, dtype=dtype
    )
    assert got["label"].shape == (64,) and got["probabilities"].shape == (64, 2)
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    # Both classes occur, so the labels compare something.
    assert set(got["label"].tolist()) == {0, 1}


def test_regressor_and_a_scaler_inside_the_graph() -> None:
    plain = _load({"onnx": om.linear_regressor(3, WEIGHTS, 0.5)})
    inner = _load(
        {"onnx": om.linear_classifier(3, WEIGHTS, 0.0, inner_mean=MEAN, inner_scale=SCALE)}
    )
    rows = _rows()
    types = ["float", "int", "bool"]
    np.testing.assert_allclose(
        plain.infer(rows)["variable"],
        om.expected_regressor(rows, WEIGHTS, 0.5, types=types)["variable"],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        inner.infer(rows)["probabilities"],
        om.expected_classifier(rows, WEIGHTS, types=types, mean=MEAN, scale=SCALE)["probabilities"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_declared_types_are_cast_then_scaled() -> None:
    # Identity regressor columns: the output is what reached the graph.
    identity = {"onnx": om.linear_regressor(1, [1.0], 0.0, dtype=np.float64)}
    as_int = _load(identity, [("n", "int")])
    as_bool = _load(identity, [("b", "bool")])
    as_float = _load(identity, [("x", "float")])
    raw = np.array([[2.6], [-1.4], [0.0], [0.3], [7.0]])
    assert as_int.infer(raw)["variable"].ravel().tolist() == [3.0, -1.0, 0.0, 0.0, 7.0]
    assert as_bool.infer(raw)["variable"].ravel().tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert as_float.infer(raw)["variable"].ravel().tolist() == raw.ravel().tolist()
    scaled = _load({**identity, "json": om.scaler_json([2.0], [4.0])}, [("n", "int")])
    assert scaled.infer(raw)["variable"].ravel().tolist() == [0.25, -0.75, -0.5, -0.5, 1.25]
    assert raw[0, 0] == 2.6  # the caller's rows are not changed


def test_rows_of_the_wrong_width_are_refused() -> None:
    model = _load({"onnx": om.linear_classifier(3)})
    with pytest.raises(ValidationError, match="3 features"):
        model.infer(np.zeros((2, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_out_of_the_input_range_are_refused_by_name(dtype: type[np.floating]) -> None:
    # 1e300 is finite, but not in float32; through a scale of 1e-300 not in float64 either:
    # ONNX Runtime answered NaN probabilities (or a saturated 0/1) for them as a valid score.
    model = _load(
        {
            "onnx": om.linear_classifier(3, WEIGHTS, -0.2, dtype=dtype),
            "json": om.scaler_json([0.0, 40.0, 0.5], [1e-300, 12.0, 0.5]),
        }
    )
    rows = _rows(4)
    rows[:, 0] = 0.0  # scaled to 0
    rows[1, 1] = 1e300
    rows[2, 0] = 1e10
    with pytest.raises(ValidationError) as caught:
        model.infer(rows, ["a", "b", "c", "d"])
    message = str(caught.value)
    assert "debt_to_income_ratio=1e+10 of 'c'" in message
    assert ("age_years=1e+300 of 'b'" in message) is (dtype is np.float32)
    assert f"outside the range of its {np.dtype(dtype)} input" in message
    with pytest.raises(ValidationError, match="debt_to_income_ratio=1e\\+10 of row 2"):
        model.infer(rows)
    rows[1, 1], rows[2, 0] = 40.0, 0.0
    assert model.infer(rows)["probabilities"].shape == (4, 2)


def test_past_float32_without_a_scaler_is_refused_and_many_cells_are_counted() -> None:
    model = _load({"onnx": om.linear_classifier(3, WEIGHTS, -0.2)})
    rows = np.full((3, 3), 1e39)  # has_default is a bool: 1
    with pytest.raises(
        ValidationError, match=r"of row 1, .* of row 2 and 1 more: outside the range"
    ):
        model.infer(rows)


class Predictor:
    """A picklable stand-in for an sklearn classifier."""

    n_features_in_ = 3

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x[:, 0] > 0).astype(np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.clip(x[:, :1], 0, 1)
        return np.hstack([1 - p, p])


def test_pickles_load_only_when_allowed() -> None:
    data = pickle.dumps(Predictor())
    with pytest.raises(ArtifactError) as refused:
        _load({"pkl": data})
    assert refused.value.reason == "pickle_refused"
    assert "allow_pickle" in str(refused.value)
    model = _load({"pkl": data}, allow_pickle=True)
    out = model.infer(np.array([[0.25, 30.0, 1.0], [-1.0, 30.0, 0.0]]))
    assert out["label"].tolist() == [1, 0]
    assert out["probabilities"].tolist() == [[0.75, 0.25], [1.0, 0.0]]


def _reason(artifacts: dict[str, bytes], *, allow_pickle: bool = False) -> str:
    with pytest.raises(ArtifactError) as caught:
        _load(artifacts, allow_pickle=allow_pickle)
    assert str(caught.value).startswith("model m 1: ")
    return caught.value.reason


@pytest.mark.parametrize(
    ("artifacts", "reason"),
    [
        ({"json": om.scaler_json(MEAN, SCALE)}, "no_model"),
        ({"joblib": b"\x80\x05N."}, "pickle_refused"),
        ({"onnx": b"not a model"}, "onnx_invalid"),
        ({"onnx": om.linear_classifier(4)}, "input_width"),
        ({"onnx": om.two_input_model(3)}, "input_width"),
        ({"onnx": om.unknown_width_model()}, "input_width"),
        ({"onnx": om.linear_classifier(3), "json": b"{not json"}, "scaler_invalid"),
        ({"onnx": om.linear_classifier(3), "json": b"[1, 2, 3]"}, "scaler_invalid"),
        ({"onnx": om.linear_classifier(3), "json": b'{"mean": [0, 0, 0]}'}, "scaler_invalid"),
        (
            {"onnx": om.linear_classifier(3), "json": b'{"mean": [0, "a", 0], "scale": [1, 1, 1]}'},
            "scaler_invalid",
        ),
        (
            {
                "onnx": om.linear_classifier(3),
                "json": b'{"mean": [0, 0, 0], "scale": [1, 1e999, 1]}',
            },
            "scaler_invalid",
        ),
        (
            {"onnx": om.linear_classifier(3), "json": om.scaler_json(MEAN, [1, 0, 1])},
            "scaler_invalid",
        ),
        (
            {
                "onnx": om.linear_classifier(3),
                "json": b'{"mean": [0, true, 0], "scale": [1, 1, 1]}',
            },
            "scaler_invalid",
        ),
        ({"onnx": om.linear_classifier(3), "json": om.scaler_json([0, 0], [1, 1])}, "scaler_width"),
        ({"onnx": om.linear_classifier(3), "txt": b"notes"}, "unsupported_artifact"),
    ],
)
def test_each_artifact_error_reason(artifacts: dict[str, bytes], reason: str) -> None:
    assert _reason(artifacts) == reason


def test_two_model_artifacts_are_ambiguous() -> None:
    artifacts = {"onnx": om.linear_classifier(3), "pkl": pickle.dumps(Predictor())}
    assert _reason(artifacts, allow_pickle=True) == "unsupported_artifact"


def test_input_width_message_names_both_widths() -> None:
    with pytest.raises(ArtifactError, match="takes 4 features, the registry 3"):
        _load({"onnx": om.linear_classifier(4)})


def test_every_truncation_of_an_artifact_is_refused() -> None:
    # A download cut short (or a blob uploaded in part): no prefix loads, whatever its cut.
    onnx, scaler = om.linear_classifier(3), om.scaler_json(MEAN, SCALE)
    pickled = pickle.dumps(Predictor())
    for cut in range(len(onnx)):
        with pytest.raises(ArtifactError):
            _load({"onnx": onnx[:cut]})
    for cut in range(len(scaler)):
        with pytest.raises(ArtifactError):
            _load({"onnx": onnx, "json": scaler[:cut]})
    for cut in range(len(pickled)):
        with pytest.raises(ArtifactError):
            _load({"pkl": pickled[:cut]}, allow_pickle=True)


class _Touch:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("extension", ["onnx", "json", "pkl"])
def test_a_pickle_is_never_loaded_unless_allowed(extension: str, tmp_path: Path) -> None:
    loaded = tmp_path / "loaded"
    artifacts = {extension: pickle.dumps(_Touch(loaded))}
    if extension == "json":
        artifacts["onnx"] = om.linear_classifier(3)
    with pytest.raises(ArtifactError) as caught:
        _load(artifacts, allow_pickle=extension != "pkl")
    reasons = {"onnx": "onnx_invalid", "json": "scaler_invalid", "pkl": "pickle_refused"}
    assert caught.value.reason == reasons[extension]
    assert not loaded.exists()
