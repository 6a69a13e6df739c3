"""Security of the local Kafka broker: SASL_PLAINTEXT listeners with one PLAIN user, taken
from the same FSTORE_KAFKA_SECURITY options every client of the stack is given."""

from __future__ import annotations

import re

from featurestore.errors import ConfigError
from featurestore.settings import Settings

_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
# Characters a JAAS quoted value would need escaped; refused rather than escaped.
_JAAS_UNSAFE = re.compile(r'["\\;\s]')


def local_sasl_user(settings: Settings) -> tuple[str, str] | None:
    """The user of the SASL_PLAINTEXT listeners of the broker this project starts: None when
    FSTORE_KAFKA_SECURITY asks for plaintext; refused when it asks for what that broker
    does not speak (SSL, or a mechanism other than PLAIN)."""
    config = {key: str(value) for key, value in settings.kafka_client_config().items()}
    protocol = config.get("security.protocol", "plaintext").upper()
    if protocol == "PLAINTEXT":
        return None
    mechanism = config.get("sasl.mechanism", config.get("sasl.mechanisms", "GSSAPI")).upper()
    user, password = config.get("sasl.username", ""), config.get("sasl.password", "")
    if protocol != "SASL_PLAINTEXT" or mechanism != "PLAIN":
        raise ConfigError(
            f"FSTORE_KAFKA_SECURITY asks for {protocol} with mechanism {mechanism}: the local "
            "broker this project starts speaks PLAINTEXT, or SASL_PLAINTEXT with sasl.mechanism "
            "PLAIN; point FSTORE_KAFKA_BOOTSTRAP at a broker of your own for anything else"
        )
    if not user or not password or _JAAS_UNSAFE.search(user + password):
        raise ConfigError(
            "FSTORE_KAFKA_SECURITY: the local SASL broker needs sasl.username and sasl.password, "
            "without quotes, backslashes, semicolons or spaces"
        )
    return user, password


def security_props(settings: Settings, names: list[str]) -> dict[str, str]:
    """Listener protocols and, for a SASL broker, its PLAIN login on every listener
    (the controller's too: Kafka 4 takes admin requests there, KIP-919)."""
    sasl = local_sasl_user(settings)
    if sasl is None:
        return {"listener.security.protocol.map": ",".join(f"{n}:PLAINTEXT" for n in names)}
    user, password = sasl
    # The broker logs in as this user to itself (controller channel) and accepts only it.
    jaas = (
        f'{_PLAIN_LOGIN} required username="{user}" password="{password}" user_{user}="{password}";'
    )
    props = {
        "listener.security.protocol.map": ",".join(f"{n}:SASL_PLAINTEXT" for n in names),
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
    }
    props.update({f"listener.name.{n.lower()}.plain.sasl.jaas.config": jaas for n in names})
    return props
