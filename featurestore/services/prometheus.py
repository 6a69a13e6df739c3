"""Prometheus: scrapes every program of the stack (config written from the settings)."""

from __future__ import annotations

import urllib.error
import urllib.request

from featurestore.services import _proc
from featurestore.services.base import ManagedService


class PrometheusService(ManagedService):
    """A Prometheus server on loopback that scrapes the stack's metrics ports."""

    name = "prometheus"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def is_local(self) -> bool:
        return True

    def probe(self) -> str | None:
        try:
            url = f"{self.address}/api/v1/status/buildinfo"  # always http on loopback
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310
                body = reply.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        marker = '"version":"'
        start = body.find(marker)
        return body[start + len(marker) :].split('"', 1)[0] if start >= 0 else ""

    @property
    def config_file(self) -> str:
        """Where the generated scrape configuration lives."""
        return str(self.settings.data_dir / "prometheus" / "prometheus.yml")

    def scrape_targets(self) -> dict[str, int]:
        """Job name -> metrics port on loopback."""
        s = self.settings
        return {
            "duckdb_worker": s.metrics_port_worker,
            "bridge": s.metrics_port_bridge,
            "grpc": s.metrics_port_grpc,
            "beat": s.metrics_port_beat,
            "model_sync": s.metrics_port_model_sync,
            "flower": s.flower_port,
        }

    def prepare(self) -> None:
        folder = self.settings.data_dir / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        interval = f"{self.settings.prometheus_scrape_interval_s:g}s"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in self.scrape_targets().items()
        )
        (folder / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            f"scrape_configs:\n{jobs}"
        )

    def command(self) -> list[str]:
        binary = _proc.require_program("prometheus", "the Debian package prometheus")
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.settings.data_dir / 'prometheus' / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.settings.prometheus_port}",
            "--storage.tsdb.retention.time=7d",
        ]
