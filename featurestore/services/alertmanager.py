"""Alertmanager (Debian prometheus-alertmanager): receives the alerts Prometheus fires."""

from __future__ import annotations

import shutil
from pathlib import Path

from featurestore.errors import ConfigError
from featurestore.services import _http, _proc
from featurestore.services.base import ManagedService

PROMETHEUS_FOLDER = Path(__file__).resolve().parents[2] / "prometheus"


class AlertmanagerService(ManagedService):
    """An Alertmanager on loopback, alone (no cluster), with the configured receivers."""

    name = "alertmanager"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.alertmanager_port}"

    def is_local(self) -> bool:
        return True

    def probe(self) -> str | None:
        status = _http.get_json(f"{self.address}/api/v2/status")
        if not isinstance(status, dict):
            return None
        return str(status.get("versionInfo", {}).get("version", ""))

    @property
    def folder(self) -> Path:
        """Config and notification state of the Alertmanager this project runs."""
        return self.settings.data_dir / "alertmanager"

    def prepare(self) -> None:
        source = self.settings.alertmanager_config or PROMETHEUS_FOLDER / "alertmanager.yml"
        if not source.is_file():
            raise ConfigError(f"Alertmanager configuration {source} does not exist")
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.folder / "alertmanager.yml")

    def command(self) -> list[str]:
        binary = _proc.require_program(
            "prometheus-alertmanager", "the Debian package prometheus-alertmanager"
        )
        return [
            binary,
            f"--config.file={self.folder / 'alertmanager.yml'}",
            f"--storage.path={self.folder / 'state'}",
            f"--web.listen-address=127.0.0.1:{self.settings.alertmanager_port}",
            # One instance: no gossip port to collide with other stacks on this machine.
            "--cluster.listen-address=",
        ]
