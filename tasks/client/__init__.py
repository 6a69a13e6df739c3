"""The Celery client of the DuckDB service: reads coalesced into tasks, their results, and
the query function."""
