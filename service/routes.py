"""HTTP routes. Thin: validate against ``Settings``, call ``SessionService``, shape the
response. All state lives in Redis, all inference in the engine."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from service.errors import ApiError, invalid
from service.health import embedded_status, redis_refuses_writes
from service.schemas import (
    ClickOut,
    ErrorOut,
    EventsIn,
    HealthOut,
    ModelRef,
    ModelsOut,
    ReadyOut,
    Recommendation,
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


public = APIRouter()
# Client routes and admin routes (service/security.py says who may call which).
api = APIRouter(dependencies=[Depends(require_client), Depends(require_json_body)],
                responses=ERRORS)
admin = APIRouter(dependencies=[Depends(require_admin), Depends(require_json_body)],
                  responses=ERRORS)


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


def _response(outcome: Outcome) -> RecommendationResponse:
    return RecommendationResponse(
        session_id=outcome.session_id, user_id=outcome.user_id, accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        recommendations=[Recommendation(item_id=item, score=score)
                         for item, score in outcome.recommendations],
        model=ModelRef(name=outcome.model_name, version=outcome.model_version),
        recommendation_id=uuid.uuid4().hex, source=outcome.source)


KQuery = Annotated[int | None, Query(description="list length, 1..max_k (default "
                                     "default_k)")]
ModelQuery = Annotated[str | None, Query(description="model name (default: the "
                                         "service's default model)")]
ExcludeSeenQuery = Annotated[bool, Query(description="drop items already clicked in "
                                         "this session")]


# ---- click path ----------------------------------------------------------------------
@api.post("/sessions/{session_id}/events", response_model=RecommendationResponse,
          tags=["sessions"], summary="Record 1..N events and get the next items")
async def post_events(request: Request, session_id: str, body: EventsIn, k: KQuery = None,
                      model: ModelQuery = None, exclude_seen: ExcludeSeenQuery = False
                      ) -> RecommendationResponse:
    settings = _settings(request)
    check_id(settings, session_id, "path.session_id")
    k = check_k(settings, k)
    check_model(settings, model)
    if len(body.events) > settings.max_events_per_request:
        raise invalid("body.events",
                      f"at most {settings.max_events_per_request} events per request")
    now = time.time()
    users: set[str] = set()
    records = []
    for position, event in enumerate(body.events):
        where = f"body.events[{position}]"
        check_item_id(settings, event.item_id, f"{where}.item_id")
        if event.user_id is not None:
            users.add(check_id(settings, event.user_id, f"{where}.user_id"))
        if event.event_id is not None:
            check_id(settings, event.event_id, f"{where}.event_id")
        records.append(EventRecord(item_id=event.item_id,
                                   timestamp=now if event.timestamp is None else event.timestamp,
                                   event_id=event.event_id))
    if len(users) > 1:
        raise invalid("body.events", "all events of one request must have the same user_id")
    outcome = await _service(request).record_events(
        session_id, records, user_id=next(iter(users), None), model=model, k=k,
        exclude_seen=exclude_seen)
    return _response(outcome)


@api.get("/recommend", response_model=RecommendationResponse, tags=["recommendations"],
         summary="Top-K for a session, a user (start of session) or nobody (popular)")
async def recommend(request: Request, session_id: str | None = None,
                    user_id: str | None = None, k: KQuery = None, model: ModelQuery = None,
                    exclude: Annotated[str | None, Query(
                        description="comma-separated item ids to leave out")] = None,
                    exclude_seen: ExcludeSeenQuery = False) -> RecommendationResponse:
    settings = _settings(request)
    if session_id is not None:
        check_id(settings, session_id, "query.session_id")
    if user_id is not None:
        check_id(settings, user_id, "query.user_id")
    k = check_k(settings, k)
    check_model(settings, model)
    excluded = [part for part in (exclude or "").split(",") if part]
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
@api.get("/models", response_model=ModelsOut, tags=["models"])
async def list_models(request: Request) -> ModelsOut:
    engine = _service(request).engine
    return ModelsOut(default=engine.default, models=engine.describe(),
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
