"""Redis: the Celery broker and result backend, the online store and the model cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import redis

from featurestore.errors import ConfigError
from featurestore.services import _proc
from featurestore.services.base import ManagedService

log = logging.getLogger(__name__)


def _quoted(value: str) -> str:
    """A redis.conf string argument (double-quoted, backslashes and quotes escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


class RedisService(ManagedService):
    """The Redis server at settings.redis_url; redis-server is started when local."""

    name = "redis"

    @property
    def address(self) -> str:
        parts = urlsplit(self.settings.redis_url)
        return _proc.format_host_port(parts.hostname or "localhost", parts.port or 6379)

    @property
    def start_timeout(self) -> float:
        return self.settings.redis_start_timeout_s

    def is_local(self) -> bool:
        return _proc.is_loopback(urlsplit(self.settings.redis_url).hostname or "localhost")

    def probe(self) -> str | None:
        client = redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=1, socket_timeout=2
        )
        try:
            return str(client.info("server")["redis_version"])
        except redis.AuthenticationError:
            # A Redis answers there but refuses the password: not this state folder's, or
            # started before it had one. Logged: it is the cause of the failed start (the
            # port is taken) that follows.
            log.warning("redis_auth_refused address=%s", self.address)
            return None
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None
        except redis.ResponseError:  # e.g. LOADING the append-only file
            return None
        finally:
            client.close()

    @property
    def config_file(self) -> Path:
        """The secret part of the configuration (password, TLS files), readable by the owner."""
        return self.settings.data_dir / "redis" / "redis-secret.conf"

    def prepare(self) -> None:
        # The password goes in a file, never on the command line, where `ps` would show it.
        lines = []
        password = self.settings.redis_password
        if password is not None and password.get_secret_value():
            lines.append(f"requirepass {_quoted(password.get_secret_value())}")
        lines.extend(self._tls_lines())
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{line}\n" for line in lines))

    def _tls_lines(self) -> list[str]:
        """TLS only on the port of a rediss:// URL, with the certificate from the settings."""
        if urlsplit(self.settings.redis_url).scheme != "rediss":
            return []
        s = self.settings
        if s.redis_tls_cert_file is None or s.redis_tls_key_file is None:
            raise ConfigError(
                "a local Redis for a rediss:// URL needs FSTORE_REDIS_TLS_CERT_FILE and "
                "FSTORE_REDIS_TLS_KEY_FILE"
            )
        lines = [
            f"tls-cert-file {_quoted(str(s.redis_tls_cert_file))}",
            f"tls-key-file {_quoted(str(s.redis_tls_key_file))}",
            # Clients prove who they are with the password, not with certificates.
            "tls-auth-clients no",
        ]
        if s.redis_tls_ca_file is not None:
            lines.append(f"tls-ca-cert-file {_quoted(str(s.redis_tls_ca_file))}")
        return lines

    def command(self) -> list[str]:
        server = _proc.require_program("redis-server", "the Debian package redis-server")
        port = urlsplit(self.settings.redis_url).port or 6379
        tls = urlsplit(self.settings.redis_url).scheme == "rediss"
        data = self.settings.data_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # The append-only file keeps queued Celery tasks across a Redis restart.
        return [
            server,
            str(self.config_file),
            "--port",
            "0" if tls else str(port),
            *(["--tls-port", str(port)] if tls else []),
            "--bind",
            "127.0.0.1",
            "-::1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
