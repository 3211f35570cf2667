"""Ranking and metric arithmetic against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.evaluation.metrics import (
    TopKTracker,
    breakdown,
    bucket_labels,
    check_ks,
    metrics_from_ranks,
    popularity_percentiles,
    rank_targets,
)

INF = float("inf")


def _scores(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_tie_policies_on_hand_computed_ranks() -> None:
    # items 1..5; target 1 scores 0.5, one item above it (0.9), two others tied at 0.5.
    scores = _scores([-INF, 0.5, 0.9, 0.5, 0.1, 0.5])
    target = torch.tensor([1])
    assert rank_targets(scores, target, "pessimistic").tolist() == [4.0]
    assert rank_targets(scores, target, "optimistic").tolist() == [2.0]
    assert rank_targets(scores, target, "average").tolist() == [3.0]


def test_default_policy_is_pessimistic_and_unique_scores_agree() -> None:
    scores = _scores([-INF, 0.3, 0.9, 0.1, 0.7], [-INF, 0.3, 0.9, 0.1, 0.7])
    targets = torch.tensor([1, 2])
    expected = [3.0, 1.0]
    for policy in ("pessimistic", "optimistic", "average"):
        assert rank_targets(scores, targets, policy).tolist() == expected
    assert rank_targets(scores, targets).tolist() == expected


def test_padding_column_never_counts() -> None:
    # A model that forgot to mask column 0 (here +inf) must not push the target down.
    scores = _scores([INF, 0.2, 0.1, 0.0])
    assert rank_targets(scores, torch.tensor([1])).tolist() == [1.0]
    # A target scored -inf is last among the 3 real items, not behind the padding too.
    scores = _scores([-INF, -INF, 0.1, 0.0])
    assert rank_targets(scores, torch.tensor([1])).tolist() == [3.0]
    assert rank_targets(scores, torch.tensor([1]), "optimistic").tolist() == [3.0]


@pytest.mark.parametrize("policy", ["pessimistic", "optimistic", "average"])
def test_numpy_and_torch_counting_paths_agree(policy: str) -> None:
    # float32 on CPU counts through numpy; bfloat16 (and CUDA) through torch. Scores on a
    # coarse grid so both dtypes hold them exactly and ties are plentiful.
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 8, (64, 200), generator=generator).float() / 4
    scores[:, 0] = -INF
    targets = torch.randint(1, 200, (64,), generator=generator)
    fast = rank_targets(scores, targets, policy)
    slow = rank_targets(scores.to(torch.bfloat16), targets, policy)
    assert torch.equal(fast, slow)
    naive = []
    for row, target in zip(scores.tolist(), targets.tolist(), strict=True):
        above = sum(1 for j in range(1, 200) if row[j] > row[target])
        tied = sum(1 for j in range(1, 200) if j != target and row[j] == row[target])
        naive.append({"pessimistic": 1 + above + tied, "optimistic": 1 + above,
                      "average": 1 + above + tied / 2}[policy])
    assert fast.tolist() == naive


def test_all_tied_catalogue() -> None:
    scores = torch.zeros(1, 11)
    scores[0, 0] = -INF
    target = torch.tensor([7])
    assert rank_targets(scores, target, "pessimistic").item() == 10.0
    assert rank_targets(scores, target, "optimistic").item() == 1.0
    assert rank_targets(scores, target, "average").item() == 5.5


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_targets(_scores([-INF, float("nan"), 0.1]), torch.tensor([2]))
    with pytest.raises(ValueError, match="NaN"):  # the target itself, even unchecked
        rank_targets(_scores([-INF, float("nan"), 0.1]), torch.tensor([1]), check_nan=False)
    tracker = TopKTracker(2, ks=(1,), percentiles=np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):  # what the evaluator relies on instead
        tracker.update(_scores([-INF, 0.3, float("nan")]))
    with pytest.raises(ValueError, match=r"1\.\.2"):
        rank_targets(_scores([-INF, 0.2, 0.1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="tie policy"):
        rank_targets(_scores([-INF, 0.2, 0.1]), torch.tensor([1]), "random")
    with pytest.raises(ValueError, match="positive integer"):
        check_ks([5, 0])
    assert check_ks([20, 5, 5, 10]) == (5, 10, 20)


def test_metrics_at_k_boundary() -> None:
    ranks = np.array([1.0, 5.0, 6.0, 20.0])
    out = metrics_from_ranks(ranks, ks=(5, 20))
    assert out["n"] == 4
    assert out["recall@5"] == pytest.approx(2 / 4)  # rank 5 is in, 6 is out
    assert out["mrr@5"] == pytest.approx((1 + 1 / 5) / 4)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert out["precision@5"] == pytest.approx(out["recall@5"] / 5)
    assert out["recall@20"] == pytest.approx(1.0)
    assert out["mrr@20"] == pytest.approx((1 + 1 / 5 + 1 / 6 + 1 / 20) / 4)


def test_fractional_average_ranks_and_empty_input() -> None:
    out = metrics_from_ranks([5.5, 1.0], ks=(5,))
    assert out["recall@5"] == 0.5
    assert out["mrr@5"] == 0.5
    empty = metrics_from_ranks([], ks=(5,))
    assert empty["n"] == 0 and empty["recall@5"] == 0.0


def test_popularity_percentiles() -> None:
    counts = np.array([0, 10, 0, 5, 5])  # index 0 = padding
    pct = popularity_percentiles(counts)
    assert pct[0] == 0.0
    # item 2 (0 clicks): nothing below, itself -> 0.5/4; items 3, 4 tie: (1 + 0.5*2)/4
    assert pct[2] == pytest.approx(0.5 / 4)
    assert pct[3] == pct[4] == pytest.approx(2 / 4)
    assert pct[1] == pytest.approx(3.5 / 4)


def test_topk_tracker_coverage_and_popularity() -> None:
    percentiles = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.9])
    tracker = TopKTracker(5, ks=(1, 2), percentiles=percentiles)
    tracker.update(_scores([INF, 5, 4, 0, 0, 0], [-INF, 0, 0, 1, 0, 2]))
    summary = tracker.summary()
    # top-1 lists: {1}, {5}; top-2: {1, 2}, {5, 3}. Padding never counted even at +inf.
    assert summary["coverage@1"] == pytest.approx(2 / 5)
    assert summary["coverage@2"] == pytest.approx(4 / 5)
    assert summary["popularity@1"] == pytest.approx((0.1 + 0.9) / 2)
    assert summary["popularity@2"] == pytest.approx((0.1 + 0.2 + 0.9 + 0.3) / 4)


def test_breakdown_buckets() -> None:
    assert bucket_labels([0, 1, 2, 3, 5, 10]) == ["0", "1", "2", "3-4", "5-9", "10+"]
    ranks = np.array([1.0, 30.0, 2.0, 8.0, 1.0])
    history = np.array([0, 0, 3, 4, 12])
    rows = breakdown(ranks, history, [0, 1, 2, 3, 5, 10], ks=(5,))
    assert [row["bucket"] for row in rows] == ["0", "3-4", "10+"]  # empty buckets left out
    assert [row["n"] for row in rows] == [2, 2, 1]
    assert rows[0]["recall@5"] == 0.5 and rows[1]["recall@5"] == 0.5
    assert rows[1]["mrr@5"] == pytest.approx(0.25)
    # values below the first edge get their own bucket instead of vanishing
    below = breakdown(np.array([1.0, 2.0]), np.array([0, 1]), [1, 2], ks=(5,))
    assert [row["bucket"] for row in below] == ["0", "1"]


def test_user_list_metrics_against_hand_computed_values() -> None:
    from training.evaluation.metrics import user_list_metrics

    hits = np.array([[True, False, True, False, False],   # 2 of |T| = 3
                     [False, False, False, False, False],  # no hit, |T| = 1
                     [False, True, False, False, False]])  # hit at 2, |T| = 1
    relevant = np.array([3, 1, 1])
    out = user_list_metrics(hits, relevant, (5, 1))
    assert out["n"] == 3
    assert out["precision@5"] == pytest.approx((2 / 5 + 0 + 1 / 5) / 3)
    assert out["recall@5"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    f1_first = 2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3)
    f1_third = 2 * (1 / 5) * 1 / (1 / 5 + 1)
    assert out["f1@5"] == pytest.approx((f1_first + 0 + f1_third) / 3)
    assert out["hr@5"] == pytest.approx(2 / 3)
    ndcg_first = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    ndcg_third = 1 / math.log2(3)
    assert out["ndcg@5"] == pytest.approx((ndcg_first + 0 + ndcg_third) / 3)
    # K = 1: only the first position counts; the ideal DCG is 1 for everyone
    assert out["precision@1"] == pytest.approx(1 / 3)
    assert out["recall@1"] == pytest.approx((1 / 3) / 3)
    assert out["ndcg@1"] == pytest.approx(1 / 3)


def test_user_list_metrics_reject_empty_test_sets() -> None:
    from training.evaluation.metrics import user_list_metrics

    with pytest.raises(ValueError, match="relevant"):
        user_list_metrics(np.zeros((1, 5), bool), np.array([0]), (5,))
    assert user_list_metrics(np.zeros((0, 5), bool), np.zeros(0), (5,))["n"] == 0
