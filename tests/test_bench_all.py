"""make bench's orchestrator (bench.all), without services: verdicts against targets, the
last JSON line taken from a benchmark, and a SIGTERM passed on to the benchmark running (and
sent to it when the orchestrator is SIGKILLed), so that it can stop its stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from pathlib import Path

from bench import all as bench_all
from bench.targets import Figure
from tests.helpers import wait_until

# A stand-in benchmark: says it is ready, then sleeps; SIGTERM makes it print its summary
# (as a benchmark does once its stack is down) and exit 0.
TRAPPING = textwrap.dedent(
    """
    import json, pathlib, signal, sys, time
    def stop(signum, frame):
        pathlib.Path(sys.argv[1]).with_suffix(".stopped").write_text(str(signum))
        print(json.dumps({"stopped": signum}), flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    pathlib.Path(sys.argv[1]).write_text("ready")
    print("some log line", flush=True)
    time.sleep(90)  # past the waits below: without the signal, no summary
    """
)


def runs(name: str, summary: Mapping[str, object]) -> dict[str, bench_all.Run]:
    return {name: bench_all.Run(name, dict(summary), 0, 1.0)}


def test_verdicts_follow_the_targets_direction() -> None:
    upper = Figure("read", "p99", "p99", "floor", "no-op", 15, issue=12)
    lower = Figure("ingest", "rate", "rate", target=300_000, at_least=True, issue=12)
    row = bench_all.judged(upper, runs("read", {"p99": 14.9, "floor": 3.0}))
    assert (row["value"], row["floor"], row["verdict"]) == (14.9, 3.0, "pass")
    assert bench_all.judged(upper, runs("read", {"p99": 15.1}))["verdict"] == "miss"
    assert bench_all.judged(lower, runs("ingest", {"rate": 299_999}))["verdict"] == "miss"
    assert bench_all.judged(lower, runs("ingest", {"rate": 300_000}))["verdict"] == "pass"


def test_a_figure_not_printed_or_not_a_number_is_not_applicable() -> None:
    figure = Figure("read", "p99", "p99", target=15, issue=12)
    for summary in ({}, {"p99": float("nan")}, {"p99": "fast"}):
        row = bench_all.judged(figure, runs("read", summary))
        assert (row["value"], row["verdict"]) == (None, "n/a")
    assert bench_all.judged(Figure("read", "x", "x"), runs("read", {"x": 1}))["verdict"] == "-"


def test_the_summary_is_the_last_line_and_a_failed_run_has_none() -> None:
    script = 'print("a table"); print(\'{"a": 1}\'); print()'
    run = bench_all.run_one("x", [sys.executable, "-c", script], bench_all._Forward())
    assert (run.summary, run.returncode) == ({"a": 1}, 0)
    failing = "print('{\"a\": 1}'); raise SystemExit(3)"
    run = bench_all.run_one("x", [sys.executable, "-c", failing], bench_all._Forward())
    assert (run.summary, run.returncode) == ({}, 3)


def test_a_sigterm_is_passed_on_to_the_benchmark_running(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    forward = bench_all._Forward()

    def terminate_when_ready() -> None:
        assert wait_until(ready.exists, timeout=60)
        forward(signal.SIGTERM, None)

    thread = threading.Thread(target=terminate_when_ready)
    thread.start()
    run = bench_all.run_one("x", [sys.executable, "-c", TRAPPING, str(ready)], forward)
    thread.join()
    assert run.summary == {"stopped": signal.SIGTERM}
    assert forward.signal == signal.SIGTERM


def test_a_sigkilled_orchestrator_still_stops_its_benchmark(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    orchestrator = textwrap.dedent(
        f"""
        import sys
        from bench import all as bench_all
        bench_all.run_one("x", [sys.executable, "-c", {TRAPPING!r}, {str(ready)!r}],
                          bench_all._Forward())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", orchestrator], cwd=Path(__file__).parents[1])
    try:
        assert wait_until(ready.exists, timeout=60)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        stopped = ready.with_suffix(".stopped")
        assert wait_until(stopped.exists, timeout=60)
        assert json.loads(stopped.read_text()) == signal.SIGTERM
    finally:
        if parent.poll() is None:
            parent.kill()
