"""Log values that may hold spaces stay one key=value field."""

from __future__ import annotations

import shlex
from pathlib import Path

from featurestore.logs import quoted


def test_quoted_values_stay_one_field() -> None:
    reason = 'bad "value" here'
    line = f"event path={quoted(Path('/tmp/a b/x.duckdb'))} reason={quoted(reason)}"
    fields = dict(part.split("=", 1) for part in shlex.split(line)[1:])
    assert fields == {"path": "/tmp/a b/x.duckdb", "reason": 'bad "value" here'}
