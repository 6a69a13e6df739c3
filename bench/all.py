"""make bench: every benchmark (ingest, read, serve), one after another, in one table.

Each runs as a subprocess (`python -m bench.<name>`) that starts and stops a stack of its
own (bench.common.running_stack: a stack left by a benchmark killed with SIGKILL is stopped
by the next one). A SIGTERM or Ctrl-C here is passed on to the benchmark running, which
stops its stack; nothing after it runs. Each benchmark's last line is one JSON object; the
table puts each figure beside its floor from the same run and its issue's target (issue 12
for ingest, freshness and reads, issue 11 for serving).

python -m bench.all [--full] [--only ingest,read,serve]; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from bench.targets import FIGURES, Figure

# The short forms keep `make bench` under 15 minutes on this 2-core machine; --full runs
# each benchmark as its own make target does.
SHORT_ARGS = {
    "read": ["--rows", "2000000", "--ingest-seconds", "30", "--no-training"],
}
BENCHMARKS = ("ingest", "read", "serve")
PR_SET_PDEATHSIG = 1


@dataclass
class Run:
    """One benchmark's outcome: its JSON summary (empty if it failed), exit code, seconds."""

    name: str
    summary: dict[str, Any]
    returncode: int
    seconds: float


class _Forward:
    """Passes SIGTERM and SIGINT on to the running benchmark, and remembers them."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[str] | None = None
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def _stop_with_parent() -> None:
    # In the child, before exec: a SIGTERM when this process dies, even by SIGKILL, so the
    # benchmark still stops its stack (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_one(name: str, command: list[str], forward: _Forward) -> Run:
    """Run a benchmark's command, its output passed through to stderr; its last JSON line."""
    print(f"== {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    began = time.monotonic()
    # Its own process group: a Ctrl-C at the terminal reaches it once, through _Forward.
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_stop_with_parent,  # noqa: PLW1509 - this process starts no threads
    )
    forward.child = child
    if forward.signal is not None:  # arrived before the child was known
        child.send_signal(forward.signal)
    last = ""
    assert child.stdout is not None
    for line in child.stdout:
        sys.stderr.write(line)
        if line.strip():
            last = line.strip()
    returncode = child.wait()
    forward.child = None
    try:
        summary = json.loads(last) if returncode == 0 else {}
    except ValueError:
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    return Run(name, summary, returncode, time.monotonic() - began)


def bench_command(name: str, full: bool) -> list[str]:
    """The command that runs bench.<name>, in its short form unless full."""
    return [sys.executable, "-m", f"bench.{name}", *([] if full else SHORT_ARGS.get(name, []))]


def _value(summary: dict[str, Any], key: str | None) -> float | None:
    if key is None or not isinstance(summary.get(key), int | float):
        return None
    value = float(summary[key])
    return None if math.isnan(value) else value


def judged(figure: Figure, runs: dict[str, Run]) -> dict[str, Any]:
    """One figure: its value, its floor in the same run, its target, and pass/miss."""
    run = runs.get(figure.bench)
    summary = run.summary if run else {}
    value = _value(summary, figure.key)
    floor = _value(summary, figure.floor_key)
    verdict = "-"
    if figure.target is not None:
        verdict = "n/a" if value is None else ("pass" if figure.met(value) else "miss")
    return {
        "figure": figure.label,
        "key": f"{figure.bench}.{figure.key}",
        "value": value,
        "floor": floor,
        "floor_is": figure.floor_label,
        "target": figure.target_text,
        "issue": figure.issue,
        "verdict": verdict,
    }


def _shown(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a fixed-width table."""
    head = f"{'FIGURE':<44}{'VALUE':>10}  {'FLOOR (same run)':<34}{'TARGET':<18}RESULT"
    lines = [head, "-" * len(head)]
    for row in rows:
        floor = "-" if row["floor"] is None else f"{_shown(row['floor'])} {row['floor_is']}"
        target = f"{row['target']} (#{row['issue']})" if row["target"] else "-"
        lines.append(
            f"{row['figure']:<44}{_shown(row['value']):>10}  {floor:<34}{target:<18}"
            f"{row['verdict']}"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the benchmarks in turn, print the table, and the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="each benchmark at full length")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    forward = _Forward()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    runs: dict[str, Run] = {}
    try:
        for name in names:
            runs[name] = run_one(name, bench_command(name, args.full), forward)
            if forward.signal is not None:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    rows = [judged(f, runs) for f in FIGURES if f.bench in runs]
    print(table(rows))
    failed = [r.name for r in runs.values() if r.returncode != 0 or not r.summary]
    result = {
        "mode": "full" if args.full else "short",
        "seconds": round(time.monotonic() - began, 1),
        "load_average_1m_before": round(load_before, 1),
        "load_average_1m_after": round(os.getloadavg()[0], 1),
        "cpus": len(os.sched_getaffinity(0)),
        "bench_seconds": {r.name: round(r.seconds, 1) for r in runs.values()},
        "failed": failed,
        "stopped_by_signal": forward.signal,
        "passed": sum(r["verdict"] == "pass" for r in rows),
        "missed": sum(r["verdict"] == "miss" for r in rows),
        "figures": {
            r["key"]: {k: r[k] for k in ("value", "floor", "target", "verdict")} for r in rows
        },
    }
    print(json.dumps(result))
    if forward.signal is not None:
        return 128 + forward.signal
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
