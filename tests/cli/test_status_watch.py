"""`fstore status --watch`'s screen from a snapshot (the stack's own is in
tests/test_observability.py), and its answer when Prometheus does not answer."""

from __future__ import annotations

import io
import math
import socket
from pathlib import Path

from featurestore.cli.watch import QUERIES, Alert, Model, Snapshot, duration, render, run
from tests.conftest import make_settings


def snapshot(**figures: float) -> Snapshot:
    return Snapshot(figures={name: figures.get(name, math.nan) for name in QUERIES})


def test_every_figure_is_on_the_screen() -> None:
    snap = Snapshot(
        figures={
            "events": 1234.5,
            "messages": 3.0,
            "freshness_p99": 0.75,
            "writes": 1200.0,
            "reads": 42.0,
            "predict": 250.0,
            "predict_p99": 0.0042,
        },
        lag={"features": 17.0, "predictions": 0.0},
        models=[Model("credit_risk", "3.1.0", 75.0)],
        down=["bridge"],
        alerts=[Alert("IngestionStalled", "critical", "Ingestion of features[0] stalled")],
    )
    screen = render(snap)
    assert "events/s 1234.5   messages/s 3.0   lag features 17, predictions 0" in screen
    assert "freshness p99 (Kafka -> online) 0.75 s" in screen
    assert "rows written/s 1200.0   reads/s 42.0" in screen
    assert "Predict/s 250.0   Predict p99 4.20 ms" in screen
    assert "\ncredit_risk                     3.1.0         1m ago\n" in screen
    assert "\nDOWN     bridge\n" in screen
    assert screen.endswith(
        "ALERTS FIRING (1)\n  IngestionStalled [critical] Ingestion of features[0] stalled"
    )


def test_figures_without_data_show_a_dash() -> None:
    screen = render(snapshot(events=0.0))
    assert "events/s 0.0   messages/s -   lag -" in screen
    assert "Predict p99 -" in screen
    assert "(no model served)" in screen
    assert "ALERTS FIRING (0)" in screen


def test_lines_are_cut_to_the_terminal_width() -> None:
    snap = Snapshot(figures=snapshot().figures, alerts=[Alert("A", "warning", "x" * 300)])
    assert max(len(line) for line in render(snap, width=60).splitlines()) == 60


def test_durations() -> None:
    assert [duration(s) for s in (5, 59, 60, 150, 7200, 90000)] == [
        "5s",
        "59s",
        "1m",
        "2m",
        "2h",
        "1d",
    ]
    assert duration(math.nan) == "-"


def test_a_prometheus_that_does_not_answer_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = io.StringIO()
    code = run(make_settings(tmp_path, prometheus_port=port), 0.0, 2, out)
    assert code == 1
    assert (
        out.getvalue().count(f"Prometheus at http://127.0.0.1:{port}/api/v1 does not answer") == 2
    )
