"""Registry commands through the DuckDB service and the CLI, against the real stack."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from featurestore.settings import Settings
from featurestore.store.registry import ModelRecord, list_sql
from tasks.app import configure
from tasks.client.query import query
from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def spec(model_id: str, version: str, artifact: str = "model") -> dict[str, object]:
    return {
        "model_id": model_id,
        "artifact_type": artifact,
        "version": version,
        "trained_date": "2024-04-30",
        "azure_location": "ai-models",
        "expected_features": [
            {"index": 0, "name": "debt_to_income_ratio", "type": "float"},
            {"index": 1, "name": "age_years", "type": "int"},
            {"index": 2, "name": "has_default", "type": "bool"},
        ],
    }


def records(settings: Settings, model_id: str) -> dict[tuple[str, str], str]:
    sql, params = list_sql(model_id, None)
    rows = query(configure(settings), sql, params, ModelRecord, timeout=30)
    return {(r.version, r.artifact_type): r.status for r in rows}


def test_register_promote_archive_list_show(stack: Settings, tmp_path: Path) -> None:
    model = f"credit_risk_{uuid.uuid4().hex[:6]}"
    path = tmp_path / "v1.json"
    path.write_text(json.dumps([spec(model, "1.0.0"), spec(model, "1.0.0", "scaler")]))
    result = run_cli(stack, "model", "register", str(path))
    assert result.returncode == 0, result.stderr
    path.write_text(json.dumps(spec(model, "2.0.0")))
    assert run_cli(stack, "model", "register", str(path)).returncode == 0
    assert records(stack, model) == {
        ("1.0.0", "model"): "staging",
        ("1.0.0", "scaler"): "staging",
        ("2.0.0", "model"): "staging",
    }

    assert run_cli(stack, "model", "promote", model, "1.0.0").returncode == 0
    assert records(stack, model)[("1.0.0", "scaler")] == "production"
    assert run_cli(stack, "model", "promote", model, "2.0.0").returncode == 0
    assert records(stack, model) == {
        ("1.0.0", "model"): "archived",
        ("1.0.0", "scaler"): "archived",
        ("2.0.0", "model"): "production",
    }
    assert run_cli(stack, "model", "archive", model, "2.0.0").returncode == 0
    assert set(records(stack, model).values()) == {"archived"}

    listing = run_cli(stack, "model", "list")
    assert listing.returncode == 0 and model in listing.stdout
    shown = run_cli(stack, "model", "show", model, "--version", "2.0.0")
    assert shown.returncode == 0
    assert "0:debt_to_income_ratio:float, 1:age_years:int, 2:has_default:bool" in shown.stdout
    assert "1.0.0" not in shown.stdout


def test_nested_expected_features_map_into_typed_records(stack: Settings, tmp_path: Path) -> None:
    model = f"typed_{uuid.uuid4().hex[:6]}"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec(model, "1.0.0")))
    assert run_cli(stack, "model", "register", str(path)).returncode == 0
    sql, params = list_sql(model, None)
    [record] = query(configure(stack), sql, params, ModelRecord, timeout=30)
    assert [(f.index, f.name, f.type) for f in record.expected_features] == [
        (0, "debt_to_income_ratio", "float"),
        (1, "age_years", "int"),
        (2, "has_default", "bool"),
    ]
    assert record.trained_date is not None and record.trained_date.isoformat() == "2024-04-30"


def test_registry_errors_are_clear(stack: Settings, tmp_path: Path) -> None:
    model = f"err_{uuid.uuid4().hex[:6]}"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec(model, "1.0.0")))
    assert run_cli(stack, "model", "register", str(path)).returncode == 0
    again = run_cli(stack, "model", "register", str(path))
    assert again.returncode == 2
    assert f"{model} 1.0.0 model is already registered (staging)" in again.stderr
    missing = run_cli(stack, "model", "promote", model, "9.9.9")
    assert missing.returncode == 2 and f"model {model} has no version 9.9.9" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                **spec(model, "3.0.0"),
                "expected_features": [{"index": 1, "name": "a", "type": "float"}],
            }
        )
    )
    invalid = run_cli(stack, "model", "register", str(bad))
    assert invalid.returncode == 2 and "without gaps" in invalid.stderr
    assert run_cli(stack, "model", "show", "no_such_model").returncode == 1
