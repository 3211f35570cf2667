"""Request and response bodies of the HTTP API (pydantic v2; FastAPI serialises responses
through pydantic's Rust core, which replaces a custom orjson response class).

Static limits here are hard caps against abuse; the configurable ones (id length and
charset, events per request, ``max_k``) are checked by the routes against ``Settings``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

HARD_ID_LIMIT = 1024


class EventIn(BaseModel):
    """One interaction. ``timestamp`` is seconds since the epoch (server time when absent)
    and drives idle detection, so replays and tests can use their own clock."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=HARD_ID_LIMIT, examples=["i0042"])
    user_id: str | None = Field(default=None, min_length=1, max_length=HARD_ID_LIMIT)
    event_id: str | None = Field(default=None, min_length=1, max_length=HARD_ID_LIMIT,
                                 description="idempotency key: a repeat is counted as a "
                                 "duplicate and not recorded again; re-used with another "
                                 "item, type or timestamp it is refused (409)")
    timestamp: float | None = Field(default=None, ge=0, le=1e11, allow_inf_nan=False)
    event_type: str = Field(default="click", pattern=r"^[A-Za-z0-9._:-]{1,32}$",
                            description="recorded like a click (the models see item "
                            "sequences)")
    recommendation_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="the recommendation_id of the list this item was clicked in, when it "
        "was: the click is attributed to that list (clicks on recommended items per model "
        "and position, in /metrics)")


class EventsIn(BaseModel):
    """Several events of one session, in order, at most ``max_events_per_request``;
    ``user_id`` once for all of them (or on each event, the same)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "u7", "events": [{"item_id": "i42", "event_id": "e1"},
                                     {"item_id": "i43"}]}]})

    user_id: str | None = Field(default=None, min_length=1, max_length=HARD_ID_LIMIT)
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class Recommendation(BaseModel):
    item_id: str
    score: float


class ModelRef(BaseModel):
    name: str
    version: str


class RecommendationResponse(BaseModel):
    session_id: str | None
    user_id: str | None
    accepted: int
    duplicates: int
    recommendations: list[Recommendation]
    model: ModelRef
    recommendation_id: str = Field(description="uuid4 hex of this list; send it back as "
                                   "the recommendation_id of an event clicked in it")
    source: str = Field(description="'session' (from the session's clicks), 'user' (a "
                        "personalised start of session from the user's history), 'start' "
                        "(the model's start-of-session list for a user it has no history "
                        "of) or 'popular' (the most clicked training items; scores relative "
                        "to the most clicked one, 1.0)")
    unknown_items: list[str] = Field(default_factory=list, description="item ids of this "
                                     "request's events that the model does not know (they "
                                     "are recorded, but do not move its state)")


class SessionClosed(BaseModel):
    session_id: str
    user_id: str | None
    status: str
    clicks: int


class ClickOut(BaseModel):
    item_id: str
    timestamp: float


class SessionOut(BaseModel):
    session_id: str
    user_id: str | None
    status: str
    started_at: float | None
    last_event_at: float | None
    clicks: list[ClickOut]


class ModelsOut(BaseModel):
    default: str
    models: list[dict[str, Any]]
    skipped: int = Field(description="bundles that failed to load at the last (re)load")


class ReloadOut(BaseModel):
    loaded: list[str]
    default: str


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    redis: bool
    models: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorDetail
