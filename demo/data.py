"""Generated credit-risk data: ten features per applicant and a default label."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.store.registry import ExpectedFeature

# Expected-feature order of the model; the types are what the registry records.
FEATURES: list[ExpectedFeature] = [
    ExpectedFeature(index=i, name=name, type=kind)
    for i, (name, kind) in enumerate(
        [
            ("debt_to_income_ratio", "float"),
            ("age_years", "int"),
            ("has_defaulted_before", "bool"),
            ("credit_utilization", "float"),
            ("months_employed", "int"),
            ("annual_income_k", "float"),
            ("num_credit_lines", "int"),
            ("late_payments_12m", "int"),
            ("loan_amount_k", "float"),
            ("recent_inquiries", "int"),
        ]
    )
]
FEATURE_NAMES = [f.name for f in FEATURES]


@dataclass(frozen=True)
class CreditData:
    """Applicants: ids, raw feature values (float64, expected-feature order), labels."""

    entity_ids: list[str]
    features: np.ndarray
    labels: np.ndarray

    def rows(self, entity_ids: list[str]) -> np.ndarray:
        """The feature rows of these entities, in the order given."""
        position = {entity: i for i, entity in enumerate(self.entity_ids)}
        return self.features[[position[e] for e in entity_ids]]


def _risk_logit(x: dict[str, np.ndarray]) -> np.ndarray:
    """The known rule behind the label (before noise)."""
    return (
        -2.6
        + 3.5 * x["debt_to_income_ratio"]
        + 1.4 * x["has_defaulted_before"]
        + 2.2 * x["credit_utilization"]
        - 0.03 * (x["age_years"] - 40)
        - 0.005 * x["months_employed"]
        - 0.01 * (x["annual_income_k"] - 60)
        + 0.08 * x["num_credit_lines"]
        + 0.45 * x["late_payments_12m"]
        + 0.004 * x["loan_amount_k"]
        + 0.15 * x["recent_inquiries"]
    )


def generate(entities: int, *, seed: int = 7, prefix: str = "applicant_") -> CreditData:
    """`entities` applicants drawn from fixed distributions; the same seed gives the same data."""
    if entities < 20:
        raise ValueError(f"need at least 20 entities to train on, got {entities}")
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 76, entities)
    x = {
        "debt_to_income_ratio": np.round(rng.beta(2.0, 5.0, entities) * 1.2, 4),
        "age_years": age,
        "has_defaulted_before": rng.random(entities) < 0.15,
        "credit_utilization": np.round(rng.beta(2.0, 3.0, entities), 4),
        # Never employed longer than adult life.
        "months_employed": np.minimum(rng.integers(0, 361, entities), (age - 18) * 12),
        "annual_income_k": np.round(rng.lognormal(4.0, 0.45, entities), 2),
        "num_credit_lines": rng.integers(0, 16, entities),
        "late_payments_12m": rng.poisson(0.6, entities),
        "loan_amount_k": np.round(rng.gamma(2.0, 12.0, entities), 2),
        "recent_inquiries": rng.poisson(1.0, entities),
    }
    as_float = {name: np.asarray(values, dtype=np.float64) for name, values in x.items()}
    noise = rng.logistic(0.0, 1.0, entities)
    labels = (_risk_logit(as_float) + noise > 0).astype(np.int64)
    if labels.min() == labels.max():
        raise ValueError("generated labels have one class only; use more entities")
    return CreditData(
        entity_ids=[f"{prefix}{i}" for i in range(entities)],
        features=np.column_stack([as_float[name] for name in FEATURE_NAMES]),
        labels=labels,
    )


def write_parquet(data: CreditData, path: Path, event_time: dt.datetime) -> int:
    """The features as a wide Parquet file (entity_id, event_timestamp, one column per
    feature) that `fstore produce` reads; the number of feature events in it."""
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array(data.entity_ids, pa.string()),
        "event_timestamp": pa.array([event_time] * len(data.entity_ids), pa.timestamp("us", "UTC")),
    }
    for index, name in enumerate(FEATURE_NAMES):
        # Every value travels as a number (bool as 0/1): events carry doubles only.
        columns[name] = pa.array(data.features[:, index], pa.float64())
    pq.write_table(pa.table(columns), path)
    return len(data.entity_ids) * len(FEATURE_NAMES)
