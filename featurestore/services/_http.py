"""A GET on loopback for the probes of the HTTP services (Prometheus, Alertmanager, exporters)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def get_text(url: str, timeout: float = 2.0) -> str | None:
    """Body of a GET on a loopback http URL, or None when nothing answers with 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - http on loopback
            return str(reply.read().decode())
    except (OSError, urllib.error.URLError, UnicodeDecodeError):
        return None


def get_json(url: str, timeout: float = 2.0) -> Any:
    """Parsed JSON of a GET, or None when nothing answers or the body is not JSON."""
    body = get_text(url, timeout)
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
