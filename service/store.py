"""Session and user state in Redis.

Key layout (hash tags keep one session's keys, and one user's keys, in one cluster slot so
every multi-key operation is a single Lua script on a single slot)::

    nc:{s:<sid>}:meta       hash  user_id gen status started_at last_event_at total closed_at
                                  folded (1 once a closed generation is folded into its user)
    nc:{s:<sid>}:clicks     list  "<timestamp>\\t<item_id>", newest last, bounded
    nc:{s:<sid>}:state      hash  <model@version> -> state blob, <model@version>#n -> clicks
                                  of the generation's ``total`` folded into that blob
    nc:{s:<sid>}:events     zset  event id -> time accepted: the idempotency record of the
                                  session's events (ids older than ``event_id_ttl`` and all
                                  but the newest ``max_event_ids`` are forgotten)
    nc:{u:<uid>}:meta       hash  open_session last_event_at sessions_total
    nc:{u:<uid>}:history    list  JSON item-id lists of past sessions, newest last, bounded
    nc:{u:<uid>}:closed     zset  "<sid>#<gen>" -> close time (exactly-once folding)
    nc:{u:<uid>}:state      hash  <model@version> -> user state blob, ...#n -> sessions folded

The click list and the user's session history are the source of truth. Model states are
caches derivable from them and are written with a compare-and-set on the folded count, so
concurrent requests never lose a click or overwrite a newer state, and a newly deployed
model version catches up lazily from the lists. This module only moves data; the click
path that combines it with the engine lives in ``service.sessions``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from service.settings import Settings

log = logging.getLogger(__name__)

#: Errors that mean "Redis is unreachable right now" (the API answers 503 + Retry-After).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)

RedisClient = aioredis.Redis | RedisCluster


# ---- keys ----------------------------------------------------------------------------
def session_key(session_id: str, part: str) -> str:
    return f"nc:{{s:{session_id}}}:{part}"


def user_key(user_id: str, part: str) -> str:
    return f"nc:{{u:{user_id}}}:{part}"


def session_keys(session_id: str) -> list[str]:
    return [session_key(session_id, part) for part in ("meta", "clicks", "state", "events")]


def user_keys(user_id: str) -> list[str]:
    return [user_key(user_id, part) for part in ("meta", "history", "closed", "state")]


# ---- values ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Click:
    item_id: str
    timestamp: float


@dataclass(frozen=True)
class EventRecord:
    """One event as the store records it (the timestamp is already filled in)."""

    item_id: str
    timestamp: float
    event_id: str | None = None


@dataclass
class IngestResult:
    status: str  # "ok" | "rollover" | "conflict" | "unfolded" (see ingest.lua)
    gen: int
    user_id: str | None
    accepted: int = 0
    duplicates: int = 0
    total: int = 0
    started_at: float | None = None
    last_event_at: float | None = None
    state_blob: bytes | None = None
    state_folded: int = 0
    unfolded: list[Click] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    new_generation: bool = False


@dataclass
class SessionView:
    """A session's cached model state and the clicks not folded into it."""

    gen: int
    status: str
    user_id: str | None
    total: int
    state_blob: bytes | None
    state_folded: int
    unfolded: list[Click]
    clicks: list[Click]


@dataclass
class UserView:
    """A user's cached model state and the past sessions not folded into it."""

    previous_open: str | None
    sessions_total: int
    state_blob: bytes | None
    state_folded: int
    unfolded_history: list[list[str]]
    approximate: bool


@dataclass
class SealedSession:
    gen: int
    was_open: bool
    user_id: str | None
    started_at: float | None
    last_event_at: float | None
    total: int
    clicks: list[Click]


@dataclass
class SessionRecord:
    session_id: str
    user_id: str | None
    status: str
    gen: int
    started_at: float | None
    last_event_at: float | None
    total: int
    clicks: list[Click]


# ---- decoding helpers ------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _opt_text(value: Any) -> str | None:
    text = _text(value)
    return text or None


def _opt_float(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _clicks(values: Any) -> list[Click]:
    clicks = []
    for raw in values or ():
        timestamp, _, item_id = _text(raw).partition("\t")
        clicks.append(Click(item_id=item_id, timestamp=float(timestamp)))
    return clicks


def format_timestamp(value: float) -> str:
    """Exact, Lua-parsable text of a timestamp (``repr`` round-trips a float)."""
    return repr(float(value))


# ---- scripts ---------------------------------------------------------------------------
def _lua_source(name: str) -> str:
    """A script's text with each ``--#include NAME`` line replaced by ``lua/NAME.lua``
    (Redis scripts cannot load each other; shared helpers are spliced in)."""
    text = resources.files("service").joinpath("lua", f"{name}.lua").read_text(
        encoding="utf-8")
    return "".join(_lua_source(line.removeprefix("--#include").strip()) + "\n"
                   if line.startswith("--#include") else line
                   for line in text.splitlines(keepends=True))


class Script:
    """A Lua script addressed by its SHA1; loaded lazily when the server lacks it (first
    use, or after a Redis restart emptied the script cache)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _lua_source(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()


@dataclass
class Call:
    script: Script
    keys: list[str]
    args: list[Any]


def is_cluster_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        return True
    flags = parse_qs(parts.query).get("cluster", [])
    return any(flag.lower() in ("1", "true", "yes") for flag in flags)


def connect(url: str, settings: Settings) -> RedisClient:
    """A client with short socket timeouts, periodic health checks and one quick retry on a
    dropped connection, so the service recovers by itself after Redis restarts.

    The retry can re-send a command whose reply was lost; events that carry an
    ``event_id`` stay exactly-once regardless (the idempotency key)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "decode_responses": False,
    }
    if is_cluster_url(url):
        parts = urlsplit(url)
        scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("cluster="))
        plain = parts._replace(scheme=scheme, query=query).geturl()
        return RedisCluster.from_url(plain, **options)
    return aioredis.Redis.from_url(
        url, health_check_interval=settings.redis_health_check_interval,
        max_connections=settings.redis_max_connections, **options)


class StateStore:
    """All Redis access of the service. Every method is one round trip, except where a
    docstring says otherwise."""

    SCRIPT_NAMES = ("ingest", "peek_session", "touch_user", "seal_session",
                    "close_user_session", "save_session_state", "save_user_state",
                    "delete_session_if_owned", "mark_folded")

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.cluster = isinstance(client, RedisCluster)
        self.scripts = {name: Script(name) for name in self.SCRIPT_NAMES}
        #: Wall clock that dates accepted event ids (for the ``event_id_ttl`` window).
        self.clock: Callable[[], float] = time.time

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> StateStore:
        return cls(connect(url, settings), settings)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # ---- script plumbing ---------------------------------------------------------------
    async def _eval(self, call: Call) -> Any:
        client = cast(Any, self.client)
        try:
            return await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            await client.script_load(call.script.source)
            return await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    async def _eval_many(self, calls: Sequence[Call]) -> list[Any]:
        """Run scripts on (possibly) different slots in one round trip: a non-transactional
        pipeline on a single server, concurrent calls on a cluster. A script the server
        does not know yet is loaded and re-run individually (only that one failed, so
        nothing runs twice)."""
        if len(calls) == 1:
            return [await self._eval(calls[0])]
        if self.cluster:
            return list(await asyncio.gather(*(self._eval(call) for call in calls)))
        pipe = cast(Any, self.client).pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):
                results[index] = await self._eval(calls[index])
            elif isinstance(result, Exception):
                raise result
        return results

    # ---- click path --------------------------------------------------------------------
    def _ingest_call(self, session_id: str, events: Sequence[EventRecord], user_id: str | None,
                     model_key: str, want_all: bool) -> Call:
        s = self.settings
        keys = session_keys(session_id)
        args: list[Any] = [s.session_idle_timeout, s.session_ttl, s.max_session_clicks,
                           s.event_id_ttl, model_key, user_id or "", int(want_all),
                           format_timestamp(self.clock()), s.max_event_ids, len(events)]
        for event in events:
            args += [event.event_id or "", format_timestamp(event.timestamp), event.item_id]
        return Call(self.scripts["ingest"], keys, args)

    def _touch_call(self, user_id: str, session_id: str | None, timestamp: float,
                    model_key: str) -> Call:
        keys = [user_key(user_id, part) for part in ("meta", "history", "state", "closed")]
        return Call(self.scripts["touch_user"], keys,
                    [session_id or "", format_timestamp(timestamp), model_key,
                     self.settings.user_ttl])

    async def ingest(self, session_id: str, events: Sequence[EventRecord], *,
                     user_id: str | None, model_key: str, want_all: bool
                     ) -> tuple[IngestResult, UserView | None]:
        """Append events to the session and, when ``user_id`` is given, mark it as the
        user's open session, pipelined in one round trip."""
        calls = [self._ingest_call(session_id, events, user_id, model_key, want_all)]
        if user_id is not None:
            newest = max(event.timestamp for event in events)
            calls.append(self._touch_call(user_id, session_id, newest, model_key))
        results = await self._eval_many(calls)
        user_view = _user_view(results[1]) if user_id is not None else None
        return _ingest_result(results[0]), user_view

    async def read_user(self, user_id: str, model_key: str) -> UserView:
        """The user's cached state and unfolded history, without writing anything."""
        return _user_view(await self._eval(self._touch_call(user_id, None, 0.0, model_key)))

    async def peek_session(self, session_id: str, model_key: str, want_all: bool
                           ) -> SessionView | None:
        raw = await self._eval(Call(self.scripts["peek_session"],
                                    session_keys(session_id)[:3],
                                    [model_key, int(want_all)]))
        if raw is None:
            return None
        return SessionView(gen=int(raw[0]), status=_text(raw[1]), user_id=_opt_text(raw[2]),
                           total=int(raw[3]), state_blob=raw[4], state_folded=int(raw[5]),
                           unfolded=_clicks(raw[6]), clicks=_clicks(raw[7]))

    async def save_states(self, *, session: tuple[str, int, str, bytes, int] | None = None,
                          user: tuple[str, str, bytes, int] | None = None) -> list[bool]:
        """Compare-and-set writes of cached model states, pipelined.

        session: (session_id, gen, model_key, blob, clicks folded);
        user: (user_id, model_key, blob, sessions folded)."""
        calls = []
        if session is not None:
            session_id, gen, model_key, blob, folded = session
            calls.append(Call(self.scripts["save_session_state"],
                              [session_key(session_id, "meta"), session_key(session_id, "state")],
                              [model_key, blob, folded, gen, self.settings.session_ttl]))
        if user is not None:
            user_id, model_key, blob, folded = user
            calls.append(Call(self.scripts["save_user_state"],
                              [user_key(user_id, "meta"), user_key(user_id, "state")],
                              [model_key, blob, folded, self.settings.user_ttl]))
        if not calls:
            return []
        return [bool(result) for result in await self._eval_many(calls)]

    # ---- closing -------------------------------------------------------------------------
    async def seal_session(self, session_id: str, *, expected_gen: int | None,
                           expected_user: str | None, now: float
                           ) -> SealedSession | str | None:
        """Mark a session generation closed and return its clicks. Returns None for an
        unknown session, "stale" when that generation was superseded, "foreign" when the
        session belongs to another user than ``expected_user``."""
        raw = await self._eval(Call(
            self.scripts["seal_session"], session_keys(session_id)[:2],
            ["" if expected_gen is None else str(expected_gen), expected_user or "",
             format_timestamp(now)]))
        if raw is None:
            return None
        status = _text(raw[0])
        if status != "ok":
            return status
        return SealedSession(gen=int(raw[1]), was_open=_text(raw[2]) == "open",
                             user_id=_opt_text(raw[3]), started_at=_opt_float(raw[4]),
                             last_event_at=_opt_float(raw[5]), total=int(raw[6]),
                             clicks=_clicks(raw[7]))

    async def fold_into_user(self, user_id: str, session_id: str, gen: int,
                             items: Sequence[str], now: float) -> bool:
        """Append a closed session to the user's history exactly once; True if this call
        did it."""
        s = self.settings
        result = await self._eval(Call(
            self.scripts["close_user_session"], user_keys(user_id),
            [session_id, gen, json.dumps(list(items), ensure_ascii=False), format_timestamp(now),
             s.max_user_history, s.max_closed_tracked, s.user_ttl]))
        return bool(result)

    async def mark_folded(self, session_id: str, gen: int) -> bool:
        """Record that a closed generation is folded into its user (session slot): until
        then the session id cannot start its next generation (``ingest`` answers
        ``unfolded``), so a close interrupted between seal and fold is never skipped."""
        return bool(await self._eval(Call(self.scripts["mark_folded"],
                                          [session_key(session_id, "meta")], [gen])))

    # ---- reads and erasure ---------------------------------------------------------------
    async def get_session(self, session_id: str) -> SessionRecord | None:
        """Meta and click list, read atomically (one MULTI on the session slot)."""
        pipe = cast(Any, self.client).pipeline(transaction=True)
        pipe.hgetall(session_key(session_id, "meta"))
        pipe.lrange(session_key(session_id, "clicks"), 0, -1)
        meta_raw, clicks_raw = await pipe.execute()
        if not meta_raw:
            return None
        meta = {_text(k): _text(v) for k, v in meta_raw.items()}
        return SessionRecord(
            session_id=session_id, user_id=meta.get("user_id") or None,
            status=meta.get("status", "open"), gen=int(meta.get("gen", "0") or 0),
            started_at=_opt_float(meta.get("started_at")),
            last_event_at=_opt_float(meta.get("last_event_at")),
            total=int(meta.get("total", "0") or 0), clicks=_clicks(clicks_raw))

    async def user_history(self, user_id: str) -> tuple[int, list[list[str]]]:
        """(sessions folded in total, the bounded history of item lists)."""
        pipe = cast(Any, self.client).pipeline(transaction=True)
        pipe.hget(user_key(user_id, "meta"), "sessions_total")
        pipe.lrange(user_key(user_id, "history"), 0, -1)
        total_raw, history_raw = await pipe.execute()
        return int(_text(total_raw) or 0), [json.loads(_text(h)) for h in history_raw]

    async def delete_user(self, user_id: str) -> int:
        """Erase the user's keys and the sessions it is known to own (its open session and
        the closed ones remembered for exactly-once). Returns the number of sessions erased.
        Two round trips plus one per session."""
        pipe = cast(Any, self.client).pipeline(transaction=True)
        pipe.hget(user_key(user_id, "meta"), "open_session")
        pipe.zrange(user_key(user_id, "closed"), 0, -1)
        pipe.delete(*user_keys(user_id))
        open_raw, closed_raw, _ = await pipe.execute()
        session_ids = {_text(member).rpartition("#")[0] for member in closed_raw}
        if open_raw:
            session_ids.add(_text(open_raw))
        erased = 0
        for session_id in sorted(session_ids):
            erased += int(await self._eval(Call(self.scripts["delete_session_if_owned"],
                                                session_keys(session_id), [user_id])))
        return erased


def _ingest_result(raw: list[Any]) -> IngestResult:
    status = _text(raw[0])
    if status != "ok":
        return IngestResult(status=status, gen=int(raw[1]), user_id=_opt_text(raw[2]))
    return IngestResult(
        status=status, gen=int(raw[1]), user_id=_opt_text(raw[2]), accepted=int(raw[3]),
        duplicates=int(raw[4]), total=int(raw[5]), started_at=_opt_float(raw[6]),
        last_event_at=_opt_float(raw[7]), state_blob=raw[8], state_folded=int(raw[9]),
        unfolded=_clicks(raw[10]), clicks=_clicks(raw[11]), new_generation=bool(raw[12]))


def _user_view(raw: list[Any]) -> UserView:
    return UserView(previous_open=_opt_text(raw[0]), sessions_total=int(raw[1]),
                    state_blob=raw[2], state_folded=int(raw[3]),
                    unfolded_history=[json.loads(_text(entry)) for entry in raw[4]],
                    approximate=bool(raw[5]))
