"""Redis: the Celery broker and result backend, the online store and the model cache."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from featurestore.services import _proc
from featurestore.services.base import ManagedService


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
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None
        except redis.ResponseError:  # e.g. LOADING the append-only file
            return None
        finally:
            client.close()

    def command(self) -> list[str]:
        server = _proc.require_program("redis-server", "the Debian package redis-server")
        port = urlsplit(self.settings.redis_url).port or 6379
        data = self.settings.data_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # The append-only file keeps queued Celery tasks across a Redis restart.
        return [
            server,
            "--port",
            str(port),
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
