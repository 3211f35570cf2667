"""The click path: Redis state (``service.store``) + ONNX inference (``service.engine``).

A click costs, in the common case, one pipelined round trip (the ``ingest`` script on the
session's slot and ``touch_user`` on the user's slot), inference in a worker thread (off
the event loop), and one pipelined compare-and-set write of the cached states. Rare paths
add round trips: an idle rollover (close, then ingest again), the user's previous session
being closed, or a cached state that must be rebuilt.

Approximations, all bounded by the lists Redis keeps:

* a session whose cached state missed more clicks than the click list holds (a model
  version deployed mid-session after more than ``max_session_clicks`` clicks) is rebuilt
  from the held clicks, i.e. from its last ``max_session_clicks`` clicks;
* a user state that missed more sessions than the history holds is caught up from the
  held ``max_user_history`` sessions on top of whatever state it had;
* a batch of events is one unit: idle detection compares its first new event with the
  session's last event, and a gap inside one batch does not split it;
* out-of-order timestamps are appended in arrival order; ``last_event_at`` is the maximum.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from service.errors import ApiError
from service.metrics import Metrics
from service.settings import Settings
from service.store import (
    EventRecord,
    SealedSession,
    SessionRecord,
    StateStore,
    UserView,
)

if TYPE_CHECKING:
    from service.engine import Engine, ModelBundle, State

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Outcome:
    """What a click or recommendation request answers."""

    session_id: str | None
    user_id: str | None
    accepted: int
    duplicates: int
    recommendations: list[tuple[str, float]]
    model_name: str
    model_version: str
    source: str  # "session" | "user" | "popular"


@dataclass
class _Computed:
    session_blob: bytes | None
    recommendations: list[tuple[str, float]]
    user_write: tuple[bytes, int] | None


class SessionService:
    """Stateless between requests: everything lives in Redis, so any number of replicas
    can serve the same sessions."""

    MAX_ROLLOVER_ATTEMPTS = 4  # rollover, unfolded (a racing closer), ok: with margin

    def __init__(self, store: StateStore, engine: Engine, settings: Settings,
                 executor: Executor, metrics: Metrics) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.executor = executor
        self.metrics = metrics

    # ---- helpers ------------------------------------------------------------------------
    def bundle(self, name: str | None) -> ModelBundle:
        try:
            return self.engine.get(name)
        except KeyError:
            available = sorted(self.engine.models)
            raise ApiError(404, "unknown_model",
                           f"unknown model {name!r}; loaded models: {', '.join(available)}",
                           {"available": available}) from None

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(function, *args))

    @staticmethod
    def _indices(bundle: ModelBundle, item_ids: Collection[str]) -> set[int]:
        return {index for index in map(bundle.item_index, item_ids) if index}

    # ---- inference (worker threads) ------------------------------------------------------
    @staticmethod
    def _catch_up_user(bundle: ModelBundle, view: UserView
                       ) -> tuple[State, tuple[bytes, int] | None]:
        """The user's state with every unfolded past session replayed through the model
        (start -> advance over its clicks -> end_session); returns the state and, when it
        changed, the (blob, sessions folded) to cache."""
        user_state: State | None = None
        if view.state_blob is not None:
            try:
                user_state = bundle.decode_user(view.state_blob)
            except ValueError:
                log.warning("%s: dropping an unreadable cached user state", bundle.key)
        if user_state is None:
            user_state = bundle.new_user_state()
            if not view.unfolded_history and view.sessions_total == 0:
                return user_state, None
        for items in view.unfolded_history:
            session_state = bundle.start_session(user_state)
            session_state = bundle.advance(session_state,
                                           [bundle.item_index(str(item)) for item in items])
            user_state = bundle.end_session(session_state, user_state)
        if not view.unfolded_history:
            return user_state, None
        return user_state, (bundle.encode_user(user_state), view.sessions_total)

    def _advance_and_rank(self, bundle: ModelBundle, state_blob: bytes | None,
                          unfolded: Sequence[str], user_view: UserView | None, k: int,
                          exclude: Collection[int]) -> _Computed:
        user_write = None
        state: State | None = None
        if state_blob is not None:
            try:
                state = bundle.decode_session(state_blob)
            except ValueError:
                log.warning("%s: dropping an unreadable cached session state", bundle.key)
        if state is None:
            user_state = None
            if user_view is not None and bundle.has_user_state:
                user_state, user_write = self._catch_up_user(bundle, user_view)
            state = bundle.start_session(user_state)
        changed = state_blob is None or bool(unfolded)
        if unfolded:
            state = bundle.advance(state, [bundle.item_index(item) for item in unfolded])
        recommendations = bundle.top_k(state, k, exclude)
        return _Computed(bundle.encode_session(state) if changed else None, recommendations,
                         user_write)

    def _start_and_rank(self, bundle: ModelBundle, user_view: UserView, k: int,
                        exclude: Collection[int]) -> _Computed:
        user_state, user_write = self._catch_up_user(bundle, user_view)
        state = bundle.start_session(user_state)
        return _Computed(None, bundle.top_k(state, k, exclude), user_write)

    # ---- click path ---------------------------------------------------------------------
    async def record_events(self, session_id: str, events: Sequence[EventRecord], *,
                            user_id: str | None, model: str | None, k: int,
                            exclude_seen: bool) -> Outcome:
        bundle = self.bundle(model)
        for _ in range(self.MAX_ROLLOVER_ATTEMPTS):
            result, user_view = await self.store.ingest(
                session_id, events, user_id=user_id, model_key=bundle.key,
                want_all=exclude_seen)
            if result.status == "conflict":
                raise ApiError(409, "session_user_conflict",
                               f"session {session_id!r} belongs to another user; use a new "
                               f"session id for this user")
            if result.status not in ("rollover", "unfolded"):
                break
            # Idle longer than the timeout (or a closed generation whose fold into its user
            # did not complete): close that generation, then the retry starts the next one
            # (nothing was written by the refused ingest).
            if result.status == "rollover":
                self.metrics.inc("nextclick_session_rollovers_total")
            await self.close_session(session_id, expected_gen=result.gen, expected_user=None)
        else:
            raise ApiError(409, "session_busy", "the session changed repeatedly while "
                           "recording; retry the request", headers={"Retry-After": "1"})

        self.metrics.inc("nextclick_clicks_accepted_total", result.accepted)
        self.metrics.inc("nextclick_duplicate_events_total", result.duplicates)
        owner = result.user_id

        if (user_view is not None and user_view.previous_open
                and user_view.previous_open != session_id and user_id is not None):
            # The user moved on to this session: the previous one is over.
            await self.close_session(user_view.previous_open, expected_gen=None,
                                     expected_user=user_id)
            user_view = None  # its history changed; re-read below if it is needed

        if result.gen == 0:  # only duplicates of events of a session that no longer exists
            return Outcome(session_id, owner, 0, result.duplicates,
                           bundle.popular(k), bundle.name, bundle.version, "popular")

        needs_user = result.state_blob is None and bundle.has_user_state and owner is not None
        if needs_user and owner is not None and (user_view is None or owner != user_id):
            user_view = await self.store.read_user(owner, bundle.key)
        exclude = self._indices(bundle, [c.item_id for c in result.clicks]) if exclude_seen \
            else set()
        computed = await self._in_thread(
            self._advance_and_rank, bundle, result.state_blob,
            [click.item_id for click in result.unfolded], user_view if needs_user else None,
            k, exclude)
        await self.store.save_states(
            session=None if computed.session_blob is None else (
                session_id, result.gen, bundle.key, computed.session_blob, result.total),
            user=None if computed.user_write is None or owner is None else (
                owner, bundle.key, *computed.user_write))
        return Outcome(session_id, owner, result.accepted, result.duplicates,
                       computed.recommendations, bundle.name, bundle.version, "session")

    async def recommend(self, *, session_id: str | None, user_id: str | None,
                        model: str | None, k: int, exclude_ids: Collection[str],
                        exclude_seen: bool) -> Outcome:
        """Top-K without recording anything: from the open session's state; for a user
        alone (or a closed session's user) the personalised start-of-session list; for
        neither, the popular items."""
        bundle = self.bundle(model)
        exclude = self._indices(bundle, exclude_ids)
        if session_id is not None:
            view = await self.store.peek_session(session_id, bundle.key, exclude_seen)
            if view is not None and view.status == "open":
                owner = view.user_id
                user_view = None
                if view.state_blob is None and bundle.has_user_state and owner is not None:
                    user_view = await self.store.read_user(owner, bundle.key)
                if exclude_seen:
                    exclude |= self._indices(bundle, [c.item_id for c in view.clicks])
                computed = await self._in_thread(
                    self._advance_and_rank, bundle, view.state_blob,
                    [click.item_id for click in view.unfolded], user_view, k, exclude)
                await self.store.save_states(
                    session=None if computed.session_blob is None else (
                        session_id, view.gen, bundle.key, computed.session_blob, view.total),
                    user=None if computed.user_write is None or owner is None else (
                        owner, bundle.key, *computed.user_write))
                return Outcome(session_id, owner, 0, 0, computed.recommendations,
                               bundle.name, bundle.version, "session")
            if view is not None and user_id is None:
                user_id = view.user_id
        if user_id is not None and bundle.has_user_state:
            user_view = await self.store.read_user(user_id, bundle.key)
            computed = await self._in_thread(self._start_and_rank, bundle, user_view, k,
                                             exclude)
            if computed.user_write is not None:
                await self.store.save_states(user=(user_id, bundle.key, *computed.user_write))
            return Outcome(session_id, user_id, 0, 0, computed.recommendations, bundle.name,
                           bundle.version, "user")
        return Outcome(session_id, user_id, 0, 0, bundle.popular(k, set(exclude_ids)),
                       bundle.name, bundle.version, "popular")

    # ---- closing ------------------------------------------------------------------------
    async def close_session(self, session_id: str, *, expected_gen: int | None,
                            expected_user: str | None) -> SealedSession | str | None:
        """Seal the session generation (session slot), fold its clicks into its user
        exactly once (user slot), then mark it folded (session slot). Safe to race and to
        repeat: a second closer gets the same sealed generation and its fold is a no-op; a
        closer that died midway is completed by the next one, since the session id cannot
        start a new generation before its last one is marked folded. The user's model
        states catch up lazily, on the user's next session start or personalised request."""
        sealed = await self.store.seal_session(session_id, expected_gen=expected_gen,
                                               expected_user=expected_user, now=time.time())
        if not isinstance(sealed, SealedSession):
            return sealed
        if sealed.was_open:
            self.metrics.inc("nextclick_sessions_closed_total")
        if sealed.user_id is not None:
            folded = await self.store.fold_into_user(
                sealed.user_id, session_id, sealed.gen,
                [click.item_id for click in sealed.clicks], time.time())
            if folded:
                self.metrics.inc("nextclick_user_sessions_folded_total")
            await self.store.mark_folded(session_id, sealed.gen)
        return sealed

    async def end_session(self, session_id: str) -> SealedSession:
        sealed = await self.close_session(session_id, expected_gen=None, expected_user=None)
        if not isinstance(sealed, SealedSession):
            raise ApiError(404, "unknown_session", f"no session {session_id!r}")
        return sealed

    async def get_session(self, session_id: str) -> SessionRecord:
        record = await self.store.get_session(session_id)
        if record is None:
            raise ApiError(404, "unknown_session", f"no session {session_id!r}")
        return record

    async def delete_user(self, user_id: str) -> int:
        return await self.store.delete_user(user_id)
