"""gRPC TLS and bearer token through real channels to a server built in-process on real Redis:
which calls are refused, with what text, and which stay open (health)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from featurestore.cli import serving as cli_serving
from featurestore.errors import ConfigError
from featurestore.services import ManagedService
from featurestore.settings import Settings
from grpc_server.auth import UNAUTHENTICATED_MESSAGE, TokenInterceptor, client_channel
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc
from tests.certificates import self_signed
from tests.grpc_server.inprocess import Running, running_server

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("certs")
    return {name: self_signed(folder, name) for name in ("server", "stranger")}


@pytest.fixture
def secure(settings: Settings, certs: dict[str, tuple[Path, Path]]) -> Settings:
    cert, key = certs["server"]
    return settings.model_copy(
        update={
            "grpc_tls_cert": cert,
            "grpc_tls_key": key,
            "grpc_auth_token": SecretStr(TOKEN),
        }
    )


@pytest.fixture
def server(secure: Settings, redis_service: ManagedService) -> Iterator[Running]:
    # running_server's own channel is built by client_channel: TLS and the right token.
    with running_server(secure) as running:
        yield running


def code_and_details(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def list_models(channel: grpc.Channel) -> tuple[grpc.StatusCode, str]:
    stub = pb_grpc.FeatureStoreStub(channel)
    return code_and_details(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10))


def unauthenticated() -> float:
    labels = {"program": "grpc", "kind": "unauthenticated"}
    return REGISTRY.get_sample_value("fstore_failures_total", labels) or 0.0


def test_tls_with_the_right_token_is_served(server: Running) -> None:
    assert list_models(server.channel) == (grpc.StatusCode.OK, "")


@pytest.mark.parametrize(
    "token", [None, "wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x", "s3cret"]
)
def test_a_missing_or_wrong_token_is_unauthenticated_and_told_nothing(
    server: Running, secure: Settings, token: str | None
) -> None:
    caller = secure.model_copy(
        update={"grpc_auth_token": None if token is None else SecretStr(token)}
    )
    before = unauthenticated()
    with client_channel(caller, f"localhost:{server.port}") as channel:
        code, details = list_models(channel)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    assert TOKEN not in details and "Bearer" not in details
    assert unauthenticated() == before + 1


def test_a_token_not_in_bearer_form_is_refused(server: Running, secure: Settings) -> None:
    root = secure.grpc_tls_cert
    assert root is not None
    channel = grpc.secure_channel(
        f"localhost:{server.port}", grpc.ssl_channel_credentials(root.read_bytes())
    )
    stub = pb_grpc.FeatureStoreStub(channel)
    for metadata in ([("authorization", TOKEN)], [("authorization", f"bearer {TOKEN}")]):
        code, _ = code_and_details(
            lambda m=metadata: stub.ListModels(pb.ListModelsRequest(), metadata=m, timeout=10)
        )
        assert code is grpc.StatusCode.UNAUTHENTICATED, metadata
    channel.close()


def test_health_answers_without_a_token(server: Running, secure: Settings) -> None:
    anonymous = secure.model_copy(update={"grpc_auth_token": None})
    with client_channel(anonymous, f"localhost:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # nothing synced yet


def _reflect(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return [s.name for s in replies[0].list_services_response.service]


def test_reflection_and_unknown_methods_need_the_token(server: Running, secure: Settings) -> None:
    assert "featurestore.v1.FeatureStore" in " ".join(_reflect(server.channel))
    anonymous = secure.model_copy(update={"grpc_auth_token": None})
    with client_channel(anonymous, f"localhost:{server.port}") as channel:
        code, details = code_and_details(lambda: _reflect(channel))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        unknown = channel.unary_unary("/featurestore.v1.FeatureStore/NoSuchMethod")
        # Not UNIMPLEMENTED: a caller without the token learns nothing of what exists.
        assert code_and_details(lambda: unknown(b"", timeout=10))[0] is (
            grpc.StatusCode.UNAUTHENTICATED
        )
    unknown = server.channel.unary_unary("/featurestore.v1.FeatureStore/NoSuchMethod")
    assert code_and_details(lambda: unknown(b"", timeout=10))[0] is grpc.StatusCode.UNIMPLEMENTED


def test_tls_is_required_and_the_certificate_checked(
    server: Running, secure: Settings, certs: dict[str, tuple[Path, Path]]
) -> None:
    with grpc.insecure_channel(f"localhost:{server.port}") as plain:
        assert list_models(plain)[0] is grpc.StatusCode.UNAVAILABLE
    stranger = secure.model_copy(update={"grpc_tls_root_cert": certs["stranger"][0]})
    with client_channel(stranger, f"localhost:{server.port}") as channel:
        assert list_models(channel)[0] is grpc.StatusCode.UNAVAILABLE


def test_the_cli_sends_the_token_over_tls(
    server: Running, secure: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = secure.model_copy(update={"grpc_port": server.port})
    reply = cli_serving._call(cli, "models", lambda s: s.ListModels(pb.ListModelsRequest()))
    assert reply is not None
    anonymous = cli.model_copy(update={"grpc_auth_token": None})
    assert (
        cli_serving._call(anonymous, "models", lambda s: s.ListModels(pb.ListModelsRequest()))
        is None
    )
    assert f"UNAUTHENTICATED: {UNAUTHENTICATED_MESSAGE}" in capsys.readouterr().err


def test_a_missing_certificate_file_is_named(settings: Settings, tmp_path: Path) -> None:
    missing = settings.model_copy(update={"grpc_tls_root_cert": tmp_path / "nowhere.pem"})
    with pytest.raises(ConfigError, match=r"FSTORE_GRPC_TLS_ROOT_CERT: cannot read .*nowhere\.pem"):
        client_channel(missing, "localhost:1")


@pytest.mark.parametrize(
    ("metadata", "allowed"),
    [
        ((("authorization", f"Bearer {TOKEN}"),), True),
        ((("authorization", f"Bearer {TOKEN}".encode()),), True),
        ((("x-other", "1"), ("authorization", f"Bearer {TOKEN}")), True),
        ((), False),
        (None, False),
        ((("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")), False),
        ((("authorization", f"Bearer {TOKEN} "),), False),
        ((("authorization", "Bearer "),), False),
    ],
)
def test_token_check(metadata: tuple[tuple[str, str | bytes], ...] | None, allowed: bool) -> None:
    assert TokenInterceptor(TOKEN).allowed(metadata) is allowed
