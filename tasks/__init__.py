"""Celery side of the stack: the app, routing, the DuckDB service's tasks, the beat schedule."""
