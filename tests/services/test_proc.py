"""Address parsing and loopback detection (no services needed)."""

from __future__ import annotations

import pytest

from featurestore.errors import ConfigError
from featurestore.services import _proc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:9092", ("localhost", 9092)),
        ("127.0.0.1:9093", ("127.0.0.1", 9093)),
        ("[::1]:9094", ("::1", 9094)),
        ("[::1]", ("::1", 9092)),
        ("::1", ("::1", 9092)),
        ("broker.example", ("broker.example", 9092)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert _proc.split_host_port(text, 9092) == expected


@pytest.mark.parametrize("text", ["", "[::1:9092", "localhost:port"])
def test_split_host_port_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError):
        _proc.split_host_port(text, 9092)


def test_format_host_port_brackets_ipv6() -> None:
    assert _proc.format_host_port("::1", 9092) == "[::1]:9092"
    assert _proc.format_host_port("127.0.0.1", 9092) == "127.0.0.1:9092"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "127.0.0.2"])
def test_loopback_hosts(host: str) -> None:
    assert _proc.is_loopback(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "192.0.2.1", "no-such-host.invalid"])
def test_non_loopback_hosts(host: str) -> None:
    assert not _proc.is_loopback(host)


def test_first_answering_none_when_nothing_listens() -> None:
    assert _proc.first_answering("localhost", 1) is None


def test_missing_program_names_itself_and_why() -> None:
    from featurestore.errors import ToolMissingError

    with pytest.raises(ToolMissingError, match="no-such-prog not found on PATH: because"):
        _proc.require_program("no-such-prog", "because")
    assert _proc.require_program("sh", "shell").endswith("/sh")
