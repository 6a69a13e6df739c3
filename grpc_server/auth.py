"""Who may call the gRPC server: an optional bearer token (checked by an interceptor on every
call but the health service's) and optional TLS, on both the server's and the clients' side.

Health stays open: Kubernetes' and KServe's gRPC probes send no credentials, and SERVING or
NOT_SERVING tells a caller nothing about features or models. Reflection needs the token,
since it lists every method and message of the API.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from featurestore import metrics
from featurestore.errors import ConfigError
from featurestore.settings import Settings

Handler = Any  # grpc.RpcMethodHandler (grpc has no type hints)

# The one text a refused call gets, whatever was wrong (missing, malformed or wrong token):
# telling them apart would help someone guessing.
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"
AUTHORIZATION = "authorization"
OPEN_PREFIXES = ("/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/",)


def _deny(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def _denying(handler: Handler | None) -> Handler:
    """A handler of the same kind as `handler` that refuses the call."""
    if handler is not None and handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_deny)
    if handler is not None and handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if handler is not None and handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_deny)
    # Unknown methods too: UNIMPLEMENTED would tell a caller without the token what exists.
    return grpc.unary_unary_rpc_method_handler(_deny)


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses with UNAUTHENTICATED every call outside OPEN_PREFIXES whose metadata does not
    hold exactly one "authorization: Bearer <token>" with the configured token.

    It must come first among the server's interceptors: the metrics interceptor caches one
    handler per method, so a refusal returned beneath it would be served to later callers.
    Its cost is a small fraction of a loopback call's (README, Benchmarks).
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def allowed(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> bool:
        """True when the metadata carries the right token, once."""
        values = [value for key, value in metadata or () if key == AUTHORIZATION]
        if len(values) != 1:
            return False
        given = values[0] if isinstance(values[0], bytes) else values[0].encode()
        # Constant time: how much of a guess matched must not show in the answer's timing.
        return hmac.compare_digest(given, self._expected)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The method's own handler when the call may go on, a refusing one otherwise."""
        method: str = handler_call_details.method
        if method.startswith(OPEN_PREFIXES) or self.allowed(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        metrics.FAILURES.labels("grpc", "unauthenticated").inc()
        return _denying(continuation(handler_call_details))


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from FSTORE_GRPC_TLS_CERT and _KEY; None when TLS is off."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    key = _read(settings.grpc_tls_key, "FSTORE_GRPC_TLS_KEY")
    cert = _read(settings.grpc_tls_cert, "FSTORE_GRPC_TLS_CERT")
    return grpc.ssl_server_credentials([(key, cert)])


def server_interceptors(settings: Settings) -> list[grpc.ServerInterceptor]:
    """The token check when a token is set (to go first), else nothing."""
    if settings.grpc_auth_token is None:
        return []
    return [TokenInterceptor(settings.grpc_auth_token.get_secret_value())]


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the authorization metadata to each call of a client channel."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """The call with the token added."""
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """The call with the token added."""
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        """The call with the token added."""
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        """The call with the token added."""
        return continuation(self._details(details), requests)


def client_channel(settings: Settings, target: str) -> grpc.Channel:
    """A channel to the stack's gRPC server at `target` as the settings say: TLS trusting
    FSTORE_GRPC_TLS_ROOT_CERT (by default the server's certificate) when TLS is on, and
    the bearer token on every call when one is set."""
    root = settings.grpc_tls_root_cert or settings.grpc_tls_cert
    if root is None:
        channel = grpc.insecure_channel(target)
    else:
        root_pem = _read(root, "FSTORE_GRPC_TLS_ROOT_CERT")
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_pem))
    if settings.grpc_auth_token is None:
        return channel
    return grpc.intercept_channel(
        channel, _BearerToken(settings.grpc_auth_token.get_secret_value())
    )
