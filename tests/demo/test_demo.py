"""The demo end to end on the test stack: what Predict serves equals the model run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from demo.run import TOLERANCE, Options, Outcome, StepError, run, table
from featurestore.settings import Settings
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

OPTIONS = Options(entities=300, shown=10, model_id="demo_credit", prefix="demo_")


@pytest.fixture(scope="module")
def first_run(stack: Settings) -> tuple[Outcome, list[str]]:
    """The demo's steps run once in this process; what they returned and printed."""
    lines: list[str] = []
    return run(stack, OPTIONS, out=lines.append), lines


def test_served_scores_equal_the_in_process_ones(first_run: tuple[Outcome, list[str]]) -> None:
    outcome, lines = first_run

    assert outcome.entity_ids == [f"demo_{i}" for i in range(10)]
    assert outcome.served_version == OPTIONS.version
    # The features Predict used are exactly the ones ingested through Kafka.
    assert outcome.max_feature_diff == 0.0
    assert np.max(np.abs(outcome.served - outcome.in_process)) <= TOLERANCE
    assert np.max(np.abs(outcome.served - outcome.sklearn)) <= TOLERANCE
    assert outcome.ok
    # A real model: its scores spread, so equal scores are not equal by accident.
    assert np.ptp(outcome.served) > 0.1
    assert sum(line.startswith("[") for line in lines) == 10
    assert "largest absolute difference" in table(outcome)


def test_python_m_demo_runs_again_on_the_registered_model(
    stack: Settings, first_run: tuple[Outcome, list[str]]
) -> None:
    """What `make demo` runs, against the model the test above registered: the version is
    registered already, the new upload is served, and the scores agree."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            f"--entities={OPTIONS.entities}",
            "--shown=5",
            f"--model-id={OPTIONS.model_id}",
        ],
        env={**os.environ, **stack.to_env(), "FSTORE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already registered" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("applicant_")]
    assert len(rows) == 5
    for _entity, served, in_process, by_sklearn, _ort, _skl in rows:
        assert abs(float(served) - float(in_process)) <= 1e-5
        assert abs(float(served) - float(by_sklearn)) <= 1e-5
    assert "largest absolute difference" in result.stdout


def test_a_failing_step_is_named_with_its_reason(stack: Settings, tmp_path: Path) -> None:
    """A version registered before with other features: the demo stops at registration
    and says why, rather than serving a model whose inputs differ from the registry's."""
    spec = {
        "model_id": "demo_conflict",
        "artifact_type": "model",
        "version": "1.0.0",
        "azure_location": stack.azure_container,
        "expected_features": [{"index": 0, "name": "age_years", "type": "int"}],
    }
    (tmp_path / "other.json").write_bytes(orjson.dumps(spec))
    assert run_cli(stack, "model", "register", str(tmp_path / "other.json")).returncode == 0
    lines: list[str] = []
    options = Options(entities=40, shown=2, model_id="demo_conflict", prefix="conflict_")
    with pytest.raises(StepError) as failure:
        run(stack, options, out=lines.append)
    assert str(failure.value).startswith("step 6 (register and promote demo_conflict 1.0.0)")
    assert "registered with other expected features" in str(failure.value)
    assert lines[-1].startswith("[6/10]")
