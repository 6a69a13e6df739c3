"""Model registry: the model_metadata table, its validation and its state changes.

Writes run in the DuckDB service (one transaction each); reads use the query function.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from featurestore.errors import FeatureStoreError, ValidationError

Status = Literal["production", "staging", "archived"]
_COLUMNS = (
    "model_id, artifact_type, version, trained_date, status, azure_location, "
    "expected_features, registered_at"
)


class RegistryError(FeatureStoreError):
    """A registry change that cannot be made (unknown version, already registered)."""


class ExpectedFeature(BaseModel):
    """One input of a model: its position, name and type."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    name: str = Field(min_length=1)
    type: Literal["float", "int", "bool"]


class ArtifactSpec(BaseModel):
    """One artifact of a model version, as registered."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    artifact_type: str = Field(min_length=1)
    version: str = Field(min_length=1)
    trained_date: dt.date | None = None
    azure_location: str = Field(min_length=1)
    expected_features: list[ExpectedFeature]

    @field_validator("expected_features")
    @classmethod
    def _indexes_and_names(cls, features: list[ExpectedFeature]) -> list[ExpectedFeature]:
        indexes = sorted(f.index for f in features)
        if indexes != list(range(len(features))):
            missing = sorted(set(range(len(features))) - set(indexes))
            raise ValueError(
                f"feature indexes must run 0..{len(features) - 1} without gaps or repeats; "
                f"got {indexes}" + (f", missing {missing}" if missing else "")
            )
        names = [f.name for f in features]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(repeated)}")
        return sorted(features, key=lambda f: f.index)


class ModelRecord(ArtifactSpec):
    """A row of model_metadata."""

    status: Status
    registered_at: dt.datetime


def load_specs(path: Path) -> list[ArtifactSpec]:
    """Artifact specs from a JSON or YAML file (one object or a list of them)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from None
    try:
        data: Any = orjson.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{path}: not valid JSON/YAML: {exc}") from None
    items = data if isinstance(data, list) else [data]
    specs = []
    for number, item in enumerate(items):
        try:
            specs.append(ArtifactSpec.model_validate(item))
        except PydanticError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'artifact'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValidationError(f"{path}: artifact {number}: {problems}") from None
    return specs


def register(cur: duckdb.DuckDBPyConnection, spec: ArtifactSpec) -> None:
    """Insert one artifact as staging; refuse one that is already registered."""
    exists = cur.execute(
        "SELECT status FROM model_metadata WHERE model_id = ? AND version = ? "
        "AND artifact_type = ?",
        [spec.model_id, spec.version, spec.artifact_type],
    ).fetchall()
    if exists:
        raise RegistryError(
            f"{spec.model_id} {spec.version} {spec.artifact_type} is already registered "
            f"({exists[0][0]})"
        )
    cur.execute(
        "INSERT INTO model_metadata (model_id, artifact_type, version, trained_date, status, "
        "azure_location, expected_features) VALUES (?, ?, ?, ?, 'staging', ?, ?)",
        [
            spec.model_id,
            spec.artifact_type,
            spec.version,
            spec.trained_date,
            spec.azure_location,
            [f.model_dump() for f in spec.expected_features],
        ],
    )


def _require_version(cur: duckdb.DuckDBPyConnection, model_id: str, version: str) -> None:
    found = cur.execute(
        "SELECT count(*) FROM model_metadata WHERE model_id = ? AND version = ?",
        [model_id, version],
    ).fetchall()
    if not found[0][0]:
        raise RegistryError(f"model {model_id} has no version {version}")


def promote(cur: duckdb.DuckDBPyConnection, model_id: str, version: str) -> None:
    """Make a version production; the model's previous production version is archived."""
    _require_version(cur, model_id, version)
    cur.execute(
        "UPDATE model_metadata SET status = 'archived' "
        "WHERE model_id = ? AND status = 'production' AND version <> ?",
        [model_id, version],
    )
    cur.execute(
        "UPDATE model_metadata SET status = 'production' WHERE model_id = ? AND version = ?",
        [model_id, version],
    )


def archive(cur: duckdb.DuckDBPyConnection, model_id: str, version: str) -> None:
    """Archive a version (every artifact of it)."""
    _require_version(cur, model_id, version)
    cur.execute(
        "UPDATE model_metadata SET status = 'archived' WHERE model_id = ? AND version = ?",
        [model_id, version],
    )


def list_sql(model_id: str | None, status: str | None) -> tuple[str, list[Any]]:
    """The read that lists records, optionally of one model and one status."""
    return (
        f"SELECT {_COLUMNS} FROM model_metadata "
        "WHERE (? IS NULL OR model_id = ?) AND (? IS NULL OR status = ?) "
        "ORDER BY model_id, version, artifact_type",
        [model_id, model_id, status, status],
    )
