"""Producer-side reading and validation of feature files (no services)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import orjson
import pytest

from bridge.producer import split_to_fit
from featurestore.errors import ValidationError
from featurestore.ingest.events import parse_message
from featurestore.ingest.sources import FileSource, Message, expand


def read(path: Path, per_message: int = 100) -> tuple[list[dict[str, object]], list[str]]:
    source = FileSource(path, per_message)
    try:
        rows = [row for m in source.messages() for row in orjson.loads(m.payload)]
        rejects = [f"{r.position}: {r.reason}" for r in source.rejects()]
    finally:
        source.close()
    return rows, rejects


def test_long_csv_rejects_each_bad_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "entity_id,feature_name,value,event_timestamp\n"
        "c1,age_years,41,2024-05-01T10:00:00Z\n"
        "c2,age_years,abc,2024-05-01T10:00:00Z\n"
        ",age_years,1,2024-05-01\n"
        "c4,age_years,NaN,2024-05-01\n"
        "c5,age_years,inf,2024-05-01\n"
        "c6,age_years,2.5,yesterday\n"
        "c7,,1,2024-05-01\n"
        "c8,dti,0.3,2024-05-01T12:00:00+02:00\n"
        "c9,dti,,2024-05-01\n"
    )
    rows, rejects = read(path)
    assert rejects == [
        'line 3: value "abc" is not a number',
        "line 4: entity_id is missing",
        "line 5: value must be finite, got NaN",
        "line 6: value must be finite, got inf",
        'line 7: event_timestamp "yesterday" is not ISO-8601',
        "line 8: feature_name is missing",
        "line 10: value is missing",
    ]
    assert [r["entity_id"] for r in rows] == ["c1", "c8"]
    assert rows[1]["event_timestamp"] == "2024-05-01T10:00:00.000000Z"


def test_wide_parquet_is_melted_and_empty_cells_skipped(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    duckdb.sql(
        f"""COPY (SELECT * FROM (VALUES
              ('c1', TIMESTAMP '2024-05-01 10:00:00', 41, 0.31),
              ('c2', TIMESTAMP '2024-05-02 10:00:00', NULL, 0.5)
            ) t(entity_id, event_timestamp, age_years, debt_to_income_ratio))
            TO '{path}' (FORMAT parquet)"""
    )
    rows, rejects = read(path)
    assert rejects == []
    assert sorted((r["entity_id"], r["feature_name"], r["value"]) for r in rows) == [
        ("c1", "age_years", 41.0),
        ("c1", "debt_to_income_ratio", 0.31),
        ("c2", "debt_to_income_ratio", 0.5),
    ]


def test_jsonl_rejects_malformed_lines_and_wrong_types(tmp_path: Path) -> None:
    good = {"entity_id": "c1", "feature_name": "f", "value": 1, "event_timestamp": "2024-01-01"}
    path = tmp_path / "events.jsonl"
    lines = [
        orjson.dumps(good).decode(),
        "{broken",
        orjson.dumps({**good, "value": "1"}).decode(),
        orjson.dumps({**good, "value": True}).decode(),
        orjson.dumps({**good, "entity_id": 5}).decode(),
        "[1, 2]",
        orjson.dumps({**good, "entity_id": "c2"}).decode(),
    ]
    path.write_text("\n".join(lines) + "\n")
    rows, rejects = read(path)
    assert rejects == [
        "line 2: malformed JSON",
        "line 3: value must be a number, got varchar",
        "line 4: value must be a number, got boolean",
        "line 5: entity_id must be a string, got ubigint",
        "line 6: line is not a JSON object",
    ]
    assert [r["entity_id"] for r in rows] == ["c1", "c2"]


def test_producer_output_is_accepted_by_the_bridge(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "entity_id,feature_name,value,event_timestamp\n"
        + "".join(f"e{i},f{i % 3},{i}.5,2024-01-0{1 + i % 9}T00:00:00+01:00\n" for i in range(250))
    )
    source = FileSource(path, 100)
    messages = list(source.messages())
    assert [m.rows for m in messages] == [100, 100, 50]
    parsed = [parse_message(m.payload) for m in messages]
    assert sum(len(p) for p in parsed) == 250
    first = parsed[0]
    assert first.entity_id[0] == "e0" and first.value[0] == 0.5
    expected = dt.datetime(2023, 12, 31, 23, 0) - dt.datetime(1970, 1, 1)
    assert first.event_timestamp[0] == expected // dt.timedelta(microseconds=1)


def test_unknown_columns_and_kinds_are_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("who,when\nx,2024-01-01\n")
    with pytest.raises(ValidationError, match="neither the long format"):
        FileSource(odd, 10)
    extra = tmp_path / "extra.csv"
    extra.write_text("entity_id,feature_name,value,event_timestamp,note\n")
    with pytest.raises(ValidationError, match="unexpected column"):
        FileSource(extra, 10)
    with pytest.raises(ValidationError, match="unknown file kind"):
        expand([tmp_path / "odd.txt"]) if (tmp_path / "odd.txt").write_text("") == 0 else None
    with pytest.raises(ValidationError, match="no such file"):
        expand([tmp_path / "missing.csv"])


def test_folders_expand_to_their_feature_files(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("a.csv", "b/c.parquet", "b/d.jsonl", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in expand([tmp_path])] == ["a.csv", "c.parquet", "d.jsonl"]


def test_messages_too_large_for_the_broker_are_split() -> None:
    rows = [
        {"entity_id": f"e{i}", "feature_name": "f", "value": i, "event_timestamp": "2024-01-01"}
        for i in range(100)
    ]
    message = Message(orjson.dumps(rows), 100)
    parts = split_to_fit(message, max_bytes=len(message.payload) // 5)
    assert len(parts) > 1
    assert all(len(p.payload) <= len(message.payload) // 5 for p in parts)
    assert [r for p in parts for r in orjson.loads(p.payload)] == rows
    assert sum(p.rows for p in parts) == 100


def test_times_outside_years_1_to_9999_are_rejected_as_the_bridge_does(tmp_path: Path) -> None:
    # The producer sent year 10000 on; the bridge then dead-lettered the whole message,
    # its valid rows with it, after the producer had counted them sent.
    path = tmp_path / "years.csv"
    path.write_text(
        "entity_id,feature_name,value,event_timestamp\n"
        "c1,f,1,2024-01-01T00:00:00Z\n"
        "c2,f,1,10000-01-01T00:00:00Z\n"
        "c3,f,1,0001-01-01T00:30:00+01:00\n"
        "c4,f,1,9999-12-31T23:59:59Z\n"
        "c5,f,1,0001-01-01T00:00:00Z\n"
        "c6,f,1,9999-12-31T23:30:00-01:00\n"
    )
    rows, rejects = read(path)
    assert rejects == [
        'line 3: event_timestamp "10000-01-01T00:00:00Z" is outside years 1-9999 in UTC',
        'line 4: event_timestamp "0001-01-01T00:30:00+01:00" is outside years 1-9999 in UTC',
        'line 7: event_timestamp "9999-12-31T23:30:00-01:00" is outside years 1-9999 in UTC',
    ]
    assert [r["entity_id"] for r in rows] == ["c1", "c4", "c5"]
    source = FileSource(path, 100)
    try:
        assert sum(len(parse_message(m.payload)) for m in source.messages()) == 3
    finally:
        source.close()


def test_boolean_values_of_a_long_parquet_are_rejected(tmp_path: Path) -> None:
    # Booleans are no values (README, Events): the JSONL and CSV paths refused them, a
    # long Parquet file's BOOLEAN column went through as 1.0 and 0.0.
    path = tmp_path / "flags.parquet"
    duckdb.sql(
        f"""COPY (SELECT * FROM (VALUES
              ('c1', 'f', true, TIMESTAMP '2024-05-01 10:00:00'),
              ('c2', 'f', false, TIMESTAMP '2024-05-01 10:00:00')
            ) t(entity_id, feature_name, value, event_timestamp))
            TO '{path}' (FORMAT parquet)"""
    )
    rows, rejects = read(path)
    assert rejects == [
        'row 1: value "true" is not a number',
        'row 2: value "false" is not a number',
    ]
    assert rows == []


def test_wide_rejects_name_the_column_and_say_a_row_once(tmp_path: Path) -> None:
    # Each cell of a wide row is an event: a row without its entity said so once per
    # feature column, and a bad value did not say which column held it.
    path = tmp_path / "wide.csv"
    path.write_text(
        "entity_id,event_timestamp,age_years,income\n"
        "c1,2024-05-01T10:00:00Z,41,x\n"
        ",2024-05-01T10:00:00Z,30,5\n"
        "c3,2024-05-01T10:00:00Z,true,nan\n"
    )
    rows, rejects = read(path)
    assert rejects == [
        'line 2: column "income": value "x" is not a number',
        "line 3: entity_id is missing",
        'line 4: column "age_years": value "true" is not a number',
        'line 4: column "income": value must be finite, got nan',
    ]
    assert [(r["entity_id"], r["feature_name"]) for r in rows] == [("c1", "age_years")]
