"""Security settings: Kafka's options pass through with secrets masked, gRPC TLS and token
checks, and the environment handed to child programs carries the real values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from featurestore.settings import Settings

SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "fstore",
    "sasl.password": "kafka-pass-7f3a",
}


def test_kafka_security_reaches_the_client_config_and_is_masked_in_repr(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_bootstrap="broker:9092", kafka_security=SASL)
    assert settings.kafka_client_config() == {"bootstrap.servers": "broker:9092", **SASL}
    assert isinstance(settings.kafka_security["sasl.password"], SecretStr)
    assert settings.kafka_security["sasl.username"] == "fstore"  # not a secret: shown
    assert "kafka-pass-7f3a" not in repr(settings)
    assert "kafka-pass-7f3a" not in str(settings.model_dump())


def test_child_programs_get_the_real_secrets_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        state_dir=tmp_path, kafka_security=SASL, grpc_auth_token="t0ken-of-twenty-chars"
    )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.kafka_client_config() == settings.kafka_client_config()
    assert again.grpc_auth_token is not None
    assert again.grpc_auth_token.get_secret_value() == "t0ken-of-twenty-chars"


def test_a_kafka_option_that_is_not_about_security_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"'bootstrap\.servers' is not a Kafka security"):
        Settings(state_dir=tmp_path, kafka_security={**SASL, "bootstrap.servers": "elsewhere"})


def test_a_refused_setting_does_not_echo_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(state_dir=tmp_path, kafka_security={**SASL, "linger.ms": "5"})
    assert "kafka-pass-7f3a" not in str(caught.value)
    with pytest.raises(ValidationError, match="at least 16 printable") as short:
        Settings(state_dir=tmp_path, grpc_auth_token="short secret")
    assert "short secret" not in str(short.value)


def test_a_tls_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FSTORE_GRPC_TLS_CERT and FSTORE_GRPC_TLS_KEY"):
        Settings(state_dir=tmp_path, grpc_tls_cert=tmp_path / "server.pem")
