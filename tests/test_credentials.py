"""The generated secrets and the Redis URL built from the settings (no services needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from featurestore import credentials
from featurestore.errors import ConfigError
from featurestore.settings import Settings


def _params(url: str) -> dict[str, object]:
    """What redis-py makes of the URL."""
    return dict(redis.ConnectionPool.from_url(url).connection_kwargs)


def test_a_secret_is_generated_once_even_when_many_ask_at_once(tmp_path: Path) -> None:
    seen: list[str] = []

    def ask() -> None:
        seen.append(credentials.local_secret(tmp_path, "shared"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1 and len(seen) == 16
    assert credentials.local_secret(tmp_path, "other") != seen[0]
    # No temporary file is left behind.
    assert sorted(p.name for p in credentials.secrets_dir(tmp_path).iterdir()) == [
        "other",
        "shared",
    ]


def test_an_empty_secret_file_is_an_error_naming_it(tmp_path: Path) -> None:
    credentials.secrets_dir(tmp_path).mkdir()
    (credentials.secrets_dir(tmp_path) / "blank").write_text("\n")
    with pytest.raises(ConfigError, match="blank"):
        credentials.local_secret(tmp_path, "blank")


def test_a_local_redis_gets_the_generated_password_in_its_url(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, redis_url="redis://localhost:6400/2")
    generated = (tmp_path / "secrets" / credentials.REDIS_PASSWORD).read_text().strip()
    assert settings.redis_url == f"redis://:{generated}@localhost:6400/2"
    assert settings.redis_password == SecretStr(generated)
    assert generated not in repr(settings)


def test_a_given_password_is_quoted_into_the_url(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, redis_url="redis://cache.internal:6379/0", redis_password="p@ss:w/rd"
    )
    assert _params(settings.redis_url)["password"] == "p@ss:w/rd"
    assert not (tmp_path / "secrets").exists()


def test_the_urls_password_wins_and_survives_a_dump(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, redis_url="redis://:in-url@localhost:6379/0", redis_password="other"
    )
    assert credentials.url_password(settings.redis_url) == "in-url"
    assert settings.redis_password == SecretStr("in-url")
    loaded = Settings.model_validate_json(settings.model_dump_json())
    assert loaded.redis_url == settings.redis_url


def test_child_programs_get_the_same_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path, redis_url="redis://localhost:6401/0")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings().redis_url == settings.redis_url


def test_a_remote_redis_without_a_password_and_the_explicit_opt_out(tmp_path: Path) -> None:
    remote = Settings(state_dir=tmp_path, redis_url="redis://cache.internal:6379/0")
    assert remote.redis_url == "redis://cache.internal:6379/0" and remote.redis_password is None
    opted_out = Settings(
        state_dir=tmp_path, redis_url="redis://localhost:6379/0", redis_password=""
    )
    assert opted_out.redis_url == "redis://localhost:6379/0"
    assert not (tmp_path / "secrets").exists()


def test_a_rediss_url_checks_certificates_unless_told_otherwise(tmp_path: Path) -> None:
    secure = Settings(
        state_dir=tmp_path,
        redis_url="rediss://cache.internal:6380/0",
        redis_password="pw",
        redis_tls_ca_file=Path("/etc/ca.pem"),
    )
    params = _params(secure.redis_url)
    assert params["ssl_cert_reqs"] == "required" and params["ssl_ca_certs"] == "/etc/ca.pem"
    assert redis.ConnectionPool.from_url(secure.redis_url).connection_class is redis.SSLConnection
    told = Settings(
        state_dir=tmp_path,
        redis_url="rediss://cache.internal:6380/0?ssl_cert_reqs=none",
        redis_password="pw",
    )
    assert _params(told.redis_url)["ssl_cert_reqs"] == "none"


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="redis://"):
        credentials.redis_url_with("http://localhost:6379", "pw", None)


def test_redact_and_without_secrets() -> None:
    text = "broker redis://:s3cret@localhost:6379/0 and rediss://user:pw@host:1/0?x=1"
    assert credentials.redact(text) == (
        "broker redis://:***@localhost:6379/0 and rediss://user:***@host:1/0?x=1"
    )
    assert credentials.without_secrets("rediss://u:pw@host:6380/1?ssl_cert_reqs=required") == (
        "rediss://host:6380/1"
    )


def test_flower_gets_a_generated_password_or_the_given_one(tmp_path: Path) -> None:
    generated = Settings(state_dir=tmp_path).flower_basic_auth()
    user, _, password = generated.partition(":")
    assert user == "fstore" and len(password) >= 40
    assert Settings(state_dir=tmp_path).flower_basic_auth() == generated
    given = Settings(state_dir=tmp_path, flower_user="ops", flower_password="a-long-password")
    assert given.flower_basic_auth() == "ops:a-long-password"


@pytest.mark.parametrize(
    ("user", "password", "named"),
    [
        ("a:b", None, "FSTORE_FLOWER_USER"),
        ("", None, "FSTORE_FLOWER_USER"),
        ("ops", "has,a-comma-in-it", "FSTORE_FLOWER_PASSWORD"),
        ("ops", "short", "FSTORE_FLOWER_PASSWORD"),
    ],
)
def test_flower_credentials_flower_would_misread_are_refused(
    tmp_path: Path, user: str, password: str | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named) as refused:
        Settings(state_dir=tmp_path, flower_user=user, flower_password=password)
    assert password is None or password not in str(refused.value)
