"""Sessionization, filters and every split protocol on tiny hand-made event frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from training.data.dataset import PreparedDataset
from training.data.filters import apply_filters
from training.data.pipeline import PrepareOptions, prepare_dataset
from training.data.readers import EVENT_SCHEMA, read_events
from training.data.sessionize import order_sessions, remove_repeats, sessionize


def events(rows: list[tuple[str | None, str | None, str, float]]) -> pl.DataFrame:
    """(user, session, item, time) rows -> canonical events."""
    return pl.DataFrame(
        [(u, s, i, t, "click") for u, s, i, t in rows],
        schema=list(EVENT_SCHEMA), orient="row").cast(EVENT_SCHEMA)  # type: ignore[arg-type]


def user_log(n_users: int = 6, sessions: int = 4, length: int = 3, items: int = 6,
             start: float = 1_600_000_000.0) -> pl.DataFrame:
    """Every user clicks through the same small catalog; sessions a day apart."""
    rows = []
    for u in range(n_users):
        clock = start + u * 100.0
        for s in range(sessions):
            for k in range(length):
                rows.append((f"u{u}", None, f"i{(u + s + k) % items}", clock + 60.0 * k))
            clock += 86400.0
    return events(rows)


# ---- sessionization ----------------------------------------------------------------
def test_gap_of_exactly_30_minutes_stays_in_the_session() -> None:
    frame = events([("a", None, "x", 0.0), ("a", None, "y", 1800.0),
                    ("a", None, "z", 3600.001), ("b", None, "x", 1000.0),
                    ("b", None, "y", 1100.0)])
    out = sessionize(frame, 1800.0)
    sessions = out.group_by("session_id").agg(pl.col("user_id").first(), pl.len())
    assert sessions.height == 3  # a: {x, y}, {z}; b: {x, y} -- per user
    a = out.filter(pl.col("user_id") == "a")["session_id"].to_list()
    assert a[0] == a[1] != a[2]
    b = out.filter(pl.col("user_id") == "b")["session_id"].unique().to_list()
    assert len(b) == 1 and b[0] not in a


def test_given_session_ids_are_kept_and_anonymous_rows_need_them() -> None:
    frame = events([("a", "s1", "x", 0.0), ("a", "s1", "y", 99999.0)])
    assert sessionize(frame)["session_id"].to_list() == ["s1", "s1"]
    with pytest.raises(ValueError, match="neither a session id nor a user id"):
        sessionize(events([(None, None, "x", 0.0)]))


def test_remove_repeats_only_drops_immediate_repeats() -> None:
    frame = order_sessions(sessionize(events(
        [("a", "s", "x", 0.0), ("a", "s", "x", 1.0), ("a", "s", "y", 2.0),
         ("a", "s", "x", 3.0)])))
    assert remove_repeats(frame)["item_id"].to_list() == ["x", "y", "x"]


def test_filters_item_support_then_session_length_iteratively() -> None:
    rows = [("u", "s1", "pop", 0.0), ("u", "s1", "rare", 1.0),   # s1 -> [pop] after items
            ("u", "s2", "pop", 10.0), ("u", "s2", "mid", 11.0),
            ("v", "s3", "pop", 20.0), ("v", "s3", "pop", 21.0),
            ("w", "s4", "pop", 30.0), ("w", "s4", "mid", 31.0), ("w", "s4", "pop", 32.0),
            ("w", "s5", "pop", 40.0), ("w", "s5", "pop", 41.0)]
    frame = order_sessions(sessionize(events(rows)))
    once, report = apply_filters(frame, 2, 2, 1, iterative=False)
    assert set(once["session_id"]) == {"s2", "s3", "s4", "s5"}
    assert report.removed == {"rare_item_events": 1, "short_session_events": 1,
                              "light_user_events": 0}
    # users need 2 sessions: u (1 left) and v go; then "mid" has support 1, which only
    # the iterative filter notices
    one_pass, _ = apply_filters(frame, 2, 2, 2, iterative=False)
    assert set(one_pass["user_id"]) == {"w"} and "mid" in set(one_pass["item_id"])
    stable, report = apply_filters(frame, 2, 2, 2, iterative=True)
    assert set(stable["user_id"]) == {"w"} and "mid" not in set(stable["item_id"])
    assert report.rounds >= 2


# ---- protocols ---------------------------------------------------------------------
def test_last_session_protocol() -> None:
    data = prepare_dataset(user_log(), PrepareOptions(protocol="last-session",
                                                      min_item_support=1), fmt="test")
    train, test = data.train, data.test
    # each user's last session is the test set, and it is later than all their training
    for user in range(1, data.n_users + 1):
        user_test = test.filter(pl.col("user") == user)
        user_train = train.filter(pl.col("user") == user)
        assert user_test["session"].n_unique() == 1
        assert user_test["timestamp"].min() > user_train["timestamp"].max()
        # valid = the last training session
        last_train = user_train.sort("timestamp")["session"][-1]
        assert set(user_train.filter(pl.col("valid"))["session"]) == {last_train}
    assert set(test["item"]) <= set(train["item"])
    first_clicks = test.group_by("session").agg(pl.col("target").first())
    assert not first_clicks["target"].any()
    assert int(test["target"].sum()) == test.height - test["session"].n_unique()
    assert data.stats["counts"]["test"]["sessions"] == data.n_users


def test_last_session_drops_unseen_items_and_short_sessions() -> None:
    rows = [("a", "a1", "x", 0.0), ("a", "a1", "y", 1.0),
            ("a", "a2", "x", 100.0), ("a", "a2", "new", 101.0),     # -> [x]: dropped
            ("b", "b1", "x", 0.0), ("b", "b1", "y", 1.0),
            ("b", "b2", "y", 100.0), ("b", "b2", "new2", 101.0), ("b", "b2", "x", 102.0)]
    data = prepare_dataset(events(rows), PrepareOptions(protocol="last-session",
                                                        min_item_support=1), fmt="test")
    assert data.stats["counts"]["test"]["sessions"] == 1
    assert set(data.items) == {"x", "y"}
    assert data.test["item"].to_list() == [data.items.index("y") + 1, data.items.index("x") + 1]


def test_time_protocol_splits_on_session_end() -> None:
    day = 86400.0
    rows = []
    for s in range(10):  # one session a day, same two items
        rows += [(None, f"s{s}", "x", s * day), (None, f"s{s}", "y", s * day + 60)]
    # a session that starts before the cutoff but ends after it is test (GRU4Rec)
    rows += [(None, "late", "x", 8.5 * day), (None, "late", "y", 9 * day + 120)]
    data = prepare_dataset(events(rows), PrepareOptions(protocol="time", min_item_support=1,
                                                        test_days=1.0), fmt="test")
    test_start = data.test.group_by("session").agg(pl.col("timestamp").max())
    assert data.stats["counts"]["test"]["sessions"] == 2
    assert test_start["timestamp"].min() >= 9 * day + 120 - day
    assert data.train["timestamp"].max() < 9 * day
    valid = data.train.filter(pl.col("valid"))
    # the last day of train: s8, and s7, which ends exactly one day before s8 (inclusive)
    assert valid["session"].n_unique() == 2
    assert valid["timestamp"].min() == 7 * day


def test_given_protocol_prefix_label_targets_and_valid_fraction() -> None:
    train = events([(None, f"s{i}", item, float(i * 10 + k))
                    for i in range(10) for k, item in enumerate(["a", "b", "c"])])
    test = pl.DataFrame({
        "user_id": [None] * 7, "session_id": ["t1", "t1", "t1", "t2", "t2", "t3", "t3"],
        "item_id": ["a", "zz", "b", "a", "zz", "zz", "c"],
        "timestamp": [1e6, 1e6 + 1, 1e6 + 2, 1e6 + 10, 1e6 + 11, 1e6 + 20, 1e6 + 21],
        "event_type": ["click"] * 7,
        "target": [False, False, True, False, True, False, True],
    }).cast({**EVENT_SCHEMA, "target": pl.Boolean})  # type: ignore[dict-item]
    data = prepare_dataset(train, PrepareOptions(protocol="given"), test, fmt="sessions")
    # t1: unseen prefix item dropped, label kept; t2: label unseen -> dropped;
    # t3: prefix empty after dropping -> dropped
    assert data.test["session"].n_unique() == 1
    assert data.test["target"].to_list() == [False, True]
    assert set(data.items) == {"a", "b", "c"}
    valid_sessions = data.train.filter(pl.col("valid"))["session"].unique()
    assert valid_sessions.len() == 1  # 10% of 10 sessions: the latest one
    assert data.train.filter(pl.col("valid"))["timestamp"].min() == 90.0


def test_given_needs_a_test_file_and_others_refuse_one() -> None:
    with pytest.raises(ValueError, match="needs a test file"):
        prepare_dataset(user_log(), PrepareOptions(protocol="given"))
    with pytest.raises(ValueError, match="only used with --protocol given"):
        prepare_dataset(user_log(), PrepareOptions(protocol="time"), user_log())


def test_user_ratio_protocol() -> None:
    data = prepare_dataset(user_log(sessions=5), PrepareOptions(
        protocol="user-ratio", min_item_support=1, min_user_events=10), fmt="test")
    for user in range(1, data.n_users + 1):
        n_train = data.train.filter(pl.col("user") == user).height
        n_test = data.test.filter(pl.col("user") == user).height
        assert n_test > 0 and n_train / (n_train + n_test) == pytest.approx(0.7, abs=0.1)
        assert (data.test.filter(pl.col("user") == user)["timestamp"].min()
                > data.train.filter(pl.col("user") == user)["timestamp"].max())


def test_contract_order_and_indices() -> None:
    data = prepare_dataset(user_log(), PrepareOptions(protocol="last-session",
                                                      min_item_support=1))
    train = data.train
    assert train["item"].min() >= 1 and train["item"].max() == data.n_items
    assert train["user"].min() >= 1 and train["user"].max() == data.n_users
    ordered = train.sort(["user", "timestamp"], maintain_order=True)
    assert train["session"].to_list() == ordered["session"].to_list()
    sessions = set(train["session"]) | set(data.test["session"])
    assert sessions == set(range(len(sessions)))
    assert not set(train["session"]) & set(data.test["session"])


def test_prepare_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clicks.csv"
    user_log().select("user_id", "item_id", "timestamp").write_csv(path)
    out = tmp_path / "prepared"
    code = main(["prepare", "--format", "csv", "--input", str(path), "--protocol",
                 "last-session", "--out", str(out), "--min-item-support", "1"])
    assert code == 0
    summary = capsys.readouterr().out
    assert "last-session" in summary and "test" in summary
    loaded = PreparedDataset.load(out)
    assert loaded.n_users == 6 and loaded.fingerprint
    assert loaded.stats["counts"]["test"]["sessions"] == 6
    assert loaded.stats["sources"] == [str(path)]
    # the user's mistake is a clear error and exit code 2, not a traceback
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu,i,1\nu,i\n")
    code = main(["prepare", "--format", "csv", "--input", str(bad), "--protocol",
                 "last-session", "--out", str(out)])
    assert code == 2
    assert "bad.csv line 3" in capsys.readouterr().err


def test_yoochoose_dat_prepare_with_coded_ids(tmp_path: Path) -> None:
    """The CLI codes ids as integers before the heavy steps (DESIGN §2 memory budget);
    the result must be what the raw ids give: sessions "9" and "10" tie on user, start
    and end, so the raw-text order ("10" < "9") decides both their session indices and
    which of their first items enters the vocabulary first."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(
        "9,2014-04-01T10:00:00.000Z,300,0\n"
        "9,2014-04-01T10:05:00.000Z,100,0\n"
        "10,2014-04-01T10:00:00.000Z,500,S\n"
        "10,2014-04-01T10:05:00.000Z,300,0\n"
        "2,2014-04-01T09:00:00.000Z,100,0\n"
        "2,2014-04-01T09:01:00.000Z,200,0\n"
        "5,2014-04-03T12:00:00.000Z,100,0\n"
        "5,2014-04-03T12:02:00.000Z,300,0\n"
        "5,2014-04-03T12:03:00.000Z,999,0\n"
        "7,2014-04-03T13:00:00.000Z,400,0\n", encoding="utf-8")
    out = tmp_path / "prepared"
    code = main(["prepare", "--format", "yoochoose", "--input", str(path), "--protocol",
                 "time", "--out", str(out), "--min-item-support", "1", "--no-valid"])
    assert code == 0
    data = PreparedDataset.load(out)
    assert data.items == ["100", "200", "500", "300"]  # 999 test-only, 400 filtered
    assert data.users == []
    assert data.sessions(data.train) == [(0, 0, [1, 2]), (0, 1, [3, 4]), (0, 2, [4, 1])]
    assert data.sessions(data.test) == [(0, 3, [1, 4])]
    assert data.test["target"].to_list() == [False, True]
    counts = data.stats["counts"]
    assert counts["input"] == {"events": 10, "sessions": 5, "users": 0, "items": 6}
    assert data.stats["filters"]["removed"]["short_session_events"] == 1
    # the library path on the raw string frame gives the same dataset
    direct = prepare_dataset(read_events(path, "yoochoose"), PrepareOptions(
        protocol="time", min_item_support=1, make_valid=False), fmt="yoochoose")
    assert direct.items == data.items
    assert direct.train.equals(data.train) and direct.test.equals(data.test)
