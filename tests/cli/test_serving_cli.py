"""`fstore features`, `fstore predict` and `fstore query` against the running test stack."""

from __future__ import annotations

import csv
import io

import numpy as np
import orjson
import pytest

from demo import data
from demo.model import InProcessModel
from demo.run import Options, Outcome, run
from featurestore.settings import Settings
from tests.helpers import run_cli, wait_until

pytestmark = pytest.mark.integration

MODEL = "cli_credit"


@pytest.fixture(scope="module")
def demo(stack: Settings) -> Outcome:
    """A served model and 60 entities' features online (the demo's steps, small)."""
    options = Options(entities=60, shown=3, model_id=MODEL, prefix="cli_")
    return run(stack, options, out=lambda _line: None)


def test_features_json_gives_the_ingested_values(stack: Settings, demo: Outcome) -> None:
    result = run_cli(stack, "features", "cli_1", "cli_2", "--format", "json")
    assert result.returncode == 0, result.stderr
    found = orjson.loads(result.stdout)
    assert [e["entity_id"] for e in found] == ["cli_1", "cli_2"]
    for entity in found:
        row = demo.credit.rows([entity["entity_id"]])[0]
        values = {name: v["value"] for name, v in entity["features"].items()}
        assert values == dict(zip(data.FEATURE_NAMES, row.tolist(), strict=True))


def test_features_table_names_absent_values(stack: Settings, demo: Outcome) -> None:
    result = run_cli(
        stack, "features", "cli_3", "nobody", "--features", "age_years,no_such_feature"
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ENTITY", "FEATURE", "VALUE", "EVENT_TIMESTAMP"]
    age = int(demo.credit.rows(["cli_3"])[0][data.FEATURE_NAMES.index("age_years")])
    assert lines[1].split()[:3] == ["cli_3", "age_years", str(age)]
    assert lines[2].split()[:3] == ["cli_3", "no_such_feature", "-"]
    assert any(line.startswith("nobody") and "(absent)" in line for line in lines)


def test_predict_json_equals_the_model_run_here(stack: Settings, demo: Outcome) -> None:
    result = run_cli(stack, "predict", MODEL, "cli_4", "cli_5", "--format", "json")
    assert result.returncode == 0, result.stderr
    reply = orjson.loads(result.stdout)
    assert reply["model_version"] == "1.0.0"
    local = InProcessModel(demo.artifacts).scores(demo.credit.rows(["cli_4", "cli_5"]))
    for prediction, expected in zip(reply["predictions"], local, strict=True):
        outputs = {o["name"]: o["values"] for o in prediction["outputs"]}
        assert abs(outputs["probabilities"][1] - expected) <= 1e-5
        assert {f["origin"] for f in prediction["features"]} == {"ONLINE"}


def test_predict_set_overrides_a_feature(stack: Settings, demo: Outcome) -> None:
    result = run_cli(
        stack, "predict", MODEL, "cli_6", "--set", "debt_to_income_ratio=0.9", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    prediction = orjson.loads(result.stdout)["predictions"][0]
    used = {f["name"]: f for f in prediction["features"]}
    assert used["debt_to_income_ratio"]["value"] == 0.9
    assert used["debt_to_income_ratio"]["origin"] == "REQUEST"
    row = demo.credit.rows(["cli_6"]).copy()
    row[0, data.FEATURE_NAMES.index("debt_to_income_ratio")] = 0.9
    expected = InProcessModel(demo.artifacts).scores(row)[0]
    probabilities = {o["name"]: o["values"] for o in prediction["outputs"]}["probabilities"]
    assert abs(probabilities[1] - expected) <= 1e-5


def test_predict_table_shows_outputs_and_features_used(stack: Settings, demo: Outcome) -> None:
    result = run_cli(stack, "predict", MODEL, "cli_7")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"model {MODEL} version 1.0.0")
    assert lines[1].split() == ["ENTITY", "LABEL", "PROBABILITIES"]
    assert lines[2].startswith("cli_7")
    used = [line.split() for line in lines if line.startswith("  ")]
    assert [u[0] for u in used[1:]] == data.FEATURE_NAMES
    assert {u[2] for u in used[1:]} == {"online"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["predict", "no_such_model", "cli_1"], "NOT_FOUND"),
        (["predict", MODEL, "nobody"], "FAILED_PRECONDITION"),
        (["predict", MODEL, "cli_1", "--set", "not_a_feature=1"], "INVALID_ARGUMENT"),
        (["predict", MODEL, "cli_1", "--set", "age_years=old"], "'old' is not a number"),
        (["predict", MODEL, "cli_1", "--set", "age_years"], "expected name=value"),
    ],
)
def test_predict_errors_are_one_clear_line(
    stack: Settings, demo: Outcome, args: list[str], expected: str
) -> None:
    result = run_cli(stack, *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_features_are_named(stack: Settings, demo: Outcome) -> None:
    result = run_cli(stack, "predict", MODEL, "nobody")
    assert "nobody" in result.stderr
    assert "debt_to_income_ratio" in result.stderr


def test_server_that_does_not_answer(stack: Settings) -> None:
    elsewhere = stack.model_copy(update={"grpc_port": stack.grpc_port + 7})
    for args in (["features", "cli_1"], ["predict", MODEL, "cli_1"]):
        result = run_cli(elsewhere, *args)
        assert result.returncode == 2
        assert f"localhost:{elsewhere.grpc_port} does not answer" in result.stderr
        assert "Traceback" not in result.stderr


def test_query_typed_parameters(stack: Settings) -> None:
    result = run_cli(
        stack,
        "query",
        "SELECT ? AS i, ? AS f, ? AS s, ? AS j",
        "--param",
        "41",
        "--param",
        "1.5",
        "--param",
        "abc",
        "--param-json",
        '"41"',
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == [{"i": 41, "f": 1.5, "s": "abc", "j": "41"}]


def test_query_csv_and_table(stack: Settings, demo: Outcome) -> None:
    sql = (
        "SELECT entity_id, value FROM latest_features WHERE feature_name = ? "
        "AND entity_id IN (?, ?) ORDER BY entity_id"
    )
    args = ["query", sql, "--param", "age_years", "--param", "cli_1", "--param", "cli_2"]
    ages = demo.credit.rows(["cli_1", "cli_2"])[:, data.FEATURE_NAMES.index("age_years")]
    # The latest-values table is merged about a second after the writes.
    assert wait_until(lambda: run_cli(stack, *args).stdout.endswith("(2 rows)\n"), 60)
    result = run_cli(stack, *args, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["entity_id", "value"]
    assert [r[0] for r in rows[1:]] == ["cli_1", "cli_2"]
    assert np.array_equal([float(r[1]) for r in rows[1:]], ages)
    table = run_cli(stack, *args)
    assert table.stdout.splitlines()[0].split() == ["entity_id", "value"]
    assert table.stdout.splitlines()[-1] == "(2 rows)"


def test_query_refuses_writes(stack: Settings) -> None:
    result = run_cli(stack, "query", "DELETE FROM features")
    assert result.returncode == 2
    assert "fstore query:" in result.stderr
    assert "Traceback" not in result.stderr
