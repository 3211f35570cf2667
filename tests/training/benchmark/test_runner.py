"""``nextclick benchmark`` on a tiny dataset, and its statistics against hand-computed
values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main
from tests.helpers import make_tiny_dataset
from training.benchmark.report import peer_samples_per_second, samples_per_second
from training.benchmark.runner import benchmark
from training.data.dataset import PreparedDataset
from training.evaluation.metrics import metrics_from_ranks
from training.evaluation.replay import rank_cases
from training.evaluation.statistics import bootstrap_ci, compare_pair, per_case, wilcoxon

pytestmark = pytest.mark.usefixtures("single_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- statistics by hand --------------------------------------------------------------

def test_per_case_values_from_ranks() -> None:
    ranks = np.array([1.0, 3.0, 25.0, 2.0])
    assert per_case(ranks, "recall@2").tolist() == [1.0, 0.0, 0.0, 1.0]
    assert per_case(ranks, "mrr@3").tolist() == [1.0, 1 / 3, 0.0, 0.5]
    # the per-case means are the summary metrics
    summary = metrics_from_ranks(ranks, (3, 20))
    assert per_case(ranks, "mrr@3").mean() == pytest.approx(summary["mrr@3"])
    assert per_case(ranks, "recall@20").mean() == pytest.approx(summary["recall@20"])
    assert summary["recall@3"] == pytest.approx(3 / 4)
    assert summary["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    with pytest.raises(ValueError, match="recall@K or mrr@K"):
        per_case(ranks, "ndcg@5")


def test_wilcoxon_by_hand() -> None:
    # d = 1, 2, -3, 4 (and a zero, dropped): ranks 1..4, W+ = 7, mean 5, var 7.5
    result = wilcoxon(np.array([1.0, 0.0, 2.0, -3.0, 4.0]))
    assert result["n"] == 4 and result["w_plus"] == 7.0
    z = (7 - 5) / math.sqrt(7.5)
    assert result["z"] == pytest.approx(z)
    assert result["p"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    # ties: |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3; W+ = 1.5 + 3; var 3*4*7/24 - (8-2)/48
    tied = wilcoxon(np.array([1.0, -1.0, 2.0]))
    assert tied["w_plus"] == 4.5
    assert tied["z"] == pytest.approx((4.5 - 3) / math.sqrt(3.5 - 6 / 48))
    assert wilcoxon(np.zeros(3))["p"] == 1.0


def test_bootstrap_ci_brackets_the_mean() -> None:
    rng = np.random.default_rng(1)
    diff = rng.normal(0.3, 1.0, 400)
    low, high = bootstrap_ci(diff, 500)
    assert low < diff.mean() < high
    assert low > 0.1 and high < 0.5  # ~ mean -+ 2 * 1/sqrt(400)
    assert bootstrap_ci(np.zeros(10), 50) == (0.0, 0.0)


def test_compare_pair_joins_on_targets() -> None:
    a = pl.DataFrame({"session": [1, 1, 2], "position": [1, 2, 1], "rank": [1.0, 4.0, 30.0]})
    b = pl.DataFrame({"session": [2, 1, 3], "position": [1, 1, 1], "rank": [2.0, 2.0, 1.0]})
    result = compare_pair(a, b, ["mrr@20"], resamples=50)
    assert result["n"] == 2  # (1, 1) and (2, 1)
    assert result["mrr@20"]["mean_difference"] == pytest.approx(((1 - 0.5) + (0 - 0.5)) / 2)


# ---- the command on a tiny dataset -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset().save(tmp_path_factory.mktemp("data") / "tiny")


def test_benchmark_writes_report_and_reuses_cache(tiny_data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    models = ["pop", "spop", "iknn", "gru4rec"]
    summary = benchmark(tiny_data, models, out, epochs=1, latency_clicks=20, resamples=100,
                        progress=False)
    assert sorted(summary["ranking"]) == sorted(models) and not summary["failures"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["ranking"] == summary["ranking"]
    scores = [saved["models"][n]["metrics"]["mrr@20"] for n in saved["ranking"]]
    assert scores == sorted(scores, reverse=True)
    for name in models:
        entry = saved["models"][name]
        metrics = entry["metrics"]
        assert all(f"recall@{k}" in metrics and f"mrr@{k}" in metrics for k in range(1, 21))
        recalls = [metrics[f"recall@{k}"] for k in range(1, 21)]
        assert recalls == sorted(recalls)  # Recall@K never falls with K
        assert set(metrics["breakdowns"]) == {"position", "history_length", "session_length"}
        assert entry["size"]["checkpoint_bytes"] > 0
        assert entry["latency"]["clicks"] == 19 and entry["latency"]["median_ms"] > 0
        assert entry["train"]["epochs"] == 1
        # the stored metrics are those of the stored per-target ranks
        ranks = pl.read_parquet(out / "runs" / name / "ranks.parquet")["rank"].to_numpy()
        assert metrics["mrr@20"] == pytest.approx(metrics_from_ranks(ranks, (20,))["mrr@20"])
    significance = saved["significance"]
    assert significance["best"] == saved["ranking"][0]
    assert significance["runner_up"] == saved["ranking"][1]
    assert -1 <= significance["mrr@20"]["ci95"][0] <= significance["mrr@20"]["ci95"][1] <= 1
    for stem in ("accuracy_at_k", "by_position", "by_session_length", "catalogue", "cost"):
        assert (out / "plots" / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC, stem
    # every tiny user has the same history length: one bucket, so no plot for it
    assert len(saved["models"]["pop"]["metrics"]["breakdowns"]["history_length"]) == 1
    assert not (out / "plots" / "by_history_length.png").exists()
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in models:
        assert f"| {name} |" in markdown and f"<td>{name}</td>" in page
    # training throughput: fit prefixes x epochs / optimiser seconds, gradient models only
    fit = PreparedDataset.load(tiny_data).train.filter(~pl.col("valid"))
    assert saved["dataset"]["fit_samples"] == fit.height - fit["session"].n_unique()
    gru4rec = saved["models"]["gru4rec"]
    assert samples_per_second(gru4rec, saved["dataset"]["fit_samples"]) == pytest.approx(
        saved["dataset"]["fit_samples"] / gru4rec["train"]["fit_seconds"])
    assert samples_per_second(saved["models"]["iknn"], saved["dataset"]["fit_samples"]) is None
    assert "samples/s" in markdown
    assert "plots/accuracy_at_k.png" in page and "Wilcoxon" in page and "<table>" in page

    # second call: every run is reused, nothing is trained again
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached run was retrained")

    monkeypatch.setattr("training.fit.loop.train", no_training)
    again = benchmark(tiny_data, models, out, epochs=1, latency_clicks=20, resamples=100,
                      progress=False)
    assert all(again["models"][n]["cached"] for n in models)
    assert again["ranking"] == summary["ranking"]
    # a count model has no epochs: another cap reuses it; a neural model is retrained
    assert benchmark(tiny_data, ["pop"], out, epochs=2, progress=False,
                     latency_clicks=0)["models"]["pop"]["cached"]
    with pytest.raises(AssertionError, match="retrained"):
        benchmark(tiny_data, ["gru4rec"], out, epochs=2, progress=False)


def test_evaluation_ranks_match_hand_computed_pop_ranks(tiny_data: Path) -> None:
    """POP's rank of each target is its popularity rank among the training items."""
    from models import registry
    from training.data.dataset import PreparedDataset
    from training.fit.batching import training_sessions

    dataset = PreparedDataset.load(tiny_data)
    table = training_sessions(dataset)
    model = registry.build("pop", dataset.n_items, dataset.n_users)
    model.fit_counts([table.items[a:b].tolist()
                      for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)])
    counts = np.bincount(table.items, minlength=dataset.n_items + 1)
    ranked = rank_cases(model.eval(), dataset, "test", (20,), progress=False)
    for item, rank in zip(ranked.item, ranked.rank, strict=True):
        # pessimistic: 1 + items with more clicks + equal clicks and lower index
        ahead = sum(1 for j in range(1, dataset.n_items + 1)
                    if counts[j] > counts[item] or (counts[j] == counts[item] and j < item))
        assert rank == ahead + 1


def test_cli_benchmark_and_bad_input(tiny_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(["benchmark", "--data", str(tiny_data), "--models", "pop,spop", "--out", str(out),
                 "--quiet", "--latency-clicks", "5", "--bootstrap", "50"])
    assert code == 0 and (out / "report.html").exists()
    assert "wrote" in capsys.readouterr().out
    assert main(["benchmark", "--data", str(tiny_data), "--models", "nope", "--out",
                 str(out)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tiny_data), "--models", "pop", "--out", str(out),
                 "--metric", "ndcg@5"]) == 2


# ---- RecBole peer export (RecBole itself runs in its own venv; not needed here) ---------

def test_recbole_atomic_export_matches_the_split(tiny_data: Path, tmp_path: Path) -> None:
    from training.benchmark.peers import _prefix_rows, export_atomic
    from training.data.dataset import PreparedDataset

    assert _prefix_rows([5, 0, 6, 7], None) == [("5", 6), ("5 6", 7)]  # 0 = unknown: skipped
    assert _prefix_rows([5, 6, 7], [False, False, True]) == [("5 6", 7)]
    assert _prefix_rows([5, 6], [True, True]) == [("5", 6)]  # no history -> no row
    dataset = PreparedDataset.load(tiny_data)
    counts = export_atomic(dataset, tmp_path, "tiny")
    ranked = rank_cases(registry_pop(dataset), dataset, "test", (20,), progress=False)
    assert counts["test"] == int((ranked.position > 0).sum())  # same targets as ours
    train = dataset.train.filter(~pl.col("valid"))
    lengths = train.group_by("session").len()["len"].to_numpy()
    assert counts["train"] == int((lengths - 1).sum())  # every prefix -> next click
    lines = (tmp_path / "tiny" / "tiny.test.inter").read_text().splitlines()
    assert lines[0] == "session_id:token\titem_id_list:token_seq\titem_id:token"
    session, history, item = lines[1].split("\t")
    clicks = dataset.test.filter(pl.col("session") == int(session))["item"].to_list()
    assert [int(i) for i in history.split()] + [int(item)] == clicks[: len(history.split()) + 1]


def test_recbole_training_seconds_sum_its_epoch_lines() -> None:
    from training.benchmark.peers import training_seconds

    log = ("01 Dec 12:13    INFO  epoch 0 training [time: 2.05s, train loss: 67.7883]\n"
           "01 Dec 12:13    INFO  epoch 0 evaluating [time: 0.10s, valid_score: 0.0100]\n"
           "01 Dec 12:13    INFO  epoch 1 training [time: 1.62s, train loss: 60.1]\n")
    assert training_seconds(log) == pytest.approx(3.67)
    assert training_seconds("no epochs here") is None
    summary = {"peers": {"rows": {"train": 100}}}
    entry = {"epochs": 2, "train_seconds": 4.0}
    assert peer_samples_per_second(summary, entry) == pytest.approx(50.0)
    assert peer_samples_per_second(summary, {"epochs": 2, "train_seconds": None}) is None


def registry_pop(dataset: object) -> object:
    from models import registry
    from training.fit.batching import training_sessions

    table = training_sessions(dataset)  # type: ignore[arg-type]
    model = registry.build("pop", dataset.n_items, dataset.n_users)  # type: ignore[attr-defined]
    model.fit_counts([table.items[a:b].tolist()
                      for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)])
    return model.eval()


def test_user_models_are_skipped_on_anonymous_data_and_repeats_counted(
        tmp_path: Path) -> None:
    """On a dataset without user ids the user models are reported as not run (not as
    failures), and the dataset's repeat shares are counted from the test sessions."""
    import dataclasses

    from training.benchmark.runner import repeat_shares

    tiny = make_tiny_dataset()
    anonymous = dataclasses.replace(tiny, users=[],
                                    train=tiny.train.with_columns(pl.lit(0).alias("user")),
                                    test=tiny.test.with_columns(pl.lit(0).alias("user")))
    data = anonymous.save(tmp_path / "anon")
    summary = benchmark(data, ["pop", "hrnn-init", "rum-item"], tmp_path / "out",
                        latency_clicks=0, resamples=20, progress=False)
    assert summary["ranking"] == ["pop"] and not summary["failures"]
    assert set(summary["skipped"]) == {"hrnn-init", "rum-item"}
    assert "Not run" in (tmp_path / "out" / "report.md").read_text()

    # by hand: session 1 = 1, 2, 1, 1 (targets 2, 1, 1: two repeats, one of the last
    # click); session 2 = 3, 4 (no repeat)
    rows = [(0, 1, 1, 0.0, False), (0, 1, 2, 1.0, True), (0, 1, 1, 2.0, True),
            (0, 1, 1, 3.0, True), (0, 2, 3, 4.0, False), (0, 2, 4, 5.0, True)]
    test = pl.DataFrame(rows, schema=["user", "session", "item", "timestamp", "target"],
                        orient="row")
    shares = repeat_shares(dataclasses.replace(tiny, test=test))
    assert shares == {"in_prefix": 2 / 4, "last_click": 1 / 4, "targets": 4}


def test_refit_is_part_of_the_cache_key_and_the_report(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "refit"
    plain = benchmark(tiny_data, ["pop"], out, latency_clicks=0, resamples=20, progress=False)
    refitted = benchmark(tiny_data, ["pop"], out, latency_clicks=0, resamples=20,
                         progress=False, refit=True)
    assert not refitted["models"]["pop"]["cached"] and refitted["settings"]["refit"]
    assert "refit" not in plain["settings"]
    assert refitted["dataset"]["valid_sessions"] > 0
    assert "refit on all training sessions" in (out / "report.md").read_text()
