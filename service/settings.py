"""Service configuration, read from ``NEXTCLICK_*`` environment variables.

Nothing is created at import time: ``Settings()`` is built by the CLI or by the caller of
``create_app`` so tests can pass their own values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` as well as a JSON list for list-valued environment variables."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every tunable of the online service. Durations are seconds."""

    model_config = SettingsConfigDict(env_prefix="NEXTCLICK_", extra="ignore")

    # --- where things are ---------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss:// (TLS), unix:// or redis+cluster://; "
        "None starts an embedded redis-server under data_dir/redis.")
    artifacts_dir: Path = Path("artifacts")
    data_dir: Path = Path("var")
    default_model: str | None = None
    traffic_split: str | None = Field(
        default=None, description="share of traffic per model, e.g. 'hrnn-init=90,narm=10': "
        "sticky per user (or per session for anonymous clicks); a request's model= wins")
    providers: Annotated[list[str] | None, NoDecode] = None
    intra_op_threads: int | None = Field(default=None, ge=1)
    inference_threads: int = Field(default=2, ge=1, le=256,
                                   description="thread pool running ONNX inference (one "
                                   "batch per thread)")

    # --- session / user lifecycle ----------------------------------------------------
    session_idle_timeout: float = Field(default=1800.0, gt=0)
    session_ttl: int = Field(default=7 * 24 * 3600, gt=0)
    user_ttl: int = Field(default=180 * 24 * 3600, gt=0)
    max_session_clicks: int = Field(default=200, ge=1, le=100_000)
    max_user_history: int = Field(default=50, ge=1, le=10_000)
    max_closed_tracked: int = Field(default=1024, ge=1,
                                    description="closed sessions remembered per user "
                                    "for exactly-once folding")
    event_id_ttl: int = Field(default=24 * 3600, gt=0,
                              description="seconds an event id is remembered for dedup")
    max_event_ids: int = Field(default=128, ge=1, le=1_000_000,
                               description="newest event ids remembered per session (128 "
                               "keeps Redis' compact zset encoding)")
    event_log: bool = Field(default=True, description="append every accepted event to the "
                            "event log (Redis Streams), for `nextclick events export`")
    event_log_max_events: int = Field(default=1_000_000, ge=1,
                                      description="events kept in the log over all shards "
                                      "(about; export more often than it fills)")
    event_log_max_age: float = Field(default=14 * 24 * 3600.0, ge=0,
                                     description="seconds an event stays in the log "
                                     "(0: no age limit)")
    event_log_shards: int = Field(default=16, ge=1, le=16384,
                                  description="log shards on a single Redis server (on a "
                                  "cluster there is one per slot, so the log entry lands "
                                  "in the session's own slot)")
    served_lists_kept: int = Field(default=4, ge=1, le=100,
                                   description="lists answered per session remembered for "
                                   "the attribution of clicks (recommendation_id)")
    max_future_skew: float = Field(default=300.0, ge=0,
                                   description="seconds an event timestamp may lie ahead "
                                   "of the server clock (later ones are refused with 422)")
    sweep_interval: float = Field(default=60.0, gt=0,
                                  description="seconds between rounds of the idle-session "
                                  "sweeper (closes and folds sessions idle for "
                                  "session_idle_timeout)")
    sweep_shards: int = Field(default=16, ge=1, le=1024,
                              description="shards of the sweeper's index (each on its own "
                              "Redis slot); every process must use the same number")
    sweep_batch: int = Field(default=500, ge=1, description="sessions a sweeper round "
                             "closes per shard at most")

    # --- click path: micro-batching -----------------------------------------------------
    batch_max_size: int = Field(default=64, ge=1, le=4096,
                                description="clicks processed together at most (one Redis "
                                "round trip, one advance/score run per model version)")
    batch_max_wait: float = Field(default=0.0, ge=0, le=1.0,
                                  description="seconds an idle service waits to gather "
                                  "batch-mates for a click (0: start at once; under load "
                                  "batches form while the previous one runs)")
    batch_concurrency: int = Field(default=2, ge=1, le=64,
                                   description="batches processed at once per process (one "
                                   "can wait on Redis while another runs inference)")

    # --- request limits ---------------------------------------------------------------
    max_k: int = Field(default=100, ge=1, le=10_000)
    default_k: int = Field(default=20, ge=1)
    max_events_per_request: int = Field(default=10, ge=1, le=1000)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    id_max_length: int = Field(default=128, ge=1, le=1024)
    max_in_flight: int = Field(
        default=256, ge=1, le=100_000,
        description="requests one worker process handles at once; beyond it 503 + "
        "Retry-After (the default matches redis_max_connections: past it requests would "
        "only queue for a Redis connection)")
    rate_limit: str | None = Field(
        default=None,
        description="per API key (per client address when keys are off) across every "
        "process sharing the Redis, in the `limits` notation: '100/second', '6000/minute'; "
        "None: off")
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, le=1024 * 1024,
        description="largest request head (request line + headers); larger gets 431")
    request_read_timeout: float = Field(
        default=10.0, gt=0, le=600,
        description="seconds a client has to send a whole request (head and body) once it "
        "starts one, and to start its first; slower connections are closed")

    # --- access -------------------------------------------------------------------------
    api_keys: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="client keys (X-API-Key): events, recommendations, "
        "sessions, models, metrics; None: client routes need no key")
    admin_api_keys: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="admin keys: DELETE /users/{id} and /admin/*; also "
        "accepted wherever a client key is")
    allow_insecure: bool = Field(
        default=False, description="serve on a non-loopback address without client keys "
        "(a demo behind a firewall; never on a network others reach)")
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="Host header allow-list ('*' for any); None: the loopback "
        "names when bound to loopback, any otherwise")

    # --- redis client ---------------------------------------------------------------
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec", description="AOF fsync policy of the embedded redis-server")
    redis_socket_timeout: float = Field(default=2.0, gt=0)
    redis_health_check_interval: int = Field(default=15, ge=0)
    redis_max_connections: int = Field(default=256, ge=1)
    redis_maxmemory: str = Field(
        default="512mb", pattern=r"^[0-9]+(b|kb|mb|gb|k|m|g)?$",
        description="maxmemory of the embedded redis-server (noeviction: past it writes "
        "are refused with 503, nothing is silently evicted); '0' means no limit")
    embedded_redis: bool = Field(
        default=False, description="set by `nextclick serve` for its workers: redis_url is "
        "the embedded server it supervises (health and restarts read from its status file)")

    # --- server -------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)

    @field_validator("providers", "api_keys", "admin_api_keys", "allowed_hosts",
                     mode="before")
    @classmethod
    def _lists_from_env(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("traffic_split")
    @classmethod
    def _valid_split(cls, value: str | None) -> str | None:
        if value:
            from service.sessions import TrafficSplit

            TrafficSplit.parse(value)
        return value

    @field_validator("redis_url", "default_model", "traffic_split", "rate_limit",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate limit; write it like '100/second' "
                                 f"or '6000/minute'") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.session_ttl <= self.session_idle_timeout:
            raise ValueError(
                "session_ttl must be longer than session_idle_timeout, so an idle session "
                "still exists when its user returns and it can be folded into the user")
        if self.default_k > self.max_k:
            raise ValueError("default_k must not exceed max_k")
        # A key setting that is present but holds no key ("" or " , ") is a mistake (an
        # unset variable in a template, a stray comma), never a way to turn auth off.
        for name in ("api_keys", "admin_api_keys"):
            keys = getattr(self, name)
            if keys is not None and (not keys or any(not key.strip() for key in keys)):
                raise ValueError(f"NEXTCLICK_{name.upper()} is set but holds no key; "
                                 f"give at least one key, or unset it")
        if self.allowed_hosts is not None and not self.allowed_hosts:
            raise ValueError("NEXTCLICK_ALLOWED_HOSTS is set but empty; name the hosts "
                             "clients use, or '*' for any")
        return self
