"""Request and response bodies of the HTTP API (pydantic v2; FastAPI serialises responses
through pydantic's Rust core, which replaces a custom orjson response class).

Static limits here are hard caps against abuse; the configurable ones (id length and
charset, events per request, ``max_k``) are checked by the routes against ``Settings``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

HARD_ID_LIMIT = 1024


class EventIn(BaseModel):
    """One interaction. ``timestamp`` is seconds since the epoch (server time when absent)
    and drives idle detection, so replays and tests can use their own clock."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=HARD_ID_LIMIT, examples=["214536502"])
    user_id: str | None = Field(default=None, min_length=1, max_length=HARD_ID_LIMIT)
    event_id: str | None = Field(default=None, min_length=1, max_length=HARD_ID_LIMIT,
                                 description="idempotency key: a repeat is counted as a "
                                 "duplicate and not recorded again")
    timestamp: float | None = Field(default=None, ge=0, le=1e11, allow_inf_nan=False)
    event_type: str = Field(default="click", pattern=r"^[A-Za-z0-9._:-]{1,32}$",
                            description="recorded like a click (the models see item "
                            "sequences)")


class EventsIn(BaseModel):
    """Either one event object, or ``{"events": [...]}`` with 1..max_events_per_request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_id": "i42", "user_id": "u7"},
        {"events": [{"item_id": "i42", "event_id": "e1"}, {"item_id": "i43"}]}]})

    events: list[EventIn] = Field(min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _single_event(cls, data: Any) -> Any:
        if isinstance(data, dict) and "events" not in data:
            return {"events": [data]}
        return data


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
    recommendation_id: str = Field(description="uuid4 hex; send it back with the next "
                                   "click to attribute it to this list")
    source: str = Field(description="'session', 'user' (personalised start of session) "
                        "or 'popular'")


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
