"""Redis authentication and TLS: the generated password, clients refused without it, and a
Redis started for a rediss:// URL that redis-py, kombu and Celery's backend all reach."""

from __future__ import annotations

import socket
import ssl
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from celery import Celery

from featurestore import credentials
from featurestore.services import ManagedService, RedisExporterService, RedisService
from featurestore.settings import Settings
from tasks.result_backend import backend_url
from tests.certificates import self_signed
from tests.conftest import PORT_OFFSET, make_settings, require_tools

pytestmark = pytest.mark.integration

TLS_PORT = 26379 + PORT_OFFSET + 13
PLAIN_PORT = 26379 + PORT_OFFSET + 14
EXPORTER_PORT = 29121 + PORT_OFFSET + 13


def _port(url: str) -> int:
    return int(redis.ConnectionPool.from_url(url).connection_kwargs["port"])


def _raw_reply(port: int, command: bytes) -> bytes:
    """The first reply line to one inline command, sent without any client library."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(command + b"\r\n")
        return conn.recv(256).split(b"\r\n")[0]


def test_a_client_without_the_password_is_refused(
    redis_service: ManagedService, settings: Settings
) -> None:
    port = _port(settings.redis_url)
    assert _raw_reply(port, b"PING").startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="localhost", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="localhost", port=port, password="not-the-password").ping()
    assert redis.Redis.from_url(settings.redis_url).ping()


def test_the_password_is_generated_once_for_the_owner_only_and_never_on_a_command_line(
    redis_service: ManagedService, settings: Settings
) -> None:
    assert settings.redis_password is not None
    password = settings.redis_password.get_secret_value()
    folder = credentials.secrets_dir(settings.state_dir)
    stored = folder / credentials.REDIS_PASSWORD
    assert stored.read_text().strip() == password and len(password) >= 40
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    again = make_settings(settings.state_dir)
    assert again.redis_url == settings.redis_url
    pid = redis_service.status().pid
    assert pid is not None
    server = psutil.Process(pid)
    assert "redis-server" in server.name()
    assert password not in " ".join(server.cmdline())
    config = RedisService(settings).config_file
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert password in config.read_text()
    assert password not in repr(settings)


def test_a_password_with_quotes_spaces_and_newlines_works(tmp_path: Path) -> None:
    require_tools("redis-server")
    password = 'a "quoted" pass\\word with\nnewline and # hash'
    odd = make_settings(
        tmp_path, redis_url=f"redis://localhost:{PLAIN_PORT}/0", redis_password=password
    )
    service = RedisService(odd)
    assert service.ensure().started
    try:
        assert redis.Redis.from_url(odd.redis_url).ping()
        assert redis.Redis(port=PLAIN_PORT, password=password).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=PLAIN_PORT, password=password.split()[0]).ping()
    finally:
        service.stop()


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a Redis serving TLS only, started by RedisService for a rediss:// URL."""
    require_tools("redis-server")
    state = tmp_path_factory.mktemp("redis-tls")
    cert_file, key_file = self_signed(state, "redis")
    tls = make_settings(
        state,
        redis_url=f"rediss://localhost:{TLS_PORT}/0",
        redis_tls_cert_file=cert_file,
        redis_tls_key_file=key_file,
        redis_tls_ca_file=cert_file,
        redis_exporter_port=EXPORTER_PORT,
    )
    service = RedisService(tls)
    status = service.ensure()
    yield tls
    if status.started:
        service.stop()


def test_a_rediss_url_reaches_a_tls_redis_with_the_certificate_checked(
    tls_settings: Settings,
) -> None:
    client = redis.Redis.from_url(tls_settings.redis_url)
    client.set("tls:key", b"value")
    assert client.get("tls:key") == b"value"
    assert "ssl_cert_reqs=required" in tls_settings.redis_url
    # No plain text on that port, and no TLS without trusting the server's certificate.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="localhost", port=TLS_PORT, password="x", socket_timeout=3).ping()
    untrusting = tls_settings.redis_url.split("?")[0] + "?ssl_cert_reqs=required"
    with pytest.raises(redis.ConnectionError) as refused:
        redis.Redis.from_url(untrusting, socket_timeout=3).ping()
    assert isinstance(refused.value.__context__, ssl.SSLError) or "certificate" in str(
        refused.value
    )
    # Encrypted but without the password: refused too.
    anonymous = tls_settings.redis_url.replace(
        f":{credentials.url_password(tls_settings.redis_url)}@", ""
    )
    assert credentials.url_password(anonymous) is None
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous).ping()


def test_the_exporter_reads_the_tls_redis_with_the_password(tls_settings: Settings) -> None:
    require_tools("prometheus-redis-exporter")
    exporter = RedisExporterService(tls_settings)
    status = exporter.ensure()
    try:
        assert "redis_up 1" in _metrics(exporter.address)
        password = credentials.url_password(tls_settings.redis_url)
        assert password and status.pid is not None
        assert password not in " ".join(psutil.Process(status.pid).cmdline())
    finally:
        if status.started:
            exporter.stop()


def _metrics(address: str) -> str:
    """The exporter's page once it has scraped Redis (a scrape per request)."""
    with urllib.request.urlopen(f"{address}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_celery_broker_and_result_backend_work_over_rediss(tls_settings: Settings) -> None:
    app = Celery(
        "tls-test",
        broker=tls_settings.redis_url,
        result_backend=backend_url(tls_settings.redis_url),
    )
    try:
        with app.connection_for_write() as conn:
            queue = conn.SimpleQueue("tls-test")
            queue.put({"n": 1})
            assert queue.get(timeout=10).payload == {"n": 1}
            queue.close()
        app.backend.store_result("tls-task", {"answer": 42}, "SUCCESS")
        assert app.backend.get_task_meta("tls-task")["result"] == {"answer": 42}
        # Celery's banners and logs print the URLs through as_uri: the password masked.
        password = credentials.url_password(tls_settings.redis_url)
        assert password and password not in app.connection_for_write().as_uri()
        assert password not in app.backend.as_uri()
    finally:
        app.close()
