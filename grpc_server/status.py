"""The one table mapping domain errors to gRPC status codes; clients never see internals."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
import redis

from featurestore.errors import (
    FeatureStoreError,
    MissingFeaturesError,
    ModelNotFoundError,
    QueryTimeoutError,
    ServiceError,
    UnusableFeaturesError,
    ValidationError,
)

log = logging.getLogger(__name__)


class DeadlineExceeded(Exception):  # noqa: N818 - named after the status code
    """The caller's deadline passed before the work started."""


# Most specific first: (error type, code, message for the client). None as the message
# means the error's own text, written for users: what was wrong with the request (a
# LimitError is a ValidationError), which model is not served, which features of which
# entities are missing. The others get a fixed text, since theirs may name hosts, paths
# or log lines. A read that timed out is DEADLINE_EXCEEDED rather than UNAVAILABLE: the
# read is given the client's remaining time when there is a deadline, and UNAVAILABLE
# tells a client to retry at once, which would only queue more reads behind a slow one.
# A call without the right bearer token never gets here: grpc_server.auth refuses it with
# UNAUTHENTICATED before any handler runs (no domain error is involved).
STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode, str | None], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT, None),
    # Its text names the model (and version) asked for, nothing else.
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND, None),
    (MissingFeaturesError, grpc.StatusCode.FAILED_PRECONDITION, None),
    # Stored values the model cannot take: not the caller's fault, the text names them.
    (UnusableFeaturesError, grpc.StatusCode.FAILED_PRECONDITION, None),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"),
    (QueryTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED, "a feature read did not finish in time"),
    (ServiceError, grpc.StatusCode.UNAVAILABLE, "a backing service is unavailable"),
    (redis.RedisError, grpc.StatusCode.UNAVAILABLE, "the online store is unavailable"),
    (FeatureStoreError, grpc.StatusCode.FAILED_PRECONDITION, "the request cannot be served"),
)

Servicer = TypeVar("Servicer")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


# The status text travels in the trailing metadata, which a gRPC client refuses past 16 KiB
# (a text naming a 100k-character model id reached the client as RESOURCE_EXHAUSTED
# "Stream removed"); a non-ASCII character takes up to 12 bytes there, percent-encoded.
MAX_DETAILS_CHARS = 1024


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The code and client-safe message for an exception raised by the serving logic."""
    for error_type, code, message in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code, _bounded(str(exc)) if message is None else message
    return grpc.StatusCode.INTERNAL, "internal error"


def _bounded(text: str) -> str:
    if len(text) <= MAX_DETAILS_CHARS:
        return text
    return f"{text[:MAX_DETAILS_CHARS]}... ({len(text) - MAX_DETAILS_CHARS} more characters)"


def check_deadline(context: grpc.ServicerContext) -> None:
    """Raise DeadlineExceeded if the caller's deadline has passed: a request that waited
    in the server's queue past it is not worth running, nobody reads the answer."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded


def remaining_s(context: grpc.ServicerContext, ceiling: float) -> float:
    """Seconds left before the client's deadline, at most `ceiling` (all of it without a
    deadline); DeadlineExceeded when none is left."""
    remaining = context.time_remaining()
    if remaining is None:
        return ceiling
    if remaining <= 0:
        raise DeadlineExceeded
    return min(ceiling, float(remaining))


def handle_errors(
    method: Callable[[Servicer, Req, grpc.ServicerContext], Resp],
) -> Callable[[Servicer, Req, grpc.ServicerContext], Resp]:
    """Turn exceptions of a servicer method into gRPC statuses, logged (counted by
    grpc_server.interceptor)."""

    @functools.wraps(method)
    def wrapper(self: Servicer, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            check_deadline(context)  # a call that waited for a thread past its deadline
            response = method(self, request, context)
        except Exception as exc:
            code, message = status_for(exc)
            log.warning(
                "grpc_error method=%s code=%s error=%s",
                method.__name__,
                code.name,
                type(exc).__name__,
                exc_info=code is grpc.StatusCode.INTERNAL,
            )
            context.abort(code, message)
        return response

    return wrapper
