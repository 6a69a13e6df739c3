"""Domain errors -> gRPC status codes; internal text never reaches the client."""

from __future__ import annotations

import grpc
import pytest
import redis

from featurestore.errors import (
    InputRangeError,
    LimitError,
    MissingFeaturesError,
    ModelNotFoundError,
    QueryError,
    QueryTimeoutError,
    ServiceStartError,
    UnusableFeaturesError,
    ValidationError,
)
from grpc_server.status import DeadlineExceeded, status_for


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (
            ValidationError("entity_id must not be empty"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entity_id must not be empty",
        ),
        (
            LimitError("1001 entities in one call, over the limit of 1000"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1001 entities in one call, over the limit of 1000",
        ),
        (
            ModelNotFoundError("model 'credit' is not served"),
            grpc.StatusCode.NOT_FOUND,
            "model 'credit' is not served",
        ),
        (
            MissingFeaturesError("credit", {"e1": ["age", "dti"], "e2": ["dti"]}),
            grpc.StatusCode.FAILED_PRECONDITION,
            "model credit is missing features (e1: age, dti; e2: dti)",
        ),
        (
            InputRangeError("model m cannot take age=1e+300 of 'e1': outside ...", [(0, 1)]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model m cannot take age=1e+300 of 'e1': outside ...",
        ),
        (
            UnusableFeaturesError("model m cannot take age=1e+300 of 'e1': outside ..."),
            grpc.StatusCode.FAILED_PRECONDITION,
            "model m cannot take age=1e+300 of 'e1': outside ...",
        ),
        (
            QueryTimeoutError("the DuckDB service did not answer within 30.0s"),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "a feature read did not finish in time",
        ),
        (DeadlineExceeded(), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"),
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
