"""Exporters of the backing services: prometheus-redis-exporter (Debian) for Redis.

Kafka's exporter is the JMX exporter's Java agent inside the broker (services/kafka.py).
"""

from __future__ import annotations

import re

from featurestore import credentials
from featurestore.services import _http, _proc
from featurestore.services.base import ManagedService

_VERSION = re.compile(r'^redis_exporter_build_info\{(?:.*,)?version="([^"]*)"', re.MULTILINE)


class RedisExporterService(ManagedService):
    """prometheus-redis-exporter on loopback, reading settings.redis_url."""

    name = "redis-exporter"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.redis_exporter_port}"

    def is_local(self) -> bool:
        # The exporter always runs here; the Redis it reads may be anywhere.
        return True

    def probe(self) -> str | None:
        body = _http.get_text(f"{self.address}/metrics", timeout=5)
        if body is None:
            return None
        match = _VERSION.search(body)
        return match.group(1) if match else ""

    def env(self) -> dict[str, str]:
        # Secrets go in the environment, never on the command line, and apart from the
        # address, which the exporter may log.
        env = {"REDIS_ADDR": credentials.without_secrets(self.settings.redis_url)}
        password = self.settings.redis_password
        if password is not None and password.get_secret_value():
            env["REDIS_PASSWORD"] = password.get_secret_value()
        if self.settings.redis_tls_ca_file is not None:
            env["REDIS_EXPORTER_TLS_CA_CERT_FILE"] = str(self.settings.redis_tls_ca_file)
        return env

    def command(self) -> list[str]:
        binary = _proc.require_program(
            "prometheus-redis-exporter", "the Debian package prometheus-redis-exporter"
        )
        return [
            binary,
            f"-web.listen-address=127.0.0.1:{self.settings.redis_exporter_port}",
            "-log-format=txt",
        ]
