"""The click path: Redis state (``service.store``) + ONNX inference (``service.engine``),
micro-batched (``service.batching``).

Concurrent clicks are processed as one batch: one pipelined Redis round trip carries the
``ingest`` script of every click of the batch (each on its session's slot) together with
the cached-state writes of the batch before it; then one ``advance`` run per click column
and one ``score``/TopK run cover every click of a model version in a worker thread (off
the event loop); the new states are written with the next batch's round trip, or on their
own as soon as nothing else is waiting. So a click costs at most one round trip on its
critical path, amortised over the batch. Rare paths add round trips: a session's first
click for a user (``attach_user`` on the user's slot), the user's previous session being
closed, an idle rollover, a cached state that must be rebuilt.

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
import uuid
import zlib
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.batching import MicroBatcher
from service.errors import ApiError
from service.metrics import Metrics
from service.settings import Settings
from service.store import (
    Call,
    EventRecord,
    IngestResult,
    SealedSession,
    SessionRecord,
    StateStore,
    UserView,
    ingest_result,
    user_view,
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
    unknown_items: list[str] = field(default_factory=list)
    recommendation_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class ClickJob:
    """One request's events waiting for a batch."""

    session_id: str
    events: Sequence[EventRecord]
    user_id: str | None
    bundle: ModelBundle
    k: int
    exclude_seen: bool
    # filled in while the batch is processed
    result: IngestResult | None = None
    user: UserView | None = None
    attached_previous: str | None = None  # the user's open session before this one


@dataclass
class Ranked:
    """Inference output for one row of a batch."""

    session_blob: bytes | None
    recommendations: list[tuple[str, float]]
    user_write: tuple[bytes, int] | None


@dataclass(frozen=True)
class TrafficSplit:
    """``NEXTCLICK_TRAFFIC_SPLIT`` ("hrnn-init=90,narm=10"): the share of traffic each
    model answers, sticky by a hash of the user (or session) id, so every process and
    replica sends the same user to the same model."""

    models: tuple[str, ...]
    weights: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> TrafficSplit:
        models, weights = [], []
        for part in text.split(","):
            name, sep, weight = part.strip().partition("=")
            if not sep or not name.strip() or not weight.strip().isdigit() \
                    or int(weight) < 1 or name.strip() in models:
                raise ValueError(f"traffic split {text!r}: expected model=weight pairs with "
                                 "distinct models and positive whole weights, e.g. "
                                 "hrnn-init=90,narm=10")
            models.append(name.strip())
            weights.append(int(weight))
        return cls(tuple(models), tuple(weights))

    def choose(self, key: str) -> str:
        point = zlib.crc32(key.encode("utf-8")) % sum(self.weights)
        for model, weight in zip(self.models, self.weights, strict=True):
            if point < weight:
                return model
            point -= weight
        return self.models[-1]


class CloseFirst(Exception):
    """The session's current generation must be closed before these events can go in
    (idle rollover, or a close that died between seal and fold), or (``gen`` None) the
    session changed under the request and it must simply be sent again; nothing was
    written."""

    def __init__(self, gen: int | None, rollover: bool) -> None:
        super().__init__(f"close generation {gen} first")
        self.gen = gen
        self.rollover = rollover


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
        self.split = TrafficSplit.parse(settings.traffic_split) if settings.traffic_split \
            else None
        if self.split is not None:
            missing = sorted(set(self.split.models) - set(engine.models))
            if missing:
                raise ValueError(f"traffic split names models that are not loaded: "
                                 f"{', '.join(missing)} (loaded: {', '.join(engine.models)})")
        self.clicks: MicroBatcher[ClickJob, Outcome] = MicroBatcher(
            self._process_clicks, max_size=settings.batch_max_size,
            max_wait=settings.batch_max_wait, max_concurrent=settings.batch_concurrency,
            on_idle=self._flush_writes_soon)
        self._pending_writes: list[Call] = []
        self._write_tasks: set[asyncio.Task[None]] = set()
        self._writes_in_flight: set[asyncio.Future[None]] = set()

    # ---- helpers ------------------------------------------------------------------------
    def bundle(self, name: str | None, sticky_key: str | None = None) -> ModelBundle:
        """The model a request asked for; else, with a traffic split, the split's model for
        ``sticky_key`` (the user id, else the session id: the same in every process);
        else the default model."""
        if name is None and self.split is not None and sticky_key is not None:
            name = self.split.choose(sticky_key)
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

    def _rank_rows(self, bundle: ModelBundle, blobs: Sequence[bytes | None],
                   unfolded: Sequence[Sequence[str]], users: Sequence[UserView | None],
                   ks: Sequence[int], excludes: Sequence[Collection[int]]) -> list[Ranked]:
        """Bring a batch of sessions up to date and rank for each, with one ``start`` run
        (sessions without a usable cached state), one ``advance`` run per click column and
        one ``score`` run. A row's state is re-encoded when it changed."""
        from service.engine import stack_states

        rows = len(blobs)
        states: list[State | None] = []
        for blob in blobs:
            state = None
            if blob is not None:
                try:
                    state = bundle.decode_session(blob)
                except ValueError:
                    log.warning("%s: dropping an unreadable cached session state", bundle.key)
            states.append(state)
        user_writes: list[tuple[bytes, int] | None] = [None] * rows
        starting = [row for row in range(rows) if states[row] is None]
        if starting:
            user_states = []
            for row in starting:
                view = users[row]
                if view is not None and bundle.has_user_state:
                    user_state, user_writes[row] = self._catch_up_user(bundle, view)
                else:
                    user_state = bundle.new_user_state()
                user_states.append(user_state)
            started = bundle.start_session(stack_states(user_states) if bundle.user_spec
                                           else None, len(starting))
            for position, row in enumerate(starting):
                states[row] = {name: value[position:position + 1]
                               for name, value in started.items()}
        width = max((len(items) for items in unfolded), default=0)
        clicks = np.zeros((rows, width), dtype=np.int64)
        for row, items in enumerate(unfolded):
            clicks[row, :len(items)] = [bundle.item_index(item) for item in items]
        batch = bundle.advance_steps(stack_states([s for s in states if s is not None]), clicks)
        recommendations = bundle.top_k_rows(batch, ks, excludes)
        changed = [blobs[row] is None or bool(unfolded[row]) for row in range(rows)]
        encoded = bundle.encode_sessions(batch) if any(changed) else [b""] * rows
        return [Ranked(encoded[row] if changed[row] else None, recommendations[row],
                       user_writes[row]) for row in range(rows)]

    def _rank_isolated(self, bundle: ModelBundle, blobs: Sequence[bytes | None],
                       unfolded: Sequence[Sequence[str]], users: Sequence[UserView | None],
                       ks: Sequence[int], excludes: Sequence[Collection[int]]
                       ) -> list[Ranked | BaseException]:
        """``_rank_rows`` for the batch; should it fail, row by row, so one row's failure
        never fails its batch-mates."""
        try:
            return list(self._rank_rows(bundle, blobs, unfolded, users, ks, excludes))
        except Exception:
            if len(blobs) == 1:
                raise
            log.warning("%s: a batch of %d failed; ranking its rows one by one", bundle.key,
                        len(blobs), exc_info=True)
        results: list[Ranked | BaseException] = []
        for row in range(len(blobs)):
            try:
                results += self._rank_rows(bundle, blobs[row:row + 1], unfolded[row:row + 1],
                                           users[row:row + 1], ks[row:row + 1],
                                           excludes[row:row + 1])
            except Exception as exc:
                log.exception("%s: ranking one session failed", bundle.key)
                results.append(exc)
        return results

    # ---- click path ---------------------------------------------------------------------
    async def record_events(self, session_id: str, events: Sequence[EventRecord], *,
                            user_id: str | None, model: str | None, k: int,
                            exclude_seen: bool) -> Outcome:
        bundle = self.bundle(model, user_id or session_id)
        unknown = list(dict.fromkeys(event.item_id for event in events
                                     if not bundle.item_index(event.item_id)))
        for _ in range(self.MAX_ROLLOVER_ATTEMPTS):
            try:
                outcome = await self.clicks.submit(ClickJob(session_id, events, user_id,
                                                            bundle, k, exclude_seen))
                outcome.unknown_items = unknown
                return outcome
            except CloseFirst as close:
                # Idle longer than the timeout (or a closed generation whose fold into its
                # user did not complete): close that generation, then the retry starts the
                # next one (nothing was written by the refused ingest).
                if close.gen is None:
                    continue
                if close.rollover:
                    self.metrics.inc("nextclick_session_rollovers_total")
                await self.close_session(session_id, expected_gen=close.gen,
                                         expected_user=None)
        raise ApiError(409, "session_busy", "the session changed repeatedly while "
                       "recording; retry the request", headers={"Retry-After": "1"})

    async def _process_clicks(self, jobs: list[ClickJob]) -> list[Outcome | BaseException]:
        """One batch: ingest every job (with the previous batch's state writes) in one
        round trip, attach sessions that start for a user, rank per model version in a
        worker thread, queue the new states for the next round trip."""
        writes, self._pending_writes = self._pending_writes, []
        earlier = list(self._writes_in_flight)
        landed = self._writes_sent() if writes else None
        try:
            if earlier:
                # Writes another round trip carries must land before these clicks are
                # ingested: a click attributed to a list needs that list remembered.
                await asyncio.gather(*earlier, return_exceptions=True)
            calls = writes + [self.store.ingest_call(job.session_id, job.events, job.user_id,
                                                     job.bundle.key, job.exclude_seen)
                              for job in jobs]
            replies = await self.store.run(calls)
        finally:
            if landed is not None:
                self._writes_landed(landed)
        for job, reply in zip(jobs, replies[len(writes):], strict=True):
            job.result = ingest_result(reply)
        await self._attach([job for job in jobs
                            if job.result is not None and job.result.status == "attach"])
        outcomes: list[Outcome | BaseException | None] = [None] * len(jobs)
        live: list[int] = []
        for index, job in enumerate(jobs):
            result = job.result
            assert result is not None
            if result.status == "ok":
                self.metrics.inc("nextclick_clicks_accepted_total", result.accepted)
                self.metrics.inc("nextclick_duplicate_events_total", result.duplicates)
                if result.gen == 0:  # only duplicates of a session that no longer exists
                    outcomes[index] = Outcome(job.session_id, result.user_id, 0,
                                              result.duplicates, job.bundle.popular(job.k),
                                              job.bundle.name, job.bundle.version, "popular")
                else:
                    live.append(index)
            else:
                outcomes[index] = self._refusal(job, result)
        failed = await self._prepare_users([jobs[index] for index in live])
        ready = [index for index in live if id(jobs[index]) not in failed]
        for index in live:
            if id(jobs[index]) in failed:
                outcomes[index] = failed[id(jobs[index])]
        by_model: dict[str, list[int]] = {}
        for index in ready:
            by_model.setdefault(jobs[index].bundle.key, []).append(index)
        groups = list(by_model.values())
        ranked_groups = await asyncio.gather(*(self._rank_group([jobs[i] for i in group])
                                               for group in groups))
        for group, ranked in zip(groups, ranked_groups, strict=True):
            for index, rank in zip(group, ranked, strict=True):
                job = jobs[index]
                if isinstance(rank, BaseException):
                    outcomes[index] = rank
                    continue
                assert job.result is not None
                outcome = Outcome(
                    job.session_id, job.result.user_id, job.result.accepted,
                    job.result.duplicates, rank.recommendations, job.bundle.name,
                    job.bundle.version, "session")
                self._queue_writes(job, rank, outcome)
                outcomes[index] = outcome
        # Counting changes no answer: off the batch's critical path (and no task at all for
        # the common batch whose clicks name no list).
        if any(job.result is not None and job.result.attributions for job in jobs):
            task = asyncio.get_running_loop().create_task(self._attribute(jobs))
            self._write_tasks.add(task)
            task.add_done_callback(self._write_tasks.discard)
        return [outcome if outcome is not None else RuntimeError("job not processed")
                for outcome in outcomes]

    async def _attribute(self, jobs: list[ClickJob]) -> None:
        """Count each attributed click; a list the session did not know (one answered for
        the user before the session's first click) is looked up on the user's slot."""
        lookups = []
        for job in jobs:
            result = job.result
            if result is None or result.status != "ok" or not result.attributions:
                continue
            named = [event for event in job.events if event.recommendation_id]
            unknown = [(event.recommendation_id or "", event.item_id)
                       for event, (_, position) in zip(named, result.attributions,
                                                       strict=False) if position < 0]
            if unknown and result.user_id is not None:
                lookups.append((job, result.user_id, unknown))
            self._count_attributions([pair for pair in result.attributions if pair[1] >= 0])
        if not lookups:
            return
        found = await asyncio.gather(*(self.store.attribute_user_lists(user, job.session_id,
                                                                        clicks)
                                       for job, user, clicks in lookups),
                                     return_exceptions=True)
        for pairs in found:
            if isinstance(pairs, BaseException):
                log.warning("attributing clicks to a user's list failed: %s", pairs)
                continue
            self._count_attributions(pairs)

    @staticmethod
    def _refusal(job: ClickJob, result: IngestResult) -> BaseException:
        """What a refused ingest means for its request (nothing was written)."""
        if result.status in ("rollover", "unfolded"):
            return CloseFirst(result.gen, result.status == "rollover")
        if result.status == "attach":  # another request opened the generation meanwhile
            return CloseFirst(None, False)
        if result.status == "conflict":
            return ApiError(409, "session_user_conflict", f"session {job.session_id!r} "
                            "belongs to another user; use a new session id for this user")
        if result.status == "payload_mismatch":
            return ApiError(409, "event_id_reused", f"event_id {result.user_id!r} was "
                            "already accepted with another item, type or timestamp; event "
                            "ids are idempotency keys: send a new one for a new event",
                            {"event_id": result.user_id})
        return RuntimeError(f"ingest answered {result.status!r}")

    async def _attach(self, jobs: list[ClickJob]) -> None:
        """Sessions that open a generation for a user: attach each on its user's slot (and
        index it for the idle sweeper), then ingest again, two pipelined round trips for
        all of them. Should the session have been taken by another user in between, the
        attach is undone, so the refused request leaves nothing behind."""
        if not jobs:
            return
        calls: list[Call] = []
        for job in jobs:
            assert job.result is not None and job.result.user_id is not None
            newest = max(event.timestamp for event in job.events)
            calls += self.store.attach_calls(job.result.user_id, job.session_id,
                                             job.result.gen, newest, job.bundle.key)
        replies = await self.store.run(calls)
        attached: list[tuple[str, int, UserView]] = []
        for position, job in enumerate(jobs):
            assert job.result is not None and job.result.user_id is not None
            view = user_view(replies[2 * position])
            attached.append((job.result.user_id, job.result.gen, view))
            job.user = view
        # Each ingest runs before the check that its attachment still stands (an erasure
        # of the user may have run since the attach).
        groups = [[self.store.ingest_call(job.session_id, job.events, job.user_id,
                                          job.bundle.key, job.exclude_seen, attached_gen=gen),
                   self.store.attached_call(user, job.session_id, gen)]
                  for job, (user, gen, _) in zip(jobs, attached, strict=True)]
        replies = await self.store.run_groups(groups)
        undo: list[Call] = []
        for (ingested, still_attached), job, (user, gen, view) in zip(replies, jobs, attached,
                                                                      strict=True):
            job.result = ingest_result(ingested)
            if job.result.status != "ok":
                undo.append(self.store.detach_call(user, job.session_id, gen,
                                                   view.previous_open))
                job.user = None
            elif not still_attached:
                # Erased between the attach and the ingest: this click came first, so the
                # erasure takes it along (the session goes; the user stays erased).
                undo.append(self.store.delete_session_call(job.session_id, user))
                job.user = None
            else:
                job.attached_previous = view.previous_open
        await self.store.run(undo)

    async def _prepare_users(self, jobs: list[ClickJob]) -> dict[int, BaseException]:
        """Close the previous sessions of users who moved on to a new one, and read the
        user states the ranking needs. Returns the jobs (by id) that failed here."""
        failed: dict[int, BaseException] = {}
        moved_on = [job for job in jobs if job.attached_previous is not None]
        if moved_on:
            # The user moved on to this session: the previous one is over, and the new
            # session's start state must include it.
            closes = await asyncio.gather(
                *(self.close_session(str(job.attached_previous), expected_gen=None,
                                     expected_user=job.result.user_id if job.result else None)
                  for job in moved_on), return_exceptions=True)
            for job, closed in zip(moved_on, closes, strict=True):
                if isinstance(closed, BaseException):
                    failed[id(job)] = closed
                job.user = None  # its history changed: re-read below if it is needed
        rereads = [job for job in jobs if id(job) not in failed and job.result is not None
                   and job.result.state_blob is None and job.bundle.has_user_state
                   and job.result.user_id is not None and job.user is None]
        if rereads:
            views = await asyncio.gather(
                *(self.store.read_user(str(job.result.user_id), job.bundle.key)
                  for job in rereads if job.result is not None), return_exceptions=True)
            for job, view in zip(rereads, views, strict=True):
                if isinstance(view, BaseException):
                    failed[id(job)] = view
                else:
                    job.user = view
        return failed

    async def _rank_group(self, jobs: list[ClickJob]) -> list[Ranked | BaseException]:
        """Rank the jobs of one model version in one worker-thread call."""
        bundle = jobs[0].bundle
        blobs, unfolded, users, ks, excludes = [], [], [], [], []
        for job in jobs:
            result = job.result
            assert result is not None
            blobs.append(result.state_blob)
            unfolded.append([click.item_id for click in result.unfolded])
            users.append(job.user if result.state_blob is None and bundle.has_user_state
                         else None)
            ks.append(job.k)
            excludes.append(self._indices(bundle, [c.item_id for c in result.clicks])
                            if job.exclude_seen else set())
        return await self._in_thread(self._rank_isolated, bundle, blobs, unfolded, users, ks,
                                     excludes)

    def _count_attributions(self, attributions: list[tuple[str, int]]) -> None:
        for model_key, position in attributions:
            self.metrics.inc_labelled("nextclick_attributed_clicks_total", {
                "model": model_key or "unknown",
                "position": str(position) if position >= 0 else "unknown"})

    def _queue_writes(self, job: ClickJob, ranked: Ranked, outcome: Outcome) -> None:
        """The job's cached-state writes (compare-and-set) and the list it answers (for
        attribution), sent with the next round trip."""
        result = job.result
        assert result is not None
        self._pending_writes.append(self.store.remember_served_call(
            job.session_id, outcome.recommendation_id, job.bundle.key,
            [item for item, _ in outcome.recommendations]))
        self.metrics.inc_labelled("nextclick_recommendations_served_total",
                                  {"model": job.bundle.key})
        if ranked.session_blob is not None:
            self._pending_writes.append(self.store.session_state_call(
                job.session_id, result.gen, job.bundle.key, ranked.session_blob, result.total))
        if ranked.user_write is not None and result.user_id is not None:
            self._pending_writes.append(self.store.user_state_call(
                result.user_id, job.bundle.key, *ranked.user_write))

    def _writes_sent(self) -> asyncio.Future[None]:
        """Mark a round trip that carries queued writes as under way."""
        landed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes_in_flight.add(landed)
        return landed

    def _writes_landed(self, landed: asyncio.Future[None]) -> None:
        self._writes_in_flight.discard(landed)
        if not landed.done():
            landed.set_result(None)

    def _flush_writes_soon(self) -> None:
        """Nothing else is waiting: send the pending writes on their own."""
        if not self._pending_writes:
            return
        writes, self._pending_writes = self._pending_writes, []
        landed = self._writes_sent()
        task = asyncio.get_running_loop().create_task(self._send_writes(writes, landed))
        self._write_tasks.add(task)
        task.add_done_callback(self._write_tasks.discard)

    async def _send_writes(self, writes: list[Call], landed: asyncio.Future[None]) -> None:
        try:
            await self.store.run(writes)
        except Exception as exc:  # caches and lists: the next click rebuilds what is lost
            log.warning("dropping %d queued writes: %s", len(writes), exc)
        finally:
            self._writes_landed(landed)

    async def drain(self) -> None:
        """Finish queued clicks and flush their state writes (shutdown)."""
        await self.clicks.drain()
        self._flush_writes_soon()
        if self._write_tasks:
            await asyncio.gather(*list(self._write_tasks), return_exceptions=True)

    # ---- recommendations without a click ----------------------------------------------------
    async def recommend(self, *, session_id: str | None, user_id: str | None,
                        model: str | None, k: int, exclude_ids: Collection[str],
                        exclude_seen: bool) -> Outcome:
        """Top-K without recording anything: from the open session's state; for a user
        alone (or a closed session's user) the personalised start-of-session list; for
        neither, the popular items."""
        bundle = self.bundle(model, user_id or session_id)
        exclude = self._indices(bundle, exclude_ids)
        if session_id is not None:
            view = await self.store.peek_session(session_id, bundle.key, exclude_seen)
            if view is not None and view.status == "open":
                owner = view.user_id
                user: UserView | None = None
                if view.state_blob is None and bundle.has_user_state and owner is not None:
                    user = await self.store.read_user(owner, bundle.key)
                if exclude_seen:
                    exclude |= self._indices(bundle, [c.item_id for c in view.clicks])
                ranked = (await self._in_thread(
                    self._rank_rows, bundle, [view.state_blob],
                    [[click.item_id for click in view.unfolded]], [user], [k], [exclude]))[0]
                outcome = Outcome(session_id, owner, 0, 0, ranked.recommendations,
                                  bundle.name, bundle.version, "session")
                writes = [self.store.remember_served_call(
                    session_id, outcome.recommendation_id, bundle.key,
                    [item for item, _ in outcome.recommendations])]
                if ranked.session_blob is not None:
                    writes.append(self.store.session_state_call(
                        session_id, view.gen, bundle.key, ranked.session_blob, view.total))
                if ranked.user_write is not None and owner is not None:
                    writes.append(self.store.user_state_call(owner, bundle.key,
                                                             *ranked.user_write))
                await self.store.run(writes)
                self.metrics.inc_labelled("nextclick_recommendations_served_total",
                                          {"model": bundle.key})
                return outcome
            if view is None:
                raise ApiError(404, "unknown_session", f"no session {session_id!r}: leave "
                               "session_id out for a list before the session's first click")
            if user_id is None:
                user_id = view.user_id
        if user_id is not None and bundle.has_user_state:
            user = await self.store.read_user(user_id, bundle.key)
            ranked = (await self._in_thread(self._rank_rows, bundle, [None], [[]], [user],
                                            [k], [exclude]))[0]
            # "user" only when the list comes from the user's history; a user the service
            # has not seen gets the model's start-of-session list for anyone
            known = user.exists and (user.sessions_total > 0 or user.state_blob is not None)
            outcome = Outcome(session_id, user_id, 0, 0, ranked.recommendations, bundle.name,
                              bundle.version, "user" if known else "start")
            writes = [self.store.remember_user_served_call(
                user_id, outcome.recommendation_id, bundle.key,
                [item for item, _ in outcome.recommendations], session_id)]
            if ranked.user_write is not None:
                writes.append(self.store.user_state_call(user_id, bundle.key,
                                                         *ranked.user_write))
            await self.store.run(writes)
            self.metrics.inc_labelled("nextclick_recommendations_served_total",
                                      {"model": bundle.key})
            return outcome
        return Outcome(session_id, user_id, 0, 0, bundle.popular(k, set(exclude_ids)),
                       bundle.name, bundle.version, "popular")

    # ---- closing ------------------------------------------------------------------------
    async def close_session(self, session_id: str, *, expected_gen: int | None,
                            expected_user: str | None, idle_cutoff: float | None = None
                            ) -> SealedSession | str | None:
        """Seal the session generation (session slot), fold its clicks into its user
        exactly once (user slot), then mark it folded (session slot). Safe to race and to
        repeat: a second closer gets the same sealed generation and its fold is a no-op
        (the generation is no longer attached to the user); a closer that died midway is
        completed by the next one, since the session id cannot start a new generation
        before its last one is marked folded. With ``idle_cutoff`` (the sweeper) an open
        session is closed only if it had no click since then ("active" otherwise). The
        user's model states catch up lazily, on the user's next session start or
        personalised request."""
        sealed = await self.store.seal_session(session_id, expected_gen=expected_gen,
                                               expected_user=expected_user, now=time.time(),
                                               idle_cutoff=idle_cutoff)
        if not isinstance(sealed, SealedSession):
            return sealed
        if sealed.was_open:
            self.metrics.inc("nextclick_sessions_closed_total")
        if sealed.user_id is not None and not sealed.folded:
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

    async def sweep_idle(self, owner: str) -> int:
        """One round of the idle-session sweeper: close and fold, exactly once, the
        sessions with a user that had no click for ``session_idle_timeout`` (server time),
        long before their keys could expire. Shards are leased, so several processes (and
        replicas) share the work. Returns the number of sessions closed."""
        s = self.settings
        now = time.time()
        cutoff = now - s.session_idle_timeout
        closed = 0
        for shard in range(s.sweep_shards):
            candidates = await self.store.sweep_candidates(
                shard, owner, int(s.sweep_interval * 2000), cutoff, s.sweep_batch)
            for session_id in candidates or []:
                sealed = await self.close_session(session_id, expected_gen=None,
                                                  expected_user=None, idle_cutoff=cutoff)
                if sealed == "active":
                    record = await self.store.get_session(session_id)
                    touched = record.touched_at if record is not None else None
                    await self.store.reindex(session_id, touched)
                    continue
                await self.store.reindex(session_id, None)
                if isinstance(sealed, SealedSession) and sealed.was_open:
                    closed += 1
        if closed:
            self.metrics.inc("nextclick_sessions_swept_total", closed)
        return closed

    async def get_session(self, session_id: str) -> SessionRecord:
        record = await self.store.get_session(session_id)
        if record is None:
            raise ApiError(404, "unknown_session", f"no session {session_id!r}")
        return record

    async def delete_user(self, user_id: str) -> int:
        return await self.store.delete_user(user_id)
