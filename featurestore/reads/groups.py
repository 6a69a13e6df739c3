"""Reads of one read_many task that share their SQL run as one statement.

At concurrency 50 most reads of a batch are the same statement with other parameters (the
latest features of 50 entities). Each statement has a fixed cost in DuckDB to plan, run and
hand over as Arrow, whatever its size; as branches of one UNION ALL, tagged with their
position and split apart afterwards, they cost less in all than that cost once each
(README, Benchmarks; `make bench-speedups` measures the whole gain).

A group is formed only where the result cannot differ from running each read alone:
- the same SQL text, and positional parameters of the same DuckDB types (so every branch has
  the same column types and UNION ALL casts nothing);
- every parameter an operand of a comparison, IN, BETWEEN, LIMIT or OFFSET: elsewhere DuckDB
  binds its value as a constant, and `date_part(?, ts)` or `COLUMNS(?)` change their column
  types or names with it;
- a statement whose column names are known, from an earlier lone run, and unique (a star
  over a subquery would rename a repeated name);
- a statement of at most 4 KB that passed the read-only guard; the combined statement is
  that statement between fixed text, so it is not parsed again (checked once per branch, a
  long statement cost the guard far more than the reads themselves).
Anything else, and any group whose statement fails, runs read by read, so each read keeps
its own result or its own error. A group runs until the latest deadline of its reads (each
read's is its caller's, or the service's time limit, featurestore.reads.limits); when that
passes, every read of the group has passed its own, and none is run again alone.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import pyarrow.compute as pc

from featurestore import metrics
from featurestore.errors import QueryError, QueryTimeoutError
from featurestore.reads import result_format
from featurestore.reads.guard import check_read_only, parameters_only_compared
from featurestore.reads.limits import UNBOUNDED, Deadline, ReadLimits

Outcome = bytes | tuple[str, str]
# (sql, params) or (sql, params, deadline): the caller's deadline in time.time() seconds.
Request = Sequence[Any]

GROUP_COLUMN = "__fstore_read"
MAX_KNOWN_STATEMENTS = 4096
MAX_GROUPED_SQL = 4096


def signature(params: Any) -> tuple[str, ...] | None:
    """The DuckDB types the parameters bind to, or None when the read cannot be grouped."""
    if params is None:
        return ()
    if not isinstance(params, list | tuple):
        return None
    types: list[str] = []
    for value in params:
        kind = _param_type(value)
        if kind is None:
            return None
        types.append(kind)
    return tuple(types)


def _param_type(value: Any) -> str | None:
    if value is None or isinstance(value, bool | float | str):
        return type(value).__name__
    if isinstance(value, int):
        # DuckDB binds a Python int as INTEGER, BIGINT or HUGEINT by its size.
        if -(2**31) <= value < 2**31:
            return "integer"
        return "bigint" if -(2**63) <= value < 2**63 else None
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    return None


def combined_sql(sql: str, count: int) -> str:
    """`count` copies of a statement as one UNION ALL, each row tagged with its copy."""
    # Newlines around the statement end any line comment inside it.
    return "\nUNION ALL\n".join(
        f'SELECT {i} AS "{GROUP_COLUMN}", * FROM (\n{sql}\n)' for i in range(count)
    )


def split(result: result_format.Result, count: int) -> list[result_format.Result]:
    """The result of each copy, in its own order, without the tag column."""
    if isinstance(result, result_format.Rows):
        parts: list[list[tuple[Any, ...]]] = [[] for _ in range(count)]
        for row in result.rows:
            parts[row[0]].append(row[1:])
        return [result_format.Rows(result.names[1:], result.types[1:], part) for part in parts]
    tags = result.column(GROUP_COLUMN)
    body = result.drop_columns([GROUP_COLUMN])
    return [body.filter(pc.equal(tags, i)) for i in range(count)]


class GroupedReads:
    """Runs a batch of reads, grouping those that share their statement."""

    def __init__(
        self,
        read: Callable[..., result_format.Result],
        *,
        grouping: bool = True,
        limits: ReadLimits = UNBOUNDED,
    ) -> None:
        # Store.read_result: (sql, params, *, guarded=True, max_rows=..., deadline=...,
        # limits=...); raises QueryError or QueryTimeoutError.
        self._read = read
        self._grouping = grouping
        self._limits = limits
        # Column names of statements run alone, shared by the worker's threads: changed only
        # under the lock, and read once per use (another thread may forget a statement).
        self._names: dict[str, list[str]] = {}
        self._names_lock = threading.Lock()

    def run(self, requests: Sequence[Request]) -> list[Outcome]:
        """Each read's outcome, in order: its result's bytes (reads.result_format) or (error type,
        message)."""
        outcomes: dict[int, Outcome] = {}
        groups: dict[Hashable, list[int]] = {}
        deadlines: list[Deadline] = []
        for index, request in enumerate(requests):
            sql, params = request[0], request[1]
            caller_deadline = request[2] if len(request) > 2 else None
            deadlines.append(Deadline.for_read(caller_deadline, self._limits.seconds))
            kind = signature(params)
            if not self._grouping or kind is None or sql not in self._names:
                outcomes[index] = self._alone(sql, params, deadlines[index])
            else:
                groups.setdefault((sql, kind), []).append(index)
        for members in groups.values():
            sql = requests[members[0]][0]
            results = self._together(
                sql, [requests[i][1] for i in members], [deadlines[i] for i in members]
            )
            outcomes.update(zip(members, results, strict=True))
        return [outcomes[index] for index in range(len(requests))]

    def _alone(self, sql: str, params: Any, deadline: Deadline) -> Outcome:
        began = time.perf_counter()
        try:
            result = self._read(sql, params, deadline=deadline, limits=self._limits)
            payload = self._limits.encode(result)
        except (QueryError, QueryTimeoutError) as exc:
            return _failed(exc)
        names = result_format.column_names(result)
        if sql not in self._names and _groupable(sql, names):
            with self._names_lock:
                if len(self._names) >= MAX_KNOWN_STATEMENTS:
                    self._names.clear()
                self._names[sql] = names
        _observe(time.perf_counter() - began, 1)
        return payload

    def _together(self, sql: str, params: list[Any], deadlines: list[Deadline]) -> list[Outcome]:
        if len(params) == 1:
            return [self._alone(sql, params[0], deadlines[0])]
        began = time.perf_counter()
        flat = [value for group in params for value in (group or [])]
        check_read_only(sql)  # passed already (cached); the combined text is not parsed
        try:
            result = self._read(
                combined_sql(sql, len(params)),
                flat,
                guarded=False,
                max_rows=result_format.MAX_ROWS * len(params),  # as rows when each read would be
                deadline=max(deadlines, key=lambda deadline: deadline.at),
                limits=self._limits.times(len(params)),
            )
        except QueryTimeoutError as exc:  # every read's own deadline has passed too
            return [_failed(exc) for _ in params]
        except QueryError:  # read by read, so that each read gets its own error
            return [self._alone(sql, p, d) for p, d in zip(params, deadlines, strict=True)]
        known = self._names.get(sql)
        if result_format.column_names(result)[1:] != known:
            with self._names_lock:  # the schema changed (or it was forgotten): learn it again
                self._names.pop(sql, None)
            return [self._alone(sql, p, d) for p, d in zip(params, deadlines, strict=True)]
        payloads: list[Outcome] = []
        for part in split(result, len(params)):
            try:
                payloads.append(self._limits.encode(part))
            except QueryError as exc:
                payloads.append(_failed(exc))
        _observe(time.perf_counter() - began, len(params))
        return payloads


def _failed(exc: QueryError | QueryTimeoutError) -> Outcome:
    metrics.READS.labels(type(exc).__name__).inc()
    return (type(exc).__name__, str(exc))


def _groupable(sql: str, names: list[str]) -> bool:
    folded = {name.lower() for name in names}  # DuckDB's names are case-insensitive
    return (
        len(sql) <= MAX_GROUPED_SQL
        and len(folded) == len(names)
        and GROUP_COLUMN not in folded
        and parameters_only_compared(sql)
    )


def _observe(seconds: float, reads: int) -> None:
    metrics.READS.labels("ok").inc(reads)
    for _ in range(reads):
        metrics.READ_SECONDS.observe(seconds / reads)
