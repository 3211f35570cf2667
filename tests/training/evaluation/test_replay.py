"""The HRNN-protocol replay, against a naive per-session reference loop.

The test models are deterministic ``SessionModel``s defined here (so these tests do not
depend on the real models): "next item = last item + 1" plus, for the user-aware one, a
profile of the items the user clicked in earlier sessions, strong enough to outrank the
right answer sometimes, so the history visibly changes ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch import Tensor

from models import registry
from models.base import ModelConfig, SessionModel, State, StateSpec
from tests.helpers import make_tiny_dataset
from training.data.dataset import PreparedDataset
from training.evaluation.cases import Split
from training.evaluation.evaluate import evaluate_model
from training.evaluation.replay import rank_cases, summarize
from training.evaluation.run_report import compare_runs, load_metrics, write_report


class NextItemModel(SessionModel):
    """Scores item ``last + 1`` at 1.5, plus (user-aware) how often the user clicked each
    item in past sessions. ``end_session`` adds the session's clicks to the profile and
    counts sessions, so it is not a no-op (rows without a k-th session must skip it)."""

    name = "test-next-item"
    user_aware = True

    def __init__(self, n_items: int, n_users: int = 0, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.register_buffer("anchor", torch.zeros(1))

    def state_spec(self) -> list[StateSpec]:
        width = (self.n_items + 1,)
        spec = [StateSpec("last", (1,), "int64", "session"),
                StateSpec("clicks", width, "float32", "session"),
                StateSpec("profile", width, "float32", "session")]
        if self.user_aware:
            spec += [StateSpec("user_profile", width, "float32", "user"),
                     StateSpec("user_sessions", (1,), "float32", "user")]
        return spec

    def start_session(self, user_state: State, batch_size: int) -> State:
        state = super().start_session(user_state, batch_size)
        if self.user_aware:
            state["profile"] = user_state["user_profile"].clone()
        return state

    def advance(self, item: Tensor, state: State) -> State:
        clicked = torch.nn.functional.one_hot(item, self.n_items + 1).float()
        clicked[:, 0] = 0.0
        return {**state,
                "last": torch.where(item.view(-1, 1) > 0, item.view(-1, 1), state["last"]),
                "clicks": state["clicks"] + clicked}

    def score(self, state: State) -> Tensor:
        last = state["last"].view(-1)
        following = torch.where(last > 0, last % self.n_items + 1, torch.zeros_like(last))
        bonus = torch.nn.functional.one_hot(following, self.n_items + 1).float() * 1.5
        return self.mask_padding(state["profile"] + bonus)

    def end_session(self, session_state: State, user_state: State) -> State:
        return {"user_profile": user_state["user_profile"] + session_state["clicks"],
                "user_sessions": user_state["user_sessions"] + 1.0}


class SessionOnlyModel(NextItemModel):
    """The same scorer with no user-scoped state: history must not matter."""

    name = "test-session-only"
    user_aware = False


# ---- a naive reference: one session at a time, the protocol spelled out ---------------

def _naive_rank(scores: Tensor, target: int) -> float:
    row = scores[0].tolist()
    return 1.0 + sum(1 for j in range(1, len(row)) if j != target and row[j] >= row[target])


def reference_ranks(model: SessionModel, dataset: PreparedDataset, split: str) -> list[float]:
    train = dataset.train.with_row_index("row")
    if split == "test":
        target_frame = dataset.test.with_row_index("row")
    else:
        target_frame = train.filter(pl.col("valid"))
    ranks: list[float] = []
    with torch.no_grad():
        for _, clicks in target_frame.group_by(["session"], maintain_order=True):
            user = int(clicks["user"][0])
            history = train.filter(pl.col("user") == user) if user else train.head(0)
            if split == "valid":
                first_row = int(clicks["row"][0])
                history = history.filter(~pl.col("valid") & (pl.col("row") < first_row))
            user_state = model.init_user_state(1)
            for _, past in history.group_by(["session"], maintain_order=True):
                state = model.start_session(user_state, 1)
                for item in past["item"]:
                    state = model.advance(torch.tensor([item]), state)
                user_state = model.end_session(state, user_state)
            state = model.start_session(user_state, 1)
            flags = (clicks["target"].to_list() if split == "test"
                     else [i > 0 for i in range(clicks.height)])
            for item, is_target in zip(clicks["item"].to_list(), flags, strict=True):
                if is_target:
                    ranks.append(_naive_rank(model.score(state), item))
                state = model.advance(torch.tensor([item]), state)
    return ranks


def varied_dataset() -> PreparedDataset:
    """The tiny dataset with uneven histories (0 to 3 sessions) and one anonymous user."""
    data = make_tiny_dataset(n_users=12, n_items=30, sessions_per_user=5, seed=3)
    train = data.train.with_columns(
        rank=pl.col("session").rank("dense").over("user").cast(pl.Int64))
    drop = ((pl.col("user") <= 4) & (pl.col("rank") == 1)) | \
           ((pl.col("user").is_between(5, 7)) & (pl.col("rank") <= 3))
    data.train = train.filter(~drop).drop("rank")
    data.test = data.test.with_columns(
        user=pl.when(pl.col("user") == 12).then(0).otherwise(pl.col("user")).cast(pl.Int32))
    return data


# ---- tests --------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["test", "valid"])
@pytest.mark.parametrize("batch_size", [1, 5, 256])
def test_batched_replay_equals_naive_reference(split: Split, batch_size: int) -> None:
    data = varied_dataset()
    model = NextItemModel(data.n_items)
    ranked = rank_cases(model, data, split, batch_size=batch_size, progress=False)
    assert ranked.rank.tolist() == reference_ranks(model, data, split)


def test_batch_size_does_not_change_any_row() -> None:
    data = varied_dataset()
    model = NextItemModel(data.n_items)
    single = rank_cases(model, data, "test", batch_size=1, progress=False)
    batched = rank_cases(model, data, "test", batch_size=7, progress=False)
    for name in ("rank", "session", "user", "item", "position", "history_length"):
        np.testing.assert_array_equal(getattr(single, name), getattr(batched, name))
    assert single.catalogue == batched.catalogue


def test_history_changes_user_aware_results_only() -> None:
    data = make_tiny_dataset()
    no_history = make_tiny_dataset()
    no_history.train = no_history.train.with_columns(user=pl.lit(0, pl.Int32))
    aware, agnostic = NextItemModel(data.n_items), SessionOnlyModel(data.n_items)
    with_aware = rank_cases(aware, data, progress=False)
    without_aware = rank_cases(aware, no_history, progress=False)
    assert with_aware.history_length.min() == 3 and without_aware.history_length.max() == 0
    assert not np.array_equal(with_aware.rank, without_aware.rank)
    np.testing.assert_array_equal(rank_cases(agnostic, data, progress=False).rank,
                                  rank_cases(agnostic, no_history, progress=False).rank)


def test_ignore_history_equals_a_log_without_history() -> None:
    data = make_tiny_dataset()
    no_history = make_tiny_dataset()
    no_history.train = no_history.train.with_columns(user=pl.lit(0, pl.Int32))
    aware = NextItemModel(data.n_items)
    ablated = rank_cases(aware, data, progress=False, ignore_history=True)
    np.testing.assert_array_equal(ablated.rank,
                                  rank_cases(aware, no_history, progress=False).rank)
    assert not np.array_equal(ablated.rank, rank_cases(aware, data, progress=False).rank)


def test_only_target_events_are_scored() -> None:
    data = varied_dataset()
    model = NextItemModel(data.n_items)
    test = evaluate_model(model, data, "test", ks=(5,), progress=False)
    assert test["n"] == int(data.test["target"].sum())
    # A benchmark-style test set: only each session's last click is a target.
    data.test = data.test.with_columns(
        target=pl.col("timestamp") == pl.col("timestamp").max().over("session"))
    ranked = rank_cases(model, data, "test", progress=False)
    assert ranked.rank.size == data.test["session"].n_unique()
    np.testing.assert_array_equal(ranked.position, ranked.session_length - 1)
    valid = evaluate_model(model, data, "valid", ks=(5,), progress=False)
    valid_rows = data.train.filter(pl.col("valid"))
    assert valid["n"] == valid_rows.height - valid_rows["session"].n_unique()


def test_valid_split_uses_only_earlier_history() -> None:
    data = make_tiny_dataset(sessions_per_user=5)
    # Make each user's 2nd session the valid one: sessions 3 and 4 come after it.
    data.train = data.train.with_columns(
        valid=pl.col("session").rank("dense").over("user") == 2)
    model = NextItemModel(data.n_items)
    ranked = rank_cases(model, data, "valid", batch_size=4, progress=False)
    assert set(ranked.history_length.tolist()) == {1}
    assert ranked.rank.tolist() == reference_ranks(model, data, "valid")
    # ...while the test split replays all four training sessions, valid one included.
    assert set(rank_cases(model, data, "test", progress=False).history_length.tolist()) == {4}


def test_unknown_target_items_are_skipped_and_counted() -> None:
    data = make_tiny_dataset()
    first_target = data.test.with_row_index("i").filter(pl.col("target"))["i"][0]
    data.test = data.test.with_row_index("i").with_columns(
        item=pl.when(pl.col("i") == first_target).then(0).otherwise(pl.col("item"))
        .cast(pl.Int32)).drop("i")
    result = evaluate_model(NextItemModel(data.n_items), data, progress=False)
    assert result["n_unknown_targets"] == 1
    assert result["n"] == int(data.test["target"].sum()) - 1


def test_bad_inputs_are_reported() -> None:
    data = make_tiny_dataset()
    with pytest.raises(ValueError, match="30 items"):
        evaluate_model(NextItemModel(25), data, progress=False)
    broken = make_tiny_dataset()
    broken.test = broken.test.with_columns(item=pl.lit(99, pl.Int32))
    with pytest.raises(ValueError, match=r"test\.parquet: item index 99"):
        evaluate_model(NextItemModel(30), broken, progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate_model(NextItemModel(30), data, split="train", progress=False)  # type: ignore[arg-type]


def test_metrics_dict_shape_mode_restore_and_subset() -> None:
    data = make_tiny_dataset()
    model = NextItemModel(data.n_items)
    model.train()
    result = evaluate_model(model, data, ks=(5, 10, 20), breakdowns=True, progress=False)
    assert model.training
    for k in (5, 10, 20):
        for name in ("recall", "mrr", "ndcg", "precision", "coverage", "popularity"):
            assert 0.0 <= result[f"{name}@{k}"] <= 1.0
    assert result["recall@5"] <= result["recall@10"] <= result["recall@20"]
    assert result["precision@5"] == pytest.approx(result["recall@5"] / 5)
    assert set(result["breakdowns"]) == {"position", "history_length", "session_length"}
    assert sum(row["n"] for row in result["breakdowns"]["position"]) == result["n"]
    json.dumps(result)  # JSON-serialisable as is
    subset = evaluate_model(model, data, max_sessions=5, progress=False)
    again = evaluate_model(model, data, max_sessions=5, progress=False)
    assert subset["n_sessions"] == 5 and subset["n"] == again["n"]
    assert subset["recall@20"] == again["recall@20"]


def test_report_and_comparison(tmp_path: Path) -> None:
    data = varied_dataset()
    runs = []
    for model in (NextItemModel(data.n_items), SessionOnlyModel(data.n_items)):
        ranked = rank_cases(model, data, progress=False)
        metrics = summarize(ranked, (5, 20), breakdowns=True)
        metrics.update(model=model.name, split="test", tie_policy="pessimistic")
        run = tmp_path / model.name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps(metrics))
        report = write_report(metrics, run)
        assert "Recall" in report.read_text()
        for stem in ("by_position", "by_history_length", "by_session_length"):
            assert (run / "plots" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        runs.append(run)
    table = compare_runs(runs, tmp_path / "compare", "tiny")
    text = table.read_text()
    assert table.suffix == ".md" and "test-next-item" in text and "test-session-only" in text
    assert table.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert load_metrics(runs[0])["n"] > 0
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="line 1"):
        load_metrics(tmp_path / "bad.json")


def test_cli_writes_metrics_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main
    from training.fit.checkpoint import save_run

    # Registered for this test only, so registry-wide contract tests never see it.
    registry.available()
    monkeypatch.setitem(registry._REGISTRY, NextItemModel.name, NextItemModel)
    data = varied_dataset()
    data.save(tmp_path / "data")
    run = save_run(tmp_path / "run", NextItemModel(data.n_items, data.n_users), data)
    assert main(["evaluate", "--run", str(run), "--ks", "5,20", "--batch-size", "4",
                 "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    expected = evaluate_model(NextItemModel(data.n_items), data, ks=(5, 20), progress=False)
    for key in ("n", "recall@5", "mrr@5", "recall@20", "ndcg@20", "coverage@5"):
        assert metrics[key] == expected[key]
    assert metrics["model"] == NextItemModel.name and metrics["split"] == "test"
    assert metrics["dataset"]["fingerprint"] == data.fingerprint != ""
    assert metrics["tie_policy"] == "pessimistic" and metrics["eval_seconds"] >= 0
    assert {"position", "history_length"} <= set(metrics["breakdowns"])
    ranks = pl.read_parquet(run / "ranks.parquet")
    assert ranks.height == metrics["n"]
    for stem in ("by_position", "by_history_length"):
        assert (run / "plots" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "plots/by_position.png" in (run / "report.md").read_text()
    assert "Recall" in capsys.readouterr().out

    # The user's mistakes get one-line errors (exit code 2), not tracebacks.
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--run", str(run), "--ks", "5,x"])
    assert "--ks expects" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--run", str(run), "--data", str(tmp_path / "empty")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
