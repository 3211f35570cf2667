"""HTTP routes. Thin: validate against ``Settings``, call ``SessionService``, shape the
response. All state lives in Redis, all inference in the engine."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from service.errors import ApiError, invalid
from service.experiments import summarize_online
from service.health import embedded_status, redis_refuses_writes
from service.schemas import (
    ClickOut,
    ErrorOut,
    EventIn,
    EventsIn,
    HealthOut,
    ModelsOut,
    ReadyOut,
    RecommendationResponse,
    ReloadOut,
    SessionClosed,
    SessionOut,
)
from service.security import require_admin, require_client, require_json_body
from service.sessions import Outcome, SessionService
from service.settings import Settings
from service.store import EventRecord

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]+")

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text} for status, text in (
        (400, "malformed JSON"), (401, "missing or invalid X-API-Key"),
        (403, "the key lacks the role, or a cross-site request"),
        (404, "unknown session or model"), (409, "conflict"), (413, "body too large"),
        (415, "body not sent as application/json"), (422, "invalid input"),
        (429, "rate limited (see Retry-After)"),
        (503, "Redis unavailable or refusing, or the server at its request limit (see "
              "Retry-After)"))}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


#: Query parameters that may be repeated (``exclude=a&exclude=b``); any other one given
#: twice is refused instead of silently keeping the last value.
REPEATABLE_QUERY = frozenset({"exclude"})


async def reject_repeated_query(request: Request) -> None:
    params = request.query_params
    if len(params.multi_items()) == len(params):  # the common case: nothing repeated
        return
    for name in params:
        if name not in REPEATABLE_QUERY and len(params.getlist(name)) > 1:
            raise invalid(f"query.{name}", "given more than once")


public = APIRouter()
# Client routes and admin routes (service/security.py says who may call which).
api = APIRouter(dependencies=[Depends(require_client), Depends(require_json_body),
                              Depends(reject_repeated_query)], responses=ERRORS)
admin = APIRouter(dependencies=[Depends(require_admin), Depends(require_json_body),
                                Depends(reject_repeated_query)], responses=ERRORS)


# ---- validation helpers ---------------------------------------------------------------
def check_id(settings: Settings, value: str, field: str) -> str:
    if len(value) > settings.id_max_length:
        raise invalid(field, f"longer than {settings.id_max_length} characters")
    if not ID_PATTERN.fullmatch(value):
        raise invalid(field, "use only letters, digits and . _ : @ -")
    return value


def check_item_id(settings: Settings, value: str, field: str) -> str:
    if len(value) > settings.id_max_length:
        raise invalid(field, f"longer than {settings.id_max_length} characters")
    if not value.isprintable() or value != value.strip():
        raise invalid(field, "must be printable, without leading or trailing spaces")
    return value


def check_k(settings: Settings, k: int | None) -> int:
    if k is None:
        return settings.default_k
    if not 1 <= k <= settings.max_k:
        raise invalid("query.k", f"must be between 1 and {settings.max_k}")
    return k


def check_model(settings: Settings, model: str | None) -> str | None:
    if model is not None:
        check_id(settings, model, "query.model")
    return model


def _response(outcome: Outcome) -> Response:
    """The answer as JSON bytes built directly: the shape is ``RecommendationResponse``
    (documented in the OpenAPI schema), without building pydantic objects only to
    serialise them."""
    return Response(orjson.dumps({
        "session_id": outcome.session_id, "user_id": outcome.user_id,
        "accepted": outcome.accepted, "duplicates": outcome.duplicates,
        "recommendations": [{"item_id": item, "score": score}
                            for item, score in outcome.recommendations],
        "model": {"name": outcome.model_name, "version": outcome.model_version},
        "recommendation_id": outcome.recommendation_id, "source": outcome.source,
        "unknown_items": outcome.unknown_items}), media_type="application/json")


_EVENTS = TypeAdapter(EventsIn)
_EVENT = TypeAdapter(EventIn)
_JSON_TYPES = ("application/json", "application/merge-patch+json")


def _events_body_schema() -> dict[str, Any]:
    """The request body as OpenAPI documents it: one event, or several with the same user
    (the JSON schema with its definitions inlined, so it stands alone in the document)."""
    schema = TypeAdapter(EventIn | EventsIn).json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"required": True, "content": {"application/json": {"schema": inline(schema)}}}


def _parse_events(body: bytes, content_type: str) -> tuple[list[EventIn], str | None, str]:
    """The events of a request body and its batch-level user id, validated by pydantic's
    own JSON parser in one pass; errors point at the fields the client sent (``body.item_id``
    for one event, ``body.events[1].item_id`` in a batch). Returns the events, the user id
    given once for the batch, and the location prefix of the events."""
    if content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       "the body must be JSON sent with the header Content-Type: "
                       f"application/json (got {content_type or 'no Content-Type'})")
    try:
        batch = _EVENTS.validate_json(body)
        return batch.events, batch.user_id, "body.events"
    except ValidationError as batch_error:
        if b'"events"' in body:
            raise RequestValidationError(_body_errors(batch_error)) from None
    try:
        return [_EVENT.validate_json(body)], None, "body"
    except ValidationError as event_error:
        raise RequestValidationError(_body_errors(event_error)) from None


def _body_errors(error: ValidationError) -> list[dict[str, Any]]:
    return [{**detail, "loc": ("body", *detail["loc"])}
            for detail in error.errors(include_url=False)]


KQuery = Annotated[int | None, Query(description="list length, 1..max_k (default "
                                     "default_k)")]
ModelQuery = Annotated[str | None, Query(description="model name (default: the "
                                         "service's default model)")]
ExcludeSeenQuery = Annotated[bool, Query(description="drop items already clicked in "
                                         "this session")]


# ---- click path ----------------------------------------------------------------------
@api.post("/sessions/{session_id}/events", response_model=RecommendationResponse,
          tags=["sessions"], summary="Record 1..N events and get the next items",
          openapi_extra={"requestBody": _events_body_schema()})
async def post_events(request: Request, session_id: str, k: KQuery = None,
                      model: ModelQuery = None, exclude_seen: ExcludeSeenQuery = False
                      ) -> Response:
    settings = _settings(request)
    check_id(settings, session_id, "path.session_id")
    k = check_k(settings, k)
    check_model(settings, model)
    events, batch_user, where_events = _parse_events(
        await request.body(), request.headers.get("content-type", ""))
    if len(events) > settings.max_events_per_request:
        raise invalid(where_events,
                      f"at most {settings.max_events_per_request} events per request")
    users: set[str] = set()
    if batch_user is not None:
        users.add(check_id(settings, batch_user, "body.user_id"))
    now = time.time()
    records = []
    for position, event in enumerate(events):
        where = where_events if where_events == "body" else f"{where_events}[{position}]"
        check_item_id(settings, event.item_id, f"{where}.item_id")
        if event.user_id is not None:
            users.add(check_id(settings, event.user_id, f"{where}.user_id"))
        if event.event_id is not None:
            check_id(settings, event.event_id, f"{where}.event_id")
        if event.recommendation_id is not None:
            check_id(settings, event.recommendation_id, f"{where}.recommendation_id")
        if event.timestamp is not None and event.timestamp > now + settings.max_future_skew:
            # A far-future timestamp would hold the session open against idle rollover.
            raise invalid(f"{where}.timestamp", f"more than {settings.max_future_skew:g} s "
                          "ahead of the server clock")
        records.append(EventRecord(
            item_id=event.item_id, timestamp=now if event.timestamp is None else event.timestamp,
            event_id=event.event_id, recommendation_id=event.recommendation_id,
            event_type=event.event_type,
            payload=f"{event.item_id}\t{event.event_type}\t"
                    f"{'' if event.timestamp is None else repr(event.timestamp)}"))
    if len(users) > 1:
        raise invalid("body.user_id" if batch_user is not None else where_events,
                      "all events of one request must have the same user_id")
    outcome = await _service(request).record_events(
        session_id, records, user_id=next(iter(users), None), model=model, k=k,
        exclude_seen=exclude_seen)
    return _response(outcome)


@api.get("/recommend", response_model=RecommendationResponse, tags=["recommendations"],
         summary="Top-K for a session, a user (start of session) or nobody (popular)")
async def recommend(request: Request, session_id: str | None = None,
                    user_id: str | None = None, k: KQuery = None, model: ModelQuery = None,
                    exclude: Annotated[list[str] | None, Query(
                        description="item ids to leave out: repeat the parameter or "
                        "separate ids with commas")] = None,
                    exclude_seen: ExcludeSeenQuery = False) -> Response:
    settings = _settings(request)
    if session_id is not None:
        check_id(settings, session_id, "query.session_id")
    if user_id is not None:
        check_id(settings, user_id, "query.user_id")
    k = check_k(settings, k)
    check_model(settings, model)
    excluded = [part for value in exclude or () for part in value.split(",") if part]
    if len(excluded) > settings.max_k * 10:
        raise invalid("query.exclude", f"at most {settings.max_k * 10} items")
    for item in excluded:
        check_item_id(settings, item, "query.exclude")
    outcome = await _service(request).recommend(
        session_id=session_id, user_id=user_id, model=model, k=k, exclude_ids=excluded,
        exclude_seen=exclude_seen)
    return _response(outcome)


@api.post("/sessions/{session_id}/end", response_model=SessionClosed, tags=["sessions"],
          summary="Close a session (its user is updated exactly once)")
async def end_session(request: Request, session_id: str) -> SessionClosed:
    check_id(_settings(request), session_id, "path.session_id")
    sealed = await _service(request).end_session(session_id)
    return SessionClosed(session_id=session_id, user_id=sealed.user_id, status="closed",
                         clicks=sealed.total)


@api.get("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"],
         summary="A session's clicks in click order")
async def get_session(request: Request, session_id: str) -> SessionOut:
    check_id(_settings(request), session_id, "path.session_id")
    record = await _service(request).get_session(session_id)
    return SessionOut(session_id=session_id, user_id=record.user_id, status=record.status,
                      started_at=record.started_at, last_event_at=record.last_event_at,
                      clicks=[ClickOut(item_id=c.item_id, timestamp=c.timestamp)
                              for c in record.clicks])


@admin.delete("/users/{user_id}", status_code=204, tags=["users"],
            summary="Erase a user's state, history and known sessions")
async def delete_user(request: Request, user_id: str) -> Response:
    check_id(_settings(request), user_id, "path.user_id")
    await _service(request).delete_user(user_id)
    return Response(status_code=204)


# ---- models and operations ---------------------------------------------------------------
@api.get("/models", response_model=ModelsOut, tags=["models"],
         summary="The models being served: name, version, default, headline accuracy")
async def list_models(request: Request, details: Annotated[bool, Query(
        description="also each model's state tensors, graphs and every recorded metric")]
        = False) -> ModelsOut:
    engine = _service(request).engine
    return ModelsOut(default=engine.default, models=engine.describe(details),
                     skipped=len(engine.errors))


@admin.post("/admin/reload", response_model=ReloadOut, tags=["models"],
          summary="Load the newest bundles; on failure the current ones keep serving")
async def reload_models(request: Request) -> ReloadOut:
    from bundle import BundleError

    engine = _service(request).engine
    try:
        loaded = await asyncio.to_thread(engine.reload)
    except BundleError as exc:
        log.error("model reload failed: %s", exc)
        raise ApiError(409, "reload_failed", "no model bundle could be loaded; the previous "
                       "models keep serving (details in the server log)") from None
    return ReloadOut(loaded=loaded, default=engine.default)


@admin.get("/admin/experiments", tags=["models"],
         summary="Online hit rate and MRR per model version, from the attributed clicks")
async def experiments(request: Request) -> dict[str, Any]:
    """Per model version, over every process and replica (counters kept in Redis): the lists
    answered, the clicks that named one of them (``recommendation_id``), the hit rate (the
    clicked item was in the list) and the MRR of the clicked position (0 when it was not),
    with 95% confidence intervals (Wilson for the hit rate, normal for the MRR)."""
    counts = await _service(request).store.experiment_counts()
    split = _service(request).split
    return {"traffic_split": None if split is None else dict(zip(split.models, split.weights,
                                                                 strict=True)),
            "models": {model: summarize_online(values)
                       for model, values in sorted(counts.items())}}


@api.get("/metrics", tags=["operations"], response_class=Response,
         responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    engine = _service(request).engine
    text = request.app.state.metrics.render({
        "nextclick_models_loaded": ("Model bundles being served.", float(len(engine.models))),
        "nextclick_uptime_seconds": ("Seconds since this process started.",
                                     time.time() - request.app.state.metrics.started)})
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@public.get("/healthz", response_model=HealthOut, tags=["operations"],
            responses={503: {"model": ErrorOut}},
            summary="The process is alive (and its embedded Redis, when it has one)")
async def healthz(request: Request) -> HealthOut:
    redis_dir = request.app.state.embedded_redis_dir
    status = embedded_status(redis_dir)
    if redis_dir is not None and (status is None or not status.running):
        raise ApiError(503, "embedded_redis_down", "the embedded Redis is down; its "
                       "supervisor is restarting it", {"restarts": status.restarts
                                                       if status else 0},
                       headers={"Retry-After": "1"})
    return HealthOut(status="ok")


@public.get("/readyz", response_model=ReadyOut, tags=["operations"],
            responses={503: {"model": ErrorOut}},
            summary="Redis accepts writes and at least one model is loaded")
async def readyz(request: Request) -> ReadyOut:
    service = _service(request)
    # A write, not a PING: a full or read-only Redis still answers PING (service/health.py).
    redis_ok = await redis_refuses_writes(service.store.client) is None
    n_models = len(service.engine.models)
    if not redis_ok or n_models == 0:
        raise ApiError(503, "not_ready", "not ready", {"redis": redis_ok, "models": n_models},
                       headers={"Retry-After": "1"})
    return ReadyOut(status="ready", redis=True, models=n_models)
