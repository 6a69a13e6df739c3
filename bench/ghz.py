"""ghz (github.com/bojand/ghz), a Go gRPC load client, driven for make bench-serve.

Python threads sending calls wait for the GIL, and those waits land in the latencies they
measure; a thread also waits for its reply, so an overloaded server holds back its sends.
ghz sends from Go goroutines at a constant rate (--rps with --async: each call leaves on
its tick, whatever earlier calls take) and reports every call's latency and status in its
JSON output. It does not cost the server's cores less CPU per call than the Python client
(0.3-0.4 ms at 500 calls/s, mostly the wake-ups of a sender idle between calls; README,
Serving).

`python -m bench.ghz` installs the pinned version into the state folder's tools (make
bench-serve runs it first; nothing is done when it is there).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2

from bench.common import PROJECT
from bench.load import RunFigures
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2

log = logging.getLogger("bench.ghz")

VERSION = "0.120.0"
PACKAGE = "github.com/bojand/ghz/cmd/ghz"
# Calls begun this soon after the first are left out of the latencies (not of the errors):
# ghz dials its connection with the first call, and the Python client's calls are measured
# on a channel already connected.
WARMUP_S = 0.2
TOOLS = PROJECT / ".state" / "tools"  # as bench.common.bench_settings's tools_path
REQUESTS = 4096  # distinct Predict requests, sent in turn
STAMP = re.compile(r"^(?P<whole>[^.]+?)(?:\.(?P<frac>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)$")


def binary(tools_path: Path) -> Path:
    """Where the pinned ghz lives: a folder per version, as the other tools."""
    return tools_path / f"ghz-{VERSION}" / "ghz"


def install(tools_path: Path) -> Path:
    """The pinned ghz, built with `go install` when it is not there yet."""
    path = binary(tools_path)
    if path.exists():
        return path
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"ghz {VERSION} is not in {path.parent} and `go` is not on PATH")
    log.info("bench_ghz_install version=%s into=%s (a few minutes the first time)", VERSION, path)
    env = {**os.environ, "GOBIN": str(path.parent)}
    subprocess.run([go, "install", f"{PACKAGE}@v{VERSION}"], env=env, check=True)
    return path


def write_protoset(path: Path, *files: FileDescriptor) -> Path:
    """A FileDescriptorSet of `files` and their imports, imports first (ghz --protoset).

    Built from the generated modules' descriptors, which check-protos keeps equal to
    protos/; grpcio-health-checking ships no health.proto to hand to --proto."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(out.file.add())

    for file in files:
        add(file)
    path.write_bytes(out.SerializeToString())
    return path


@dataclass(frozen=True)
class Target:
    """How ghz reaches the stack's server, as its settings say (TLS, bearer token)."""

    address: str
    protoset: Path
    cacert: Path | None = None
    metadata_file: Path | None = None

    def args(self) -> list[str]:
        """ghz's connection and credential flags."""
        out = ["--protoset", str(self.protoset)]
        out += ["--cacert", str(self.cacert)] if self.cacert else ["--insecure"]
        if self.metadata_file:
            out += ["--metadata-file", str(self.metadata_file)]
        return out


def target(settings: Settings, address: str, folder: Path) -> Target:
    """A Target for `address`, its protoset and token file written into `folder`."""
    protoset = write_protoset(
        folder / "ghz.protoset", featurestore_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR
    )
    metadata_file = None
    if settings.grpc_auth_token is not None:
        # In a file of mode 0600, not on the command line, where `ps` would show it.
        metadata_file = folder / "ghz-metadata.json"
        metadata_file.touch(mode=0o600)
        token = settings.grpc_auth_token.get_secret_value()
        metadata_file.write_text(json.dumps({"authorization": f"Bearer {token}"}))
    return Target(
        address, protoset, settings.grpc_tls_root_cert or settings.grpc_tls_cert, metadata_file
    )


@dataclass
class GhzRun(RunFigures):
    """One ghz run (latencies past the warm-up; a call never sent is an error): the rate
    ghz reports achieved, and ghz's own CPU seconds."""

    achieved_rps: float = 0.0  # a figure ghz reports, where LoadResult computes its own
    cpu_s: float = 0.0


def epoch_ns(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fraction digits (Go's)."""
    match = STAMP.match(stamp)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    whole = dt.datetime.fromisoformat(match["whole"] + zone)
    return int(whole.timestamp()) * 10**9 + int((match["frac"] or "0").ljust(9, "0")[:9])


def status_name(go_name: str) -> str:
    """grpc-go's name of a status code as grpc.StatusCode names it: DeadlineExceeded ->
    DEADLINE_EXCEEDED (Go spells one "Canceled")."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", go_name).upper()
    return "CANCELLED" if name == "CANCELED" else name


def parse_report(report: dict[str, Any], rate: float, planned: int) -> GhzRun:
    """A GhzRun from ghz's JSON report (-O json): its `details` (one per call: end time,
    latency in ns, status) and its achieved `rps`."""
    run = GhzRun(rate=rate, planned=planned, achieved_rps=float(report.get("rps") or 0.0))
    calls = []
    for detail in report.get("details") or []:
        latency_ns = int(detail["latency"])
        began = epoch_ns(detail["timestamp"]) - latency_ns
        status = status_name(detail.get("status") or ("Unknown" if detail.get("error") else "OK"))
        calls.append((began, latency_ns, status))
        if status != "OK":
            run.errors[status] += 1
    # Calls planned that ghz did not report are errors too.
    missing = planned - len(calls)
    if missing > 0:
        run.errors["NOT_SENT"] += missing
    calls.sort()
    if not calls:
        return run
    first = calls[0][0]
    for i, (began, latency_ns, status) in enumerate(calls):
        # The i-th send against the i-th slot of the schedule, counted from the first send.
        run.late_ms.append(max(0.0, (began - first) / 1e6 - i * 1000 / rate))
        if status == "OK" and began - first >= WARMUP_S * 1e9:
            run.latencies_ms.append(latency_ns / 1e6)
    return run


def run(
    ghz: Path,
    to: Target,
    call: str,
    data: dict[str, Any] | list[dict[str, Any]],
    rate: float,
    seconds: float,
    *,
    concurrency: int,
    timeout_s: float,
    folder: Path,
    connections: int = 1,
) -> GhzRun:
    """`rate` calls a second for `seconds` (open loop), every call's outcome kept."""
    planned = round(rate * seconds)
    name = call.rsplit("/", 1)[-1].lower()
    out, err = folder / f"ghz-{name}-{rate:g}.json", folder / f"ghz-{name}-{rate:g}.err"
    data_file = folder / f"ghz-{name}-data.json"
    data_file.write_text(json.dumps(data))
    args = [
        str(ghz), *to.args(), "--call", call, "--data-file", str(data_file),
        "--rps", f"{rate:g}", "--total", str(planned), "--async",
        "--concurrency", str(concurrency), "--connections", str(connections),
        "--timeout", f"{timeout_s:g}s",
        "--format", "json", "--output", str(out), to.address,
    ]  # fmt: skip
    with err.open("w") as stderr:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    # ghz's --max-duration would replace --total by a duration (calls in flight at its end
    # fail with UNAVAILABLE): the limit is kept here.
    limit = threading.Timer(seconds * 2 + 30, process.kill)
    limit.start()
    # wait4 rather than wait: the child's own CPU time (its start-up and report included).
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        limit.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"ghz {call} failed ({process.returncode}): {err.read_text()[-500:]}")
    report = json.loads(out.read_text())
    result = parse_report(report, rate, planned)
    # The texts behind the codes (which side failed), most frequent first.
    texts = sorted((report.get("errorDistribution") or {}).items(), key=lambda kv: -kv[1])
    for text, count in texts[:3]:
        log.warning("bench_ghz_errors call=%s rate=%g count=%d error=%r", call, rate, count, text)
    result.cpu_s = usage.ru_utime + usage.ru_stime
    return result


@dataclass(frozen=True)
class Client:
    """The calls make bench-serve sends through ghz, with their common flags."""

    ghz: Path
    to: Target
    folder: Path
    timeout_s: float
    concurrency: int
    # Each connection lands on one process of the gRPC group (SO_REUSEPORT), as each of
    # many clients' connections would.
    connections: int = 1

    def predict(self, model_id: str, ids: list[str], rate: float, seconds: float) -> GhzRun:
        """Predict for one entity drawn at random from `ids` per call."""
        rng = random.Random(1)
        # A fixed cycle of requests: without template actions ghz builds each one once
        # (a template would be run and its JSON parsed again on every call).
        data = [{"model_id": model_id, "entity_ids": [rng.choice(ids)]} for _ in range(REQUESTS)]
        call = "featurestore.v1.FeatureStore/Predict"
        return run(self.ghz, self.to, call, data, rate, seconds, **self._common())

    def health(self, rate: float, seconds: float) -> GhzRun:
        """The health Check of the whole server (the floor)."""
        call = "grpc.health.v1.Health/Check"
        return run(self.ghz, self.to, call, {"service": ""}, rate, seconds, **self._common())

    def _common(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "folder": self.folder,
            "connections": self.connections,
        }

    def steady_with_floor(
        self, model_id: str, ids: list[str], rate: float, seconds: float, floor_rate: float
    ) -> tuple[GhzRun, GhzRun]:
        """Predict at `rate` and, beside it from a ghz of its own, the health Check at
        `floor_rate`: the floor under the same load and noise."""
        with ThreadPoolExecutor(1) as beside:
            floor = beside.submit(self.health, floor_rate, seconds)
            predicts = self.predict(model_id, ids, rate, seconds)
        return predicts, floor.result()


def main() -> None:
    """Install the pinned ghz into the project's tools folder (when it is not there)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(install(TOOLS))


if __name__ == "__main__":
    main()
