"""What the stack's programs did during a benchmark run: CPU time, the server's histograms."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import psutil
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from featurestore import stack
from featurestore.services import RedisService
from featurestore.settings import Settings


def group_samples(settings: Settings, family_name: str) -> Iterator[Sample]:
    """Every sample of one metric family from each gRPC process of the group
    (settings.grpc_processes), process after process."""
    for port in settings.metrics_ports_grpc:
        with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name == family_name:
                yield from family.samples


def predict_buckets(settings: Settings, model_id: str) -> dict[str, float]:
    """Cumulative counts of the gRPC processes' fstore_predict_seconds histogram, by bound
    (summed over the processes of a group)."""
    counts: dict[str, float] = {}
    for sample in group_samples(settings, "fstore_predict_seconds"):
        if sample.name.endswith("_bucket") and sample.labels.get("model") == model_id:
            bound = sample.labels["le"]
            counts[bound] = counts.get(bound, 0.0) + sample.value
    return counts


class CpuMeter:
    """CPU seconds (user + system) used meanwhile by this process ("client"), the gRPC
    server program (children included) and redis-server."""

    def __init__(self, settings: Settings) -> None:
        grpc_pid = {p.name: p.pid for p in stack.programs(settings)}["grpc"]
        server = psutil.Process(grpc_pid)
        # redis-server runs detached when a start-up function started it before supervisord.
        redis_pid = RedisService(settings).status().pid
        self.processes = {
            "client": [psutil.Process()],
            "grpc": [server, *server.children(recursive=True)],
            "redis": [psutil.Process(redis_pid)] if redis_pid else [],
        }
        self.seconds: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {
            name: sum(sum(p.cpu_times()[:2]) for p in procs)
            for name, procs in self.processes.items()
        }

    def __enter__(self) -> CpuMeter:
        self._began = self._now()
        return self

    def __exit__(self, *_exc: object) -> None:
        end = self._now()
        self.seconds = {name: end[name] - self._began[name] for name in end}
