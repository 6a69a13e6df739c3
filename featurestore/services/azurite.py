"""Azure Blob Storage: a real account from the connection string, or Azurite on loopback."""

from __future__ import annotations

import http.client
import logging
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from featurestore.errors import ConfigError, ToolMissingError
from featurestore.logs import quoted
from featurestore.services import _proc
from featurestore.services.base import ManagedService

log = logging.getLogger(__name__)


def parse_connection_string(text: str) -> dict[str, str]:
    """Split an Azure Storage connection string into its key=value parts."""
    parts: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"malformed Azure connection string part {key!r}: expected key=value")
        parts[key.strip()] = value.strip()
    return parts


class AzuriteService(ManagedService):
    """Blob storage at the configured connection string; Azurite is started when local."""

    name = "azurite"

    @property
    def blob_endpoint(self) -> str:
        """Blob endpoint URL of the configured account."""
        parts = parse_connection_string(self.settings.azure_connection_string)
        if "BlobEndpoint" in parts:
            return parts["BlobEndpoint"]
        account = parts.get("AccountName")
        if not account:
            raise ConfigError("Azure connection string has neither BlobEndpoint nor AccountName")
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        return f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.blob.{suffix}"

    @property
    def address(self) -> str:
        return self.blob_endpoint

    @property
    def start_timeout(self) -> float:
        return self.settings.azurite_start_timeout_s

    def _host_port(self) -> tuple[str, int]:
        url = urlsplit(self.blob_endpoint)
        return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)

    def is_local(self) -> bool:
        return _proc.is_loopback(self._host_port()[0])

    def probe(self) -> str | None:
        host, port = self._host_port()
        if self.is_local():
            # Azurite answers any request with a Server header naming its version.
            conn = http.client.HTTPConnection(host, port, timeout=2)
            try:
                conn.request("GET", "/")
                server = conn.getresponse().getheader("Server") or ""
            except OSError:
                return None
            finally:
                conn.close()
            return server.rpartition("/")[2] if server.startswith("Azurite") else server
        try:
            # One quick try: a probe must not sit in the SDK's retry back-off.
            BlobServiceClient.from_connection_string(
                self.settings.azure_connection_string, retry_total=0, connection_timeout=5
            ).get_account_information()
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return None
        return ""

    def _client(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.settings.azure_connection_string)

    @property
    def package_dir(self) -> str:
        """npm prefix holding this Azurite version."""
        return str(self.settings.tools_dir / f"azurite-{self.settings.azurite_version}")

    def prepare(self) -> None:
        binary = f"{self.package_dir}/node_modules/.bin/azurite-blob"
        if Path(binary).exists():
            return
        npm = _proc.require_program("npm", "Azurite is installed with Node.js's npm")
        log.info(
            "azurite_install version=%s prefix=%s",
            self.settings.azurite_version,
            quoted(self.package_dir),
        )
        result = subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                self.package_dir,
                f"azurite@{self.settings.azurite_version}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ToolMissingError(f"npm install azurite failed:\n{result.stderr[-2000:]}")

    def command(self) -> list[str]:
        host, port = self._host_port()
        data = self.settings.data_dir / "azurite"
        data.mkdir(parents=True, exist_ok=True)
        # --skipApiVersionCheck: the current SDK sends an API version 3.35 does not know;
        # --disableTelemetry: telemetry tries to reach the internet.
        return [
            f"{self.package_dir}/node_modules/.bin/azurite-blob",
            "--blobHost",
            "127.0.0.1" if host == "localhost" else host,
            "--blobPort",
            str(port),
            "--location",
            str(data),
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]

    def after_ready(self) -> None:
        """Create the configured container."""
        try:
            self._client().create_container(self.settings.azure_container)
            log.info("azure_container_created container=%s", self.settings.azure_container)
        except ResourceExistsError:
            pass
