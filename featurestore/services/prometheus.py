"""Prometheus: scrapes every program of the stack, evaluates the alert rules, sends alerts to
Alertmanager. Its config is written from the committed prometheus/ folder for the settings."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from featurestore.errors import ConfigError
from featurestore.services import _http, _proc
from featurestore.services.base import ManagedService
from featurestore.services.kafka import KafkaService
from featurestore.settings import Settings

PROMETHEUS_FOLDER = Path(__file__).resolve().parents[2] / "prometheus"
# ModelSyncStale's threshold as committed (3 periods of the default 60 s): the running copy
# gets 3 periods of the configured interval.
STALE_SYNC_THRESHOLD = "> 3 * 60"


def scrape_targets(settings: Settings) -> dict[str, int]:
    """Job name -> metrics port on loopback, for every job the stack's Prometheus scrapes."""
    s = settings
    targets = {
        "duckdb_worker": s.metrics_port_worker,
        "bridge": s.metrics_port_bridge,
        "grpc": s.metrics_port_grpc,
        "beat": s.metrics_port_beat,
        "model_sync": s.metrics_port_model_sync,
        "flower": s.flower_port,
        "redis_exporter": s.redis_exporter_port,
        "alertmanager": s.alertmanager_port,
        "prometheus": s.prometheus_port,
    }
    # The JMX exporter agent rides in a broker this project starts, not in an external one.
    if KafkaService(settings).is_local():
        targets["kafka"] = s.kafka_jmx_exporter_port
    return targets


def render_config(
    settings: Settings, rules_dir: Path, folder: Path = PROMETHEUS_FOLDER
) -> dict[str, Any]:
    """The committed prometheus.yml with the settings' ports, interval and rules folder."""
    config: dict[str, Any] = yaml.safe_load((folder / "prometheus.yml").read_text())
    ports = scrape_targets(settings)
    interval = f"{settings.prometheus_scrape_interval_s:g}s"
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{settings.alertmanager_port}"]}]}
    ]
    config["rule_files"] = [str(rules_dir / "*.yml")]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "kafka" and name not in ports:
            continue
        if name not in ports:
            raise ConfigError(f"{folder / 'prometheus.yml'}: job {name!r} has no port in settings")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports.pop(name)}"]}]
        if name == "grpc" and settings.grpc_processes > 1:
            # One target per process of the group; `process` keeps their series apart (the
            # instance label is the host alone).
            job["static_configs"] = [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"process": str(index)}}
                for index, port in enumerate(settings.metrics_ports_grpc)
            ]
        jobs.append(job)
    if ports:
        raise ConfigError(f"{folder / 'prometheus.yml'} lacks the jobs {sorted(ports)}")
    config["scrape_configs"] = jobs
    return config


def write_rules(settings: Settings, rules_dir: Path, folder: Path = PROMETHEUS_FOLDER) -> None:
    """Copy the committed rules, ModelSyncStale's threshold set from the sync interval."""
    shutil.rmtree(rules_dir, ignore_errors=True)
    rules_dir.mkdir(parents=True)
    threshold = f"> 3 * {settings.model_sync_interval_s:g}"
    found = False
    for source in sorted((folder / "rules").glob("*.yml")):
        text = source.read_text()
        found |= STALE_SYNC_THRESHOLD in text
        (rules_dir / source.name).write_text(text.replace(STALE_SYNC_THRESHOLD, threshold))
    if not found:
        raise ConfigError(f"no rule in {folder / 'rules'} has {STALE_SYNC_THRESHOLD!r}")


class PrometheusService(ManagedService):
    """A Prometheus server on loopback that scrapes the stack's metrics ports."""

    name = "prometheus"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def is_local(self) -> bool:
        return True

    def probe(self) -> str | None:
        info = _http.get_json(f"{self.address}/api/v1/status/buildinfo")
        if not isinstance(info, dict):
            return None
        return str(info.get("data", {}).get("version", ""))

    @property
    def folder(self) -> Path:
        """Where the generated configuration and rules live."""
        return self.settings.data_dir / "prometheus"

    @property
    def config_file(self) -> str:
        """The generated configuration."""
        return str(self.folder / "prometheus.yml")

    def scrape_targets(self) -> dict[str, int]:
        """Job name -> metrics port on loopback."""
        return scrape_targets(self.settings)

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rules = self.folder / "rules"
        write_rules(self.settings, rules)
        config = render_config(self.settings, rules)
        Path(self.config_file).write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        binary = _proc.require_program("prometheus", "the Debian package prometheus")
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.settings.prometheus_port}",
            "--storage.tsdb.retention.time=7d",
        ]
