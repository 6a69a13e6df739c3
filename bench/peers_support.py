"""The pieces of `make bench-peers` that are not measurements: Feast's own virtual
environment and processes (its Redis, its feature server, the script run by its Python),
and the data both systems get."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import redis

from bench.common import PROJECT

FEAST_VERSION = "0.67.0"
# FSTORE_PEERS_FEAST_VERSION measures another release against the same run.
FEAST_VERSION = os.environ.get("FSTORE_PEERS_FEAST_VERSION", FEAST_VERSION)
FEAST_REQUIREMENT = f"feast[redis,duckdb]=={FEAST_VERSION}"
STATE = PROJECT / ".state" / "peers"
VENV = STATE / "feast-venv"
SCRIPT = PROJECT / "bench" / "peers_feast.py"

# FSTORE_PEERS_SCALE=0.01 makes a quick trial of the whole run (the figures mean nothing then).
SCALE = float(os.environ.get("FSTORE_PEERS_SCALE", "1"))
ENTITIES = int(200_000 * SCALE)
EVENTS_PER_ENTITY = 5
FEATURES = [f"feature_{k}" for k in range(10)]
ONLINE_ENTITIES = int(100_000 * SCALE)
SPINE_ROWS = int(1_000_000 * SCALE)
INGEST_ENTITIES = int(100_000 * SCALE)  # x 10 features = 1M events
WEEK_S = 7 * 86_400


class FeastUnavailableError(RuntimeError):
    """Feast could not be installed or run here; the message says why."""


def feast_python() -> Path:
    """The Python of Feast's virtual environment, installed (pinned) when missing."""
    python = VENV / "bin" / "python"
    marker = VENV / "feast-installed"
    if python.exists() and marker.exists() and marker.read_text() == FEAST_REQUIREMENT:
        return python
    STATE.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", FEAST_REQUIREMENT],
    ]
    for step in steps:
        print(f"peers: {' '.join(step)}", file=sys.stderr, flush=True)
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise FeastUnavailableError(f"{' '.join(step)} failed:\n" + "\n".join(tail))
    marker.write_text(FEAST_REQUIREMENT)
    return python


def run_feast(*args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run one sub-command of bench/peers_feast.py with Feast's Python; its JSON result."""
    command = [str(feast_python()), str(SCRIPT), *args]
    # Feast's progress goes to our stderr as it comes; its result is the last stdout line.
    done = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False, cwd=STATE
    )
    if done.returncode != 0:
        raise FeastUnavailableError(f"{' '.join(args[:1])} exited {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def feast_redis(port: int, folder: Path) -> Iterator[None]:
    """A Redis of Feast's own, on its own port, without persistence."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise FeastUnavailableError(f"Feast's Redis on :{port} did not start") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def feast_server(repo: Path, port: int) -> Iterator[None]:
    """`feast serve` (HTTP, one worker) on the repository, until it answers. The worker is
    not recycled (by default it restarts after 1,000 requests, dropping the connection)."""
    proc = subprocess.Popen(
        [str(VENV / "bin" / "feast"), "-c", str(repo), "serve", "-h", "127.0.0.1",
         "-p", str(port), "--no-access-log", "--max-requests", "1000000"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise FeastUnavailableError(f"feast serve on :{port} did not answer /health")
            time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


class FeastHttp:
    """A keep-alive HTTP client of Feast's feature server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.refs = [f"fv:{f}" for f in FEATURES]

    def features(self, entity_ids: list[str]) -> dict[str, list[float | None]]:
        """Each entity's ten values (None when absent), as the server sends them."""
        body = json.dumps({"features": self.refs, "entities": {"entity_id": entity_ids}})
        self.conn.request(
            "POST", "/get-online-features", body, {"Content-Type": "application/json"}
        )
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise FeastUnavailableError(
                f"feature server answered {response.status}: {payload[:200]!r}"
            )
        data = json.loads(payload)
        names = data["metadata"]["feature_names"]
        columns = {
            name: column["values"] for name, column in zip(names, data["results"], strict=True)
        }
        return {entity: [columns[f][i] for f in FEATURES] for i, entity in enumerate(entity_ids)}


def make_data(folder: Path) -> dict[str, Path]:
    """The same data for both: the history wide (Feast) and long (ours), the online rows,
    the spine, the events to ingest (wide and long)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: folder / f"{name}.parquet"
        for name in ("history", "online", "spine", "ingest_wide", "ingest_long", "pushed")
    }
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    values = ", ".join(f"round(random() * 100, 6) AS {f}" for f in FEATURES)
    # Event k of entity e falls at a random moment of week k; event time order on disk.
    con.execute(
        f"""CREATE TABLE history AS SELECT 'cust_' || e AS entity_id,
                   TIMESTAMP '2024-01-01'
                     + to_seconds(k * {WEEK_S} + CAST(hash(e * 5 + k) % {WEEK_S} AS BIGINT))
                     AS event_timestamp, {values}
            FROM range({EVENTS_PER_ENTITY}) b(k), range({ENTITIES}) a(e) ORDER BY k, e"""
    )
    con.execute(
        f"COPY (SELECT *, event_timestamp AS created FROM history) "
        f"TO '{paths['history']}' (FORMAT parquet)"
    )
    con.execute(
        f"""COPY (SELECT *, event_timestamp AS created FROM history
                  WHERE CAST(substr(entity_id, 6) AS INTEGER) < {ONLINE_ENTITIES}
                  QUALIFY row_number() OVER (PARTITION BY entity_id
                                             ORDER BY event_timestamp DESC) = 1)
            TO '{paths["online"]}' (FORMAT parquet)"""
    )
    # Some spine rows come before the entity's first event (a day before the first week).
    span = EVENTS_PER_ENTITY * WEEK_S + 86_400
    con.execute(
        f"""COPY (SELECT 'cust_' || (hash(i) % {ENTITIES}) AS entity_id,
                   TIMESTAMP '2024-01-01'
                     + to_seconds(CAST(hash(i * 7) % {span} AS BIGINT) - 86400) AS timestamp,
                   i AS label
                  FROM range({SPINE_ROWS}) t(i)) TO '{paths["spine"]}' (FORMAT parquet)"""
    )
    con.execute(
        f"""CREATE TABLE ingest AS SELECT 'ing_' || i AS entity_id,
                   TIMESTAMP '2024-03-01' + to_seconds(i) AS event_timestamp, {values}
            FROM range({INGEST_ENTITIES}) t(i)"""
    )
    con.execute(
        f"COPY (SELECT *, event_timestamp AS created FROM ingest) "
        f"TO '{paths['ingest_wide']}' (FORMAT parquet)"
    )
    con.execute(
        f"""COPY (SELECT entity_id, feature_name, value, event_timestamp FROM ingest
                  UNPIVOT (value FOR feature_name IN ({", ".join(FEATURES)})))
            TO '{paths["ingest_long"]}' (FORMAT parquet)"""
    )
    # Feast's push appends to its batch source's file, which must exist: no rows yet.
    con.execute(
        f"COPY (SELECT *, event_timestamp AS created FROM ingest LIMIT 0) "
        f"TO '{paths['pushed']}' (FORMAT parquet)"
    )
    con.close()
    return paths
