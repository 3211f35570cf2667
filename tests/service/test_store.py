"""The Redis state store and its Lua scripts: the state contract, run against a real
single Redis and against a real 3-master Redis Cluster (``redis+cluster://`` URL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis

from service.settings import Settings
from service.store import (
    EventRecord,
    IngestResult,
    SealedSession,
    StateStore,
    UserView,
    ingest_result,
    is_cluster_url,
)

T = TypeVar("T")
T0 = 1_700_000_000.0
FIELD = "m@1"


@pytest.fixture(params=["single", "cluster"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Store tests need Redis only (no model bundles); each runs on both deployments."""
    fixture = "redis_url" if request.param == "single" else "cluster_url"
    return Settings(redis_url=request.getfixturevalue(fixture))


def raw_client(settings: Settings) -> Any:
    """A plain synchronous client of the same deployment, for checks behind the store."""
    assert settings.redis_url is not None
    if is_cluster_url(settings.redis_url):
        return redis.RedisCluster.from_url(
            settings.redis_url.replace("redis+cluster://", "redis://"))
    return redis.Redis.from_url(settings.redis_url)


def with_store(settings: Settings, body: Callable[[StateStore], Awaitable[T]],
               **overrides: Any) -> T:
    async def main() -> T:
        assert settings.redis_url is not None
        store = StateStore.from_url(settings.redis_url,
                                    settings.model_copy(update=overrides))
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def events(*items: str, start: float = T0, ids: bool = False) -> list[EventRecord]:
    return [EventRecord(item_id=item, timestamp=start + offset,
                        event_id=f"e-{item}-{start + offset}" if ids else None)
            for offset, item in enumerate(items)]


async def click_path(store: StateStore, session_id: str, events: list[EventRecord], *,
                 user_id: str | None, model_key: str, want_all: bool
                 ) -> tuple[IngestResult, UserView | None]:
    """What the click path does with the store for one request: ingest, and when the
    session opens a generation for a user, attach it on the user's slot and ingest again."""
    result = await store.ingest(session_id, events, user_id=user_id, model_key=model_key,
                                want_all=want_all)
    if result.status != "attach" or result.user_id is None:
        return result, None
    view = await store.attach_user(result.user_id, session_id, result.gen,
                                   max(e.timestamp for e in events), model_key)
    return await store.ingest(session_id, events, user_id=user_id, model_key=model_key,
                              want_all=want_all, attached_gen=result.gen), view


async def fold(store: StateStore, user_id: str, session_id: str, gen: int, items: list[str],
               now: float) -> bool:
    """Fold a generation the way it happens in service: it was attached when it opened."""
    await store.attach_user(user_id, session_id, gen, now, FIELD)
    return await store.fold_into_user(user_id, session_id, gen, items, now)


def test_ingest_appends_and_reports_unfolded_clicks(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        first, user = await click_path(store, "s", events("a", "b"), user_id="u", model_key=FIELD,
                                         want_all=False)
        assert user is not None and user.previous_open is None
        assert (first.status, first.gen, first.accepted, first.total) == ("ok", 1, 2, 2)
        assert first.new_generation and first.state_blob is None
        assert [c.item_id for c in first.unfolded] == ["a", "b"]
        assert await store.save_states(session=("s", 1, FIELD, b"state-2", 2)) == [True]
        second, _ = await click_path(store, "s", events("c", start=T0 + 10), user_id=None,
                                       model_key=FIELD, want_all=True)
        assert second.user_id == "u" and not second.new_generation
        assert (second.state_blob, second.state_folded) == (b"state-2", 2)
        assert [c.item_id for c in second.unfolded] == ["c"]
        assert [c.item_id for c in second.clicks] == ["a", "b", "c"]
        assert second.last_event_at == T0 + 10 and second.started_at == T0

    with_store(settings, body)


def test_compare_and_set_never_goes_backwards(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a", "b", "c"), user_id=None, model_key=FIELD,
                           want_all=False)
        assert await store.save_states(session=("s", 1, FIELD, b"three", 3)) == [True]
        assert await store.save_states(session=("s", 1, FIELD, b"two", 2)) == [False]
        assert await store.save_states(session=("s", 1, FIELD, b"three-again", 3)) == [False]
        assert await store.save_states(session=("s", 7, FIELD, b"other-gen", 9)) == [False]

    with_store(settings, body)
    db = raw_client(settings)
    assert db.hget("nc:{s:s}:state", FIELD) == b"three"
    db.close()


def test_idle_gap_asks_for_rollover_and_writes_nothing(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a"), user_id=None, model_key=FIELD, want_all=False)
        late = events("b", start=T0 + settings.session_idle_timeout + 1, ids=True)
        refused, _ = await click_path(store, "s", late, user_id=None, model_key=FIELD,
                                        want_all=False)
        assert (refused.status, refused.gen) == ("rollover", 1)
        sealed = await store.seal_session("s", expected_gen=1, expected_user=None, now=T0)
        assert isinstance(sealed, SealedSession) and sealed.was_open
        assert [c.item_id for c in sealed.clicks] == ["a"]
        # The refused event's id was not consumed: the retry records it.
        retried, _ = await click_path(store, "s", late, user_id=None, model_key=FIELD,
                                        want_all=False)
        assert (retried.status, retried.gen, retried.accepted) == ("ok", 2, 1)
        assert await store.seal_session("s", expected_gen=1, expected_user=None,
                                        now=T0) == "stale"

    with_store(settings, body)


def test_event_ids_are_remembered_within_ttl_and_count(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        first, _ = await click_path(store, "s", events("a", "b", "c", ids=True), user_id=None,
                                      model_key=FIELD, want_all=False)
        assert (first.accepted, first.duplicates) == (3, 0)
        again, _ = await click_path(store, "s", events("a", "b", "c", ids=True), user_id=None,
                                      model_key=FIELD, want_all=False)
        # Only the newest two ids are remembered: "a"'s id was forgotten, so it is new.
        assert (again.accepted, again.duplicates, again.total) == (1, 2, 4)
        ids = await store.client.zrange("nc:{s:s}:events", 0, -1)
        assert len(ids) == 2
        ttl = await store.client.ttl("nc:{s:s}:events")
        assert 0 < ttl <= 60

    with_store(settings, body, max_event_ids=2, event_id_ttl=60)


def test_event_ids_expire_after_their_ttl(settings: Settings) -> None:
    clock = [T0]

    async def body(store: StateStore) -> None:
        store.clock = lambda: clock[0]
        await click_path(store, "s", events("a", ids=True), user_id=None, model_key=FIELD,
                           want_all=False)
        clock[0] += 30
        dup, _ = await click_path(store, "s", events("a", ids=True), user_id=None,
                                    model_key=FIELD, want_all=False)
        assert dup.duplicates == 1
        clock[0] += 31  # past the 60 s TTL: the id is new again (at-least-once beyond it)
        late, _ = await click_path(store, "s", events("a", ids=True), user_id=None,
                                     model_key=FIELD, want_all=False)
        assert (late.accepted, late.duplicates) == (1, 0)

    with_store(settings, body, event_id_ttl=60)


def test_session_and_user_keys_expire_after_their_configured_ttls(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a", ids=True), user_id="u", model_key=FIELD,
                           want_all=False)
        await store.save_states(session=("s", 1, FIELD, b"x", 1))
        await fold(store, "u", "old", 1, ["z"], T0)
        await store.save_states(user=("u", FIELD, b"y", 1))
        for part in ("meta", "clicks", "state"):
            assert 3000 < await store.client.ttl(f"nc:{{s:s}}:{part}") <= 3600
        assert 0 < await store.client.ttl("nc:{s:s}:events") <= 600
        for part in ("meta", "history", "closed", "state"):
            assert 80_000 < await store.client.ttl(f"nc:{{u:u}}:{part}") <= 86_400

    with_store(settings, body, session_ttl=3600, user_ttl=86_400, event_id_ttl=600)


def test_next_generation_waits_for_the_fold_of_the_last(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a"), user_id="u", model_key=FIELD, want_all=False)
        sealed = await store.seal_session("s", expected_gen=None, expected_user="u", now=T0)
        assert isinstance(sealed, SealedSession)
        refused, _ = await click_path(store, "s", events("b", start=T0 + 5, ids=True),
                                        user_id="u", model_key=FIELD, want_all=False)
        assert (refused.status, refused.gen) == ("unfolded", 1)
        record = await store.get_session("s")
        assert record is not None and [c.item_id for c in record.clicks] == ["a"]
        assert await store.fold_into_user("u", "s", 1, ["a"], T0)
        assert await store.mark_folded("s", 1)
        assert not await store.mark_folded("s", 2)  # no such generation
        resumed, _ = await click_path(store, "s", events("b", start=T0 + 5, ids=True),
                                        user_id="u", model_key=FIELD, want_all=False)
        assert (resumed.status, resumed.gen, resumed.accepted) == ("ok", 2, 1)

    with_store(settings, body)


def test_conflicting_user_writes_nothing(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a"), user_id="alice", model_key=FIELD, want_all=False)
        result, _ = await click_path(store, "s", events("b", ids=True), user_id="bob",
                                       model_key=FIELD, want_all=False)
        assert (result.status, result.user_id) == ("conflict", "alice")
        record = await store.get_session("s")
        assert record is not None and [c.item_id for c in record.clicks] == ["a"]

    with_store(settings, body)


def test_click_list_is_bounded_and_a_far_behind_cache_is_rebuilt(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a", "b"), user_id=None, model_key=FIELD,
                           want_all=False)
        await store.save_states(session=("s", 1, FIELD, b"two", 2))
        result, _ = await click_path(store, "s", events("c", "d", "e", "f", start=T0 + 5),
                                       user_id=None, model_key=FIELD, want_all=False)
        assert result.total == 6
        # 4 clicks missed but only 3 held: rebuild from the held clicks.
        assert result.state_blob is None and result.state_folded == 0
        assert [c.item_id for c in result.unfolded] == ["d", "e", "f"]

    with_store(settings, body, max_session_clicks=3)


def test_fold_into_user_is_exactly_once_under_races(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a", "b"), user_id="u", model_key=FIELD,
                           want_all=False)
        folds = await asyncio.gather(*(store.fold_into_user("u", "s", 1, ["a", "b"], T0)
                                       for _ in range(10)))
        assert sum(folds) == 1
        total, history = await store.user_history("u")
        assert (total, history) == (1, [["a", "b"]])
        view = await store.read_user("u", FIELD)
        assert view.previous_open is None  # the fold cleared the open-session pointer
        assert view.unfolded_history == [["a", "b"]] and view.state_blob is None
        # User state CAS: cannot claim more sessions than happened, nor go backwards.
        assert await store.save_states(user=("u", FIELD, b"x", 2)) == [False]
        assert await store.save_states(user=("u", FIELD, b"one", 1)) == [True]
        assert await store.save_states(user=("u", FIELD, b"zero", 0)) == [False]
        view = await store.read_user("u", FIELD)
        assert (view.state_blob, view.state_folded, view.unfolded_history) == (b"one", 1, [])

    with_store(settings, body)


def test_user_history_is_bounded(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        for index in range(4):
            await fold(store, "u", f"s{index}", 1, [f"i{index}"], T0 + index)
        total, history = await store.user_history("u")
        assert total == 4 and history == [["i2"], ["i3"]]
        view = await store.read_user("u", FIELD)
        assert view.approximate and view.unfolded_history == [["i2"], ["i3"]]

    with_store(settings, body, max_user_history=2)


def test_erased_user_is_not_recreated_by_a_late_write(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a"), user_id="u", model_key=FIELD, want_all=False)
        await store.fold_into_user("u", "s", 1, ["a"], T0)
        assert await store.delete_user("u") == 1
        assert await store.save_states(user=("u", FIELD, b"late", 1)) == [False]
        assert await store.get_session("s") is None
        assert await store.user_history("u") == (0, [])

    with_store(settings, body)


def test_scripts_reload_after_the_server_forgets_them(settings: Settings) -> None:
    async def body(store: StateStore) -> None:
        await click_path(store, "s", events("a"), user_id="u", model_key=FIELD,
                         want_all=False)
        db = raw_client(settings)
        db.script_flush()
        db.close()
        # a pipelined round trip of two scripts the server no longer knows: each runs once
        replies = await store.run([
            store.ingest_call("s", events("b", start=T0 + 1), "u", FIELD, False),
            store.ingest_call("t", events("c", start=T0 + 1), None, FIELD, False)])
        assert [ingest_result(reply).total for reply in replies] == [2, 1]
        record = await store.get_session("s")
        assert record is not None and [c.item_id for c in record.clicks] == ["a", "b"]

    with_store(settings, body)


def test_cluster_url_detection() -> None:
    assert is_cluster_url("redis+cluster://h:7000")
    assert is_cluster_url("redis://h:7000/0?cluster=true")
    assert not is_cluster_url("redis://h:6379/0")
    assert not is_cluster_url("rediss://h:6379/0?ssl_cert_reqs=none")
