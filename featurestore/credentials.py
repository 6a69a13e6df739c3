"""Secrets of the local stack (generated once into the state folder) and the Redis URL that
carries them: the one place every program's Redis clients and Celery get their URL from."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from featurestore.errors import ConfigError

# Readable by the owner only: the folder and each file in it.
_DIR_MODE = 0o700
_FILE_MODE = 0o600
# File names of the generated secrets.
REDIS_PASSWORD = "redis-password"  # noqa: S105 - a file name
FLOWER_PASSWORD = "flower-password"  # noqa: S105 - a file name
# librdkafka's security options: the only keys FSTORE_KAFKA_SECURITY takes.
_KAFKA_SECURITY_KEY = re.compile(
    r"security\.protocol|sasl\..+|ssl\..+|ssl_engine.*|enable\.ssl\..+"
)
# Values of these keys are held as SecretStr: masked in repr, logs and `fstore status`.
_KAFKA_SECRET_KEY = re.compile(r"password|secret|\.pem$|oauthbearer\.config|token")
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)


def secrets_dir(state_dir: Path) -> Path:
    """Folder of the generated secrets, readable by the owner only."""
    return state_dir / "secrets"


def local_secret(state_dir: Path, name: str) -> str:
    """The secret `name` of this state folder, generated on first use (URL-safe, 256 bits).

    Several programs may ask at once: the file appears whole (link of a finished temporary
    file), so every caller reads the same value.
    """
    folder = secrets_dir(state_dir)
    path = folder / name
    try:
        folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        if not path.exists():
            temporary = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another program made it first: use theirs
            finally:
                temporary.unlink()
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read or create the secret {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"the secret file {path} is empty: delete it to generate a new one")
    return value


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback addresses (a Redis this project may start)."""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_password(url: str) -> str | None:
    """The password a redis:// or rediss:// URL carries, if any."""
    password = urlsplit(url).password
    return None if password is None else unquote(password)


def redis_url_with(url: str, password: str | None, ca_file: Path | None) -> str:
    """The URL with the password in it and, for rediss://, certificate checks on by default.

    Celery's backend refuses a rediss:// URL without ssl_cert_reqs; `required` is the safe
    one, and redis-py, kombu and Celery all read it (and ssl_ca_certs) from the query.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"the Redis URL must start with redis:// or rediss://, not {parts.scheme!r}"
        )
    netloc = parts.netloc
    if password and parts.password is None:
        host = netloc.rpartition("@")[2]
        user = quote(parts.username or "", safe="")
        netloc = f"{user}:{quote(password, safe='')}@{host}"
    query = parts.query
    if parts.scheme == "rediss":
        params = dict(parse_qsl(query))
        params.setdefault("ssl_cert_reqs", "required")
        if ca_file is not None:
            params.setdefault("ssl_ca_certs", str(ca_file))
        query = urlencode(params)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def without_secrets(url: str) -> str:
    """The URL's scheme, host, port and path only: no user, password or query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def redact(text: str) -> str:
    """The text with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def kafka_security_options(value: dict[str, str | SecretStr]) -> dict[str, str | SecretStr]:
    """librdkafka security options only (ValueError naming any other key); the values of
    secret keys wrapped in SecretStr."""
    for key in value:
        if not _KAFKA_SECURITY_KEY.fullmatch(key):
            raise ValueError(
                f"{key!r} is not a Kafka security option (FSTORE_KAFKA_SECURITY takes "
                "security.protocol, sasl.*, ssl.* and enable.ssl.*)"
            )
    return {
        key: SecretStr(item) if isinstance(item, str) and _KAFKA_SECRET_KEY.search(key) else item
        for key, item in value.items()
    }


def check_grpc_token(token: str) -> None:
    """ValueError unless the token is at least 16 printable ASCII characters, no spaces."""
    if not re.fullmatch(r"[\x21-\x7e]{16,}", token):
        raise ValueError(
            "FSTORE_GRPC_AUTH_TOKEN must be at least 16 printable ASCII characters without spaces"
        )


def check_flower_auth(user: str, password: str | None) -> None:
    """ValueError unless Flower can read "user:password" back (it splits at ',' and ':')."""
    if not user or ":" in user or "," in user + (password or ""):
        raise ValueError(
            "FSTORE_FLOWER_USER must be non-empty without ':' or ',', and "
            "FSTORE_FLOWER_PASSWORD without ','"
        )
    if password is not None and len(password) < 12:
        raise ValueError("FSTORE_FLOWER_PASSWORD must be at least 12 characters")
