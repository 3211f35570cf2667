"""The synthetic generator: deterministic by seed, realistic shape, and user history
predictive of the next session's first clicks."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from training.data.dataset import PreparedDataset
from training.data.synth import SynthConfig, generate

SMALL = {"users": 150, "items": 400, "clusters": 20}


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, catalog = generate(SynthConfig(seed=3, **SMALL))
    again, catalog_again = generate(SynthConfig(seed=3, **SMALL))
    other, _ = generate(SynthConfig(seed=4, **SMALL))
    assert first.equals(again) and catalog.equals(catalog_again)
    assert not first.equals(other)


def test_shape_of_the_log() -> None:
    events, catalog = generate(SynthConfig(seed=1, **SMALL))
    assert events.columns == ["user_id", "session_id", "item_id", "timestamp"]
    sessions = events.group_by("session_id", maintain_order=True).agg(
        pl.col("user_id").first(), pl.len().alias("length"),
        pl.col("timestamp").min().alias("start"), pl.col("timestamp").max().alias("end"))
    assert sessions["length"].min() >= 2
    assert 5.0 <= sessions["length"].mean() <= 8.0  # type: ignore[operator]
    assert sessions.group_by("user_id").len()["len"].min() >= 2
    # between a user's sessions: always more than the 30 min idle gap; inside: less
    gaps = sessions.sort("user_id", "start").with_columns(
        (pl.col("start") - pl.col("end").shift(1)).over("user_id").alias("gap"))
    assert gaps["gap"].drop_nulls().min() > 1800.0  # type: ignore[operator]
    inner = events.with_columns(pl.col("timestamp").diff().over("session_id").alias("d"))
    assert inner["d"].drop_nulls().max() < 1800.0  # type: ignore[operator]
    # popularity is heavy-tailed: the top 10% of items get far more than 10% of clicks
    counts = events.group_by("item_id").len().sort("len", descending=True)["len"]
    top = counts.head(len(catalog) // 10).sum()
    assert top / events.height > 0.25
    assert catalog["title"].n_unique() == catalog.height


def test_first_click_cluster_follows_user_history() -> None:
    """The cluster of a session's first click matches the user's most-clicked cluster in
    their earlier sessions far more often than the popularity of that cluster explains."""
    events, catalog = generate(SynthConfig(seed=5, users=300, items=600, clusters=30))
    cluster_of = dict(zip(catalog["item_id"], catalog["cluster"], strict=True))
    cluster_share = Counter(cluster_of[i] for i in events["item_id"])
    total = sum(cluster_share.values())
    sessions = (events.group_by("session_id", maintain_order=True)
                .agg(pl.col("user_id").first(), pl.col("item_id"), pl.col("timestamp").min())
                .sort("user_id", "timestamp"))
    history: dict[str, Counter[int]] = {}
    hits = trials = 0
    chance = 0.0
    for user, items in zip(sessions["user_id"], sessions["item_id"], strict=True):
        past = history.setdefault(user, Counter())
        if past:
            favourite = past.most_common(1)[0][0]
            hits += cluster_of[items[0]] == favourite
            chance += cluster_share[favourite] / total
            trials += 1
        past.update(cluster_of[i] for i in items)
    assert trials > 1000
    assert hits / trials > 0.35
    assert hits / trials > 4 * chance / trials


@pytest.mark.parametrize("seed", [7])
def test_cli_writes_a_log_that_prepare_reads(tmp_path: Path, seed: int,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth.csv"
    assert main(["synth", "--out", str(out), "--seed", str(seed), "--users", "120",
                 "--items", "300", "--clusters", "15"]) == 0
    assert "events" in capsys.readouterr().out
    assert (tmp_path / "synth.items.csv").exists()
    assert main(["prepare", "--format", "csv", "--input", str(out), "--protocol",
                 "last-session", "--out", str(tmp_path / "prepared")]) == 0
    data = PreparedDataset.load(tmp_path / "prepared")
    assert data.n_users == 120  # every user keeps >= 2 sessions
    assert data.stats["counts"]["test"]["sessions"] >= 100
    assert main(["synth", "--out", str(out), "--items", "20", "--clusters", "15"]) == 2


def test_cli_set_reaches_every_generator_knob(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--users", "60", "--items", "200", "--clusters", "10", "--seed", "2"]
    plain, revisits = tmp_path / "plain.csv", tmp_path / "revisits.csv"
    assert main(["synth", "--out", str(plain), *small, "--no-items"]) == 0
    assert main(["synth", "--out", str(revisits), *small, "--no-items",
                 "--set", "p_resume=1.0", "--set", "p_revisit=1.0"]) == 0
    # every session after a user's first resumes the previous one and only revisits it
    events = pl.read_csv(revisits)
    sessions = events.group_by("session_id", maintain_order=True).agg(
        pl.col("user_id").first(), pl.col("item_id"))
    previous: dict[str, set[str]] = {}
    for user, items in zip(sessions["user_id"], sessions["item_id"], strict=True):
        if user in previous:
            assert set(items) <= previous[user]
        previous[user] = set(items)
    assert not pl.read_csv(plain).equals(events)
    capsys.readouterr()
    assert main(["synth", "--out", str(plain), "--set", "p_resume=2"]) == 2
    assert "p_resume" in capsys.readouterr().err
    assert main(["synth", "--out", str(plain), "--set", "resume=0.5"]) == 2
    assert "no config field 'resume'" in capsys.readouterr().err


def test_routine_sessions_only_revisit_the_users_favourites() -> None:
    """With p_routine = 1 and no drift every session of a user draws from the same few
    favourites (3 interests x 3 favourites); without routine sessions users roam."""
    config = SynthConfig(seed=4, drift=0.0, **SMALL)
    routine, _ = generate(dataclasses.replace(config, p_routine=1.0))
    plain, _ = generate(config)
    limit = config.interests_per_user * config.favourites_per_cluster
    distinct = routine.group_by("user_id").agg(pl.col("item_id").n_unique())["item_id"]
    assert distinct.max() <= limit  # type: ignore[operator]
    plain_distinct = plain.group_by("user_id").agg(pl.col("item_id").n_unique())["item_id"]
    assert plain_distinct.mean() > 2 * limit  # type: ignore[operator]
    with pytest.raises(ValueError, match="p_routine"):
        generate(dataclasses.replace(config, p_routine=1.5))
