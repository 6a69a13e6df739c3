"""Logging set-up: one line per event, key=value pairs, greppable."""

from __future__ import annotations

import json
import logging
import os

_FORMAT = "%(asctime)s level=%(levelname)s pid=%(process)d logger=%(name)s %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once per process (at start-up, never at import)."""
    logging.basicConfig(
        level=(level or os.environ.get("FSTORE_LOG_LEVEL", "INFO")).upper(),
        format=_FORMAT,
        force=True,
    )
    # The Azure SDK logs every HTTP request and response at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)


def quoted(value: object) -> str:
    """A log value that may hold spaces (a path, a reason, an error's text), double-quoted
    with JSON escapes, so that key="a b" stays one field for grep and log parsers."""
    return json.dumps(str(value), ensure_ascii=False)
