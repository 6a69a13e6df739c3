"""Model registry validation (no services)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from featurestore.errors import ValidationError
from featurestore.store.registry import load_specs

BASE: dict[str, Any] = {
    "model_id": "credit_risk_v1",
    "artifact_type": "model",
    "version": "1.0.0",
    "trained_date": "2024-04-30",
    "azure_location": "ai-models",
    "expected_features": [
        {"index": 0, "name": "debt_to_income_ratio", "type": "float"},
        {"index": 1, "name": "age_years", "type": "int"},
    ],
}


def write(tmp_path: Path, text: str, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    return path


def test_yaml_and_json_files_load(tmp_path: Path) -> None:
    import json

    yaml_text = (
        "- model_id: credit_risk_v1\n  artifact_type: scaler\n  version: 1.0.0\n"
        "  azure_location: ai-models\n  expected_features:\n"
        "    - {index: 1, name: age_years, type: int}\n"
        "    - {index: 0, name: debt_to_income_ratio, type: float}\n"
    )
    [scaler] = load_specs(write(tmp_path, yaml_text))
    assert [f.name for f in scaler.expected_features] == ["debt_to_income_ratio", "age_years"]
    [model] = load_specs(write(tmp_path, json.dumps(BASE), ".json"))
    assert model.trained_date is not None and model.trained_date.isoformat() == "2024-04-30"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {
                "expected_features": [
                    {"index": 0, "name": "a", "type": "float"},
                    {"index": 2, "name": "b", "type": "int"},
                ]
            },
            r"run 0\.\.1 without gaps.*missing \[1\]",
        ),
        (
            {
                "expected_features": [
                    {"index": 0, "name": "a", "type": "float"},
                    {"index": 0, "name": "b", "type": "int"},
                ]
            },
            "without gaps or repeats",
        ),
        (
            {
                "expected_features": [
                    {"index": 0, "name": "a", "type": "float"},
                    {"index": 1, "name": "a", "type": "int"},
                ]
            },
            "repeated: a",
        ),
        (
            {"expected_features": [{"index": 0, "name": "a", "type": "string"}]},
            r"expected_features\.0\.type: Input should be 'float', 'int' or 'bool'",
        ),
        (
            {"expected_features": [{"index": -1, "name": "a", "type": "int"}]},
            r"expected_features\.0\.index",
        ),
        ({"model_id": "bad id!"}, "model_id: String should match pattern"),
        ({"version": ""}, "version: String should have at least 1 character"),
        ({"trained_date": "last tuesday"}, "trained_date"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_validation_errors_name_what_is_wrong(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    import json

    with pytest.raises(ValidationError, match=reason):
        load_specs(write(tmp_path, json.dumps({**BASE, **change}), ".json"))


def test_missing_field_and_bad_syntax(tmp_path: Path) -> None:
    import json

    spec = {k: v for k, v in BASE.items() if k != "expected_features"}
    with pytest.raises(ValidationError, match="expected_features: Field required"):
        load_specs(write(tmp_path, json.dumps(spec), ".json"))
    with pytest.raises(ValidationError, match="not valid JSON/YAML"):
        load_specs(write(tmp_path, "model_id: [unclosed"))
    with pytest.raises(ValidationError, match="No such file"):
        load_specs(tmp_path / "absent.yaml")
