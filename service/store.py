"""Session and user state in Redis.

Key layout (hash tags keep one session's keys, and one user's keys, in one cluster slot so
every multi-key operation is a single Lua script on a single slot)::

    nc:{s:<sid>}:meta       hash  user_id gen status started_at last_event_at total closed_at
                                  touched_at (server time of the last accepted click)
                                  attached (1 once the generation is attached to its user)
                                  folded (1 once a closed generation is folded into its user)
    nc:{s:<sid>}:clicks     list  "<timestamp>\\t<item_id>", newest last, bounded
    nc:{s:<sid>}:state      hash  <model@version> -> state blob, <model@version>#n -> clicks
                                  of the generation's ``total`` folded into that blob
    nc:{s:<sid>}:events     zset  event id -> time accepted: the idempotency record of the
                                  session's events (ids older than ``event_id_ttl`` and all
                                  but the newest ``max_event_ids`` are forgotten)
    nc:{s:<sid>}:payloads   hash  event id -> payload fingerprint (same members as events):
                                  an id sent again with another payload is refused (409)
    nc:{s:<sid>}:served     list  "<recommendation id>\\t<model@version>\\t<item>...": the
                                  newest lists answered for the session (click attribution)
    nc:{u:<uid>}:meta       hash  open_session last_event_at sessions_total
    nc:{u:<uid>}:history    list  JSON item-id lists of past sessions, newest last, bounded
    nc:{u:<uid>}:closed     zset  "<sid>#<gen>" -> close time: folded generations, for erasure
    nc:{u:<uid>}:state      hash  <model@version> -> user state blob, ...#n -> sessions folded
    nc:{u:<uid>}:attached   zset  "<sid>#<gen>" -> attach time: generations this user owns
                                  and has not folded yet (a fold consumes its member, so a
                                  generation folds exactly once, and never into an erased
                                  user)
    nc:{log:<n>}:events     stream every accepted event (session, user, item, timestamp,
                                  type, event id, model version, recommendation id),
                                  appended by ``ingest`` in the same atomic step; bounded by
                                  length and age; exported by ``nextclick events export``
    nc:{log:<n>}:experiments hash "<model@version>|lists|clicks|hits|rr|rr2": online
                                  counters of the lists answered and the clicks on them
                                  (GET /admin/experiments sums the shards)
                                  A log shard shares its slot with its sessions: on a single
                                  server n = crc32(sid) mod ``event_log_shards``; on a
                                  cluster one shard per slot (``log_shard_tag``).
    nc:{u:<uid>}:served     list  start-of-session lists answered for the user (attribution of
                                  the first click of the user's next session)
    nc:{sweep:<n>}:sessions zset  session id -> server time of its last known activity: the
                                  sweeper's index of sessions with a user (n = shard)
    nc:{sweep:<n>}:lease    str   which process sweeps shard n right now

The click list and the user's session history are the source of truth. Model states are
caches derivable from them and are written with a compare-and-set on the folded count, so
concurrent requests never lose a click or overwrite a newer state, and a newly deployed
model version catches up lazily from the lists. This module only moves data; the click
path that combines it with the engine lives in ``service.sessions``.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.settings import Settings

log = logging.getLogger(__name__)

#: Errors that mean "Redis is unreachable right now" (the API answers 503 + Retry-After).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)

RedisClient = aioredis.Redis | RedisCluster

CLUSTER_SLOTS = 16384


# ---- keys ----------------------------------------------------------------------------
def session_key(session_id: str, part: str) -> str:
    return f"nc:{{s:{session_id}}}:{part}"


def user_key(user_id: str, part: str) -> str:
    return f"nc:{{u:{user_id}}}:{part}"


def session_keys(session_id: str) -> list[str]:
    return [session_key(session_id, part)
            for part in ("meta", "clicks", "state", "events", "payloads", "served")]


def user_keys(user_id: str) -> list[str]:
    return [user_key(user_id, part)
            for part in ("meta", "history", "closed", "state", "attached", "served")]


@functools.cache
def _slot_tags() -> dict[int, str]:
    """For every cluster slot, a short hash tag "log:<hex>" that hashes to it (found once,
    in about 0.2 s): a session's log shard key lands in the session's own slot, so the
    ingest script can append to it in the same atomic step."""
    tags: dict[int, str] = {}
    candidate = 0
    while len(tags) < CLUSTER_SLOTS:
        tag = f"log:{candidate:x}"
        tags.setdefault(binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS, tag)
        candidate += 1
    return tags


def key_slot(tag: str) -> int:
    """The cluster slot of a hash tag (CRC16/XMODEM mod 16384, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode("utf-8"), 0) % CLUSTER_SLOTS


def log_keys(owner: str, *, cluster: bool, shards: int) -> list[str]:
    """The event-log stream and the experiment counters of the shard of ``owner``, the
    hash tag of the keys a script already touches ("s:<session id>" or "u:<user id>"),
    so that on a cluster they share its slot."""
    if cluster:
        tag = _slot_tags()[key_slot(owner)]
    else:
        tag = f"log:{zlib.crc32(owner.encode('utf-8')) % shards}"
    return [f"nc:{{{tag}}}:events", f"nc:{{{tag}}}:experiments"]


def sweep_shard(session_id: str, shards: int) -> int:
    """The sweeper shard of a session (the same in every process)."""
    return zlib.crc32(session_id.encode("utf-8")) % shards


def sweep_keys(shard: int) -> list[str]:
    return [f"nc:{{sweep:{shard}}}:sessions", f"nc:{{sweep:{shard}}}:lease"]


# ---- values ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Click:
    item_id: str
    timestamp: float


@dataclass(frozen=True)
class EventRecord:
    """One event as the store records it (the timestamp is already filled in).
    ``payload`` is what must match when the same ``event_id`` is sent again (the item, the
    event type and the client's own timestamp, if it sent one)."""

    item_id: str
    timestamp: float
    event_id: str | None = None
    payload: str = ""
    recommendation_id: str | None = None
    event_type: str = "click"


@dataclass
class IngestResult:
    status: str  # "ok" | "attach" | "rollover" | "conflict" | "unfolded" | "payload_mismatch"
    gen: int
    user_id: str | None  # for payload_mismatch: the event id re-used with another payload
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
    #: per accepted event naming a recommendation id: (model@version, position in that
    #: list, 0 = not in it); ("", -1) when the list is not remembered
    attributions: list[tuple[str, int]] = field(default_factory=list)


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

    previous_open: str | None  # the user's other open session, when attaching a new one
    sessions_total: int
    state_blob: bytes | None
    state_folded: int
    unfolded_history: list[list[str]]
    approximate: bool
    exists: bool = True


@dataclass
class SealedSession:
    gen: int
    was_open: bool
    user_id: str | None
    started_at: float | None
    last_event_at: float | None
    total: int
    clicks: list[Click]
    folded: bool = False


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
    touched_at: float | None = None  # server time of the last accepted click


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

    def __init__(self, name: str, source: str | None = None) -> None:
        self.name = name
        self.source = _lua_source(name) if source is None else source
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    @classmethod
    def inline(cls, name: str, source: str) -> Script:
        return cls(name, source)


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
    dropped connection, so the service recovers by itself after Redis restarts: the first
    command on each pooled connection to the old server fails and is re-sent on a new one.

    The retry must be the asyncio ``Retry``: the synchronous one wraps the coroutine's
    creation, not its run, and retried nothing (every stale connection answered a 503). A
    timeout is not retried: the server may have run the command, and an event without an
    ``event_id`` would be recorded twice."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1,
                       supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
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
    docstring says otherwise; the ``*_call`` builders let the click path pipeline the
    scripts of many requests into one round trip (``run``)."""

    SCRIPT_NAMES = ("ingest", "peek_session", "attach_user", "detach_user", "read_user",
                    "seal_session",
                    "fold_session", "save_session_state", "save_user_state", "erase_user",
                    "delete_session_if_owned", "mark_folded", "sweep_claim", "remember_served",
                    "attribute", "count_clicks")

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.cluster = isinstance(client, RedisCluster)
        self.scripts = {name: Script(name) for name in self.SCRIPT_NAMES}
        #: Wall clock that dates accepted event ids and session activity (server time).
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

    async def run_groups(self, groups: Sequence[Sequence[Call]]) -> list[list[Any]]:
        """Run groups of scripts, each group in order: one pipeline on a single server (it
        runs in order), the groups concurrently on a cluster, each one call after the other
        (slots on different nodes give no order)."""
        if not self.cluster:
            flat = await self.run([call for group in groups for call in group])
            results, position = [], 0
            for group in groups:
                results.append(flat[position:position + len(group)])
                position += len(group)
            return results

        async def in_order(group: Sequence[Call]) -> list[Any]:
            return [await self._eval(call) for call in group]

        return list(await asyncio.gather(*(in_order(group) for group in groups)))

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """Run scripts on (possibly) different slots in one round trip: a non-transactional
        pipeline on a single server (executed in order), concurrent calls on a cluster. A
        script the server does not know yet is loaded and re-run individually (only that
        one failed, so nothing runs twice). A failure raises."""
        if not calls:
            return []
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
    def ingest_call(self, session_id: str, events: Sequence[EventRecord], user_id: str | None,
                    model_key: str, want_all: bool, attached_gen: int | None = None) -> Call:
        """``attached_gen``: the generation this caller attached to its user after an
        ``attach`` answer (see ingest.lua)."""
        s = self.settings
        now = self.clock()
        log_len = log_min_id = ""
        if s.event_log:
            log_len = str(self.log_shard_length)
            if s.event_log_max_age > 0:
                log_min_id = str(int((now - s.event_log_max_age) * 1000))
        args: list[Any] = [s.session_idle_timeout, s.session_ttl, s.max_session_clicks,
                           s.event_id_ttl, model_key, user_id or "", int(want_all),
                           format_timestamp(now), s.max_event_ids,
                           "" if attached_gen is None else attached_gen, log_len, log_min_id,
                           len(events)]
        for event in events:
            args += [event.event_id or "", format_timestamp(event.timestamp), event.item_id,
                     event.payload, event.recommendation_id or "", event.event_type]
        keys = session_keys(session_id) + self.log_keys(session_id)
        return Call(self.scripts["ingest"], keys, args)

    def log_keys(self, session_id: str) -> list[str]:
        """The log shard keys in a session's slot."""
        return self._shard_keys(f"s:{session_id}")

    def _shard_keys(self, owner: str) -> list[str]:
        return log_keys(owner, cluster=self.cluster, shards=self.settings.event_log_shards)

    @property
    def log_shard_length(self) -> int:
        """Entries kept per log shard: the total bound over the shards (at least 100 each,
        the stream's trimming unit)."""
        shards = CLUSTER_SLOTS if self.cluster else self.settings.event_log_shards
        return max(100, -(-self.settings.event_log_max_events // shards))

    async def ingest(self, session_id: str, events: Sequence[EventRecord], *,
                     user_id: str | None, model_key: str, want_all: bool,
                     attached_gen: int | None = None) -> IngestResult:
        """Append events to the session (a refused request writes nothing)."""
        return ingest_result(await self._eval(
            self.ingest_call(session_id, events, user_id, model_key, want_all, attached_gen)))

    def attach_calls(self, user_id: str, session_id: str, gen: int, timestamp: float,
                     model_key: str) -> list[Call]:
        """Attach a session generation to its user and index it for the idle sweeper (two
        slots; run them with ``run``, the first result is the user view)."""
        s = self.settings
        index_key = sweep_keys(sweep_shard(session_id, s.sweep_shards))[0]
        return [Call(self.scripts["attach_user"], user_keys(user_id),
                     [session_id, gen, format_timestamp(timestamp), model_key, s.user_ttl]),
                Call(_ZADD, [index_key], [format_timestamp(self.clock()), session_id])]

    async def attach_user(self, user_id: str, session_id: str, gen: int, timestamp: float,
                          model_key: str) -> UserView:
        """``attach_calls`` in one round trip; returns the user's view."""
        results = await self.run(self.attach_calls(user_id, session_id, gen, timestamp,
                                                   model_key))
        return user_view(results[0])

    def attached_call(self, user_id: str, session_id: str, gen: int) -> Call:
        """Is the generation still attached to the user (1/0)? After the session accepted
        it: an erasure may have run in between."""
        return Call(_ATTACHED, [user_key(user_id, "attached")], [f"{session_id}#{gen}"])

    def delete_session_call(self, session_id: str, user_id: str) -> Call:
        """Erase a session if it belongs to the user (session slot)."""
        return Call(self.scripts["delete_session_if_owned"], session_keys(session_id),
                    [user_id])

    def detach_call(self, user_id: str, session_id: str, gen: int,
                    previous_open: str | None) -> Call:
        """Undo an attach whose generation the session then refused (rare race)."""
        return Call(self.scripts["detach_user"],
                    [user_key(user_id, "meta"), user_key(user_id, "attached")],
                    [session_id, gen, previous_open or ""])

    async def read_user(self, user_id: str, model_key: str) -> UserView:
        """The user's cached state and unfolded history, without writing anything."""
        keys = [user_key(user_id, part) for part in ("meta", "history", "state")]
        raw = await self._eval(Call(self.scripts["read_user"], keys, [model_key]))
        return UserView(previous_open=None, sessions_total=int(raw[0]), state_blob=raw[1],
                        state_folded=int(raw[2]),
                        unfolded_history=[json.loads(_text(entry)) for entry in raw[3]],
                        approximate=bool(raw[4]), exists=bool(raw[5]))

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

    def session_state_call(self, session_id: str, gen: int, model_key: str, blob: bytes,
                           folded: int) -> Call:
        """Compare-and-set of a session's cached state on the number of clicks folded."""
        return Call(self.scripts["save_session_state"],
                    [session_key(session_id, "meta"), session_key(session_id, "state")],
                    [model_key, blob, folded, gen, self.settings.session_ttl])

    def remember_served_call(self, session_id: str, recommendation_id: str, model_key: str,
                             items: Sequence[str]) -> Call:
        """Remember a list answered for a session, for the attribution of later clicks."""
        entry = "\t".join([recommendation_id, model_key, *items])
        return Call(self.scripts["remember_served"],
                    [session_key(session_id, "served"), self.log_keys(session_id)[1]],
                    [entry, self.settings.served_lists_kept, self.settings.session_ttl,
                     model_key])

    def remember_user_served_call(self, user_id: str, recommendation_id: str, model_key: str,
                                  items: Sequence[str], session_id: str | None) -> Call:
        """Remember a start-of-session list answered for a user (user slot): the first
        click of the user's next session names it; counted as served in the log shard
        that shares the user's slot."""
        entry = "\t".join([recommendation_id, model_key, *items])
        counters = self._shard_keys(f"u:{user_id}")[1]  # the user's slot
        return Call(self.scripts["remember_served"], [user_key(user_id, "served"), counters],
                    [entry, self.settings.served_lists_kept, self.settings.user_ttl,
                     model_key])

    async def attribute_user_lists(self, user_id: str, session_id: str,
                                   clicks: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
        """Positions of (recommendation id, item) clicks in lists answered for the user
        (``remember_user_served_call``), counted in the session's log shard: one round trip,
        then one more when any was found."""
        raw = await self._eval(Call(self.scripts["attribute"], [user_key(user_id, "served")],
                                    [value for pair in clicks for value in pair]))
        found = [(_text(model), int(position)) for model, position in raw]
        counted = [value for model, position in found if position >= 0
                   for value in (model, position)]
        if counted:
            await self._eval(Call(self.scripts["count_clicks"],
                                  [self.log_keys(session_id)[1]], counted))
        return found

    def user_state_call(self, user_id: str, model_key: str, blob: bytes, folded: int) -> Call:
        """Compare-and-set of a user's cached state on the number of sessions folded."""
        return Call(self.scripts["save_user_state"],
                    [user_key(user_id, "meta"), user_key(user_id, "state")],
                    [model_key, blob, folded, self.settings.user_ttl])

    async def save_states(self, *, session: tuple[str, int, str, bytes, int] | None = None,
                          user: tuple[str, str, bytes, int] | None = None) -> list[bool]:
        """Compare-and-set writes of cached model states, pipelined.

        session: (session_id, gen, model_key, blob, clicks folded);
        user: (user_id, model_key, blob, sessions folded)."""
        calls = []
        if session is not None:
            calls.append(self.session_state_call(*session))
        if user is not None:
            calls.append(self.user_state_call(*user))
        return [bool(result) for result in await self.run(calls)]

    # ---- closing -------------------------------------------------------------------------
    async def seal_session(self, session_id: str, *, expected_gen: int | None,
                           expected_user: str | None, now: float,
                           idle_cutoff: float | None = None
                           ) -> SealedSession | str | None:
        """Mark a session generation closed and return its clicks. Returns None for an
        unknown session, "stale" when that generation was superseded, "foreign" when the
        session belongs to another user than ``expected_user``, "active" when it had a
        click after ``idle_cutoff`` (server time; nothing is written then)."""
        raw = await self._eval(Call(
            self.scripts["seal_session"], session_keys(session_id)[:2],
            ["" if expected_gen is None else str(expected_gen), expected_user or "",
             format_timestamp(now), "" if idle_cutoff is None else format_timestamp(idle_cutoff)]))
        if raw is None:
            return None
        status = _text(raw[0])
        if status != "ok":
            return status
        return SealedSession(gen=int(raw[1]), was_open=_text(raw[2]) == "open",
                             user_id=_opt_text(raw[3]), started_at=_opt_float(raw[4]),
                             last_event_at=_opt_float(raw[5]), total=int(raw[6]),
                             clicks=_clicks(raw[7]), folded=_text(raw[8]) == "1")

    async def fold_into_user(self, user_id: str, session_id: str, gen: int,
                             items: Sequence[str], now: float) -> bool:
        """Append a closed session generation attached to this user to the user's history,
        exactly once; True if this call did it."""
        s = self.settings
        result = await self._eval(Call(
            self.scripts["fold_session"], user_keys(user_id),
            [session_id, gen, json.dumps(list(items), ensure_ascii=False), format_timestamp(now),
             s.max_user_history, s.max_closed_tracked, s.user_ttl]))
        return bool(result)

    async def mark_folded(self, session_id: str, gen: int) -> bool:
        """Record that a closed generation is folded into its user (session slot): until
        then the session id cannot start its next generation (``ingest`` answers
        ``unfolded``), so a close interrupted between seal and fold is never skipped."""
        return bool(await self._eval(Call(self.scripts["mark_folded"],
                                          [session_key(session_id, "meta")], [gen])))

    # ---- idle sweeper ----------------------------------------------------------------------
    async def sweep_candidates(self, shard: int, owner: str, lease_ms: int, cutoff: float,
                               limit: int) -> list[str] | None:
        """Take (or keep) the lease of one index shard and list its sessions idle since
        ``cutoff``; None when another process holds the lease."""
        raw = await self._eval(Call(self.scripts["sweep_claim"], sweep_keys(shard),
                                    [owner, lease_ms, format_timestamp(cutoff), limit]))
        return None if raw is None else [_text(member) for member in raw]

    async def reindex(self, session_id: str, activity: float | None) -> None:
        """Move a session in the sweeper's index to its last activity, or drop it (None)."""
        key = sweep_keys(sweep_shard(session_id, self.settings.sweep_shards))[0]
        if activity is None:
            await self.client.zrem(key, session_id)
        else:
            await self.client.zadd(key, {session_id: activity})

    async def experiment_counts(self) -> dict[str, dict[str, float]]:
        """The online experiment counters summed over the log shards: per model version,
        lists answered, clicks on them, hits, sum of reciprocal ranks and of their
        squares (see ingest.lua and remember_served.lua)."""
        keys = sorted({_text(key) async for key in cast(Any, self.client).scan_iter(
            match="nc:{log:*}:experiments", count=1000)})
        totals: dict[str, dict[str, float]] = {}
        for key in keys:
            for name, value in (await cast(Any, self.client).hgetall(key)).items():
                model, _, counter = _text(name).rpartition("|")
                entry = totals.setdefault(model, dict.fromkeys(
                    ("lists", "clicks", "hits", "rr", "rr2"), 0.0))
                entry[counter] = entry.get(counter, 0.0) + float(_text(value))
        return totals

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
            total=int(meta.get("total", "0") or 0), clicks=_clicks(clicks_raw),
            touched_at=_opt_float(meta.get("touched_at")))

    async def user_history(self, user_id: str) -> tuple[int, list[list[str]]]:
        """(sessions folded in total, the bounded history of item lists)."""
        pipe = cast(Any, self.client).pipeline(transaction=True)
        pipe.hget(user_key(user_id, "meta"), "sessions_total")
        pipe.lrange(user_key(user_id, "history"), 0, -1)
        total_raw, history_raw = await pipe.execute()
        return int(_text(total_raw) or 0), [json.loads(_text(h)) for h in history_raw]

    async def delete_user(self, user_id: str) -> int:
        """Erase the user's keys atomically on the user slot, then every session it owned
        (its open one, those attached and not folded, the closed ones remembered), each on
        its own slot if it still belongs to the user. Returns the number of sessions
        erased. One round trip, then one pipelined round trip for the sessions."""
        raw = await self._eval(Call(self.scripts["erase_user"], user_keys(user_id), []))
        session_ids = sorted({_text(member) for member in raw})
        shards = self.settings.sweep_shards
        calls = [self.delete_session_call(sid, user_id) for sid in session_ids]
        calls += [Call(_ZREM, [sweep_keys(sweep_shard(sid, shards))[0]], [sid])
                  for sid in session_ids]
        results = await self.run(calls)
        return sum(int(result) for result in results[:len(session_ids)])


#: Single-command "scripts" so the pipelined ``run`` can mix index updates with the Lua
#: scripts (EVALSHA of a one-line script costs what the bare command costs).
_ZADD = Script.inline("zadd", "return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])")
_ZREM = Script.inline("zrem", "return redis.call('ZREM', KEYS[1], ARGV[1])")
_ATTACHED = Script.inline("attached",
                          "return redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0")


def ingest_result(raw: list[Any]) -> IngestResult:
    status = _text(raw[0])
    if status != "ok":
        return IngestResult(status=status, gen=int(raw[1]), user_id=_opt_text(raw[2]))
    return IngestResult(
        status=status, gen=int(raw[1]), user_id=_opt_text(raw[2]), accepted=int(raw[3]),
        duplicates=int(raw[4]), total=int(raw[5]), started_at=_opt_float(raw[6]),
        last_event_at=_opt_float(raw[7]), state_blob=raw[8], state_folded=int(raw[9]),
        unfolded=_clicks(raw[10]), clicks=_clicks(raw[11]), new_generation=bool(raw[12]),
        attributions=[(_text(key), int(position)) for key, position in raw[13]])


def user_view(raw: list[Any]) -> UserView:
    return UserView(previous_open=_opt_text(raw[0]), sessions_total=int(raw[1]),
                    state_blob=raw[2], state_folded=int(raw[3]),
                    unfolded_history=[json.loads(_text(entry)) for entry in raw[4]],
                    approximate=bool(raw[5]))
