"""DuckDB's threads raised for a batch job and restored after it (in-process, no services)."""

from __future__ import annotations

import duckdb
import pytest

from featurestore.store.job_threads import JobThreads


def threads(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def database(base: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET GLOBAL threads = {base}")
    return con


def test_raised_for_the_job_then_restored_even_when_it_fails() -> None:
    con = database(1)
    jobs = JobThreads(1, 2)
    with jobs.raised(con.cursor()):
        assert threads(con.cursor()) == 2  # another session sees it: the setting is global
    assert threads(con) == 1
    with pytest.raises(RuntimeError), jobs.raised(con.cursor()):
        assert threads(con) == 2
        raise RuntimeError("the job failed")
    assert threads(con) == 1


def test_overlapping_jobs_restore_only_when_the_last_ends() -> None:
    con = database(1)
    jobs = JobThreads(1, 3)
    first, second = con.cursor(), con.cursor()
    with jobs.raised(first):
        with jobs.raised(second):
            assert threads(con) == 3
        assert threads(con) == 3  # the first job still runs
    assert threads(con) == 1


@pytest.mark.parametrize(("base", "job"), [(2, 2), (2, 1), (0, 2)])
def test_left_alone_when_not_more_than_the_base(base: int, job: int) -> None:
    con = database(base or 1)
    before = threads(con)
    with JobThreads(base, job).raised(con.cursor()):
        assert threads(con) == before
    assert threads(con) == before
