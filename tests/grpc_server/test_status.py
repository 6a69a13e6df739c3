"""Domain errors -> gRPC status codes; internal text never reaches the client."""

from __future__ import annotations

import grpc
import pytest
import redis

from featurestore.errors import QueryError, ServiceStartError, ValidationError
from grpc_server.status import status_for


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (
            ValidationError("entity_id must not be empty"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entity_id must not be empty",
        ),
        (
            ServiceStartError("kafka did not start; see /srv/state/logs/kafka.log"),
            grpc.StatusCode.UNAVAILABLE,
            "a backing service is unavailable",
        ),
        (
            redis.ConnectionError("Error 111 connecting to 10.0.0.5:6379"),
            grpc.StatusCode.UNAVAILABLE,
            "the online store is unavailable",
        ),
        (
            QueryError("Catalog Error: secret_table"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "the request cannot be served",
        ),
        (KeyError("internal detail"), grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
def test_status_for(exc: Exception, code: grpc.StatusCode, message: str) -> None:
    assert status_for(exc) == (code, message)
