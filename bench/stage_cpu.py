"""CPU seconds of each stage of the ingest path, for bench-ingest: on a shared machine rates
follow the load, CPU per event much less."""

from __future__ import annotations

from urllib.parse import urlsplit

import psutil

from featurestore import stack
from featurestore.settings import Settings


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    if not pid:
        return 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        times = [p.cpu_times() for p in procs]
    except psutil.Error:
        return 0.0
    return sum(t.user + t.system for t in times)


def listener_pid(port: int | None) -> int | None:
    """The process listening on a local TCP port (the Kafka broker, Redis), if any."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def stage_cpu(settings: Settings) -> dict[str, float]:
    """CPU seconds so far of the producer (this process, librdkafka's threads included), of
    every program of the stack, and of the Kafka broker and Redis server processes."""
    own = psutil.Process().cpu_times()
    programs = {p.name: cpu_s(p.pid) for p in stack.programs(settings)}
    servers = {
        "kafka-broker": listener_pid(int(settings.kafka_bootstrap.rsplit(":", 1)[1])),
        "redis-server": listener_pid(urlsplit(settings.redis_url).port),
    }
    return (
        {"producer": own.user + own.system}
        | programs
        | {name: cpu_s(pid) for name, pid in servers.items()}
    )
