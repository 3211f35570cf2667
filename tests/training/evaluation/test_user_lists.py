"""RUM's per-user list evaluation (the ``user-ratio`` protocol) against naive loops."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from models import registry
from tests.helpers import make_tiny_dataset
from training.data.dataset import PreparedDataset
from training.evaluation.evaluate import evaluate_model
from training.evaluation.user_lists import evaluate_user_lists

pytestmark = pytest.mark.usefixtures("single_thread")
N_ITEMS, N_USERS = 30, 8


@pytest.fixture(scope="module")
def dataset() -> PreparedDataset:
    data = make_tiny_dataset(n_users=N_USERS, n_items=N_ITEMS, seed=5)
    data.stats = {**data.stats, "protocol": "user-ratio"}
    return data


def _test_sets(data: PreparedDataset) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for user, item in data.test.select("user", "item").iter_rows():
        out.setdefault(int(user), set()).add(int(item))
    return out


def _naive(lists: dict[int, list[int]], truth: dict[int, set[int]], k: int) -> dict[str, float]:
    rows = []
    for user, relevant in truth.items():
        top = lists[user][:k]
        hits = [item in relevant for item in top]
        p, r = sum(hits) / k, sum(hits) / len(relevant)
        dcg = sum(1 / math.log2(j + 2) for j, hit in enumerate(hits) if hit)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(relevant))))
        rows.append((p, r, 2 * p * r / (p + r) if p + r else 0.0, float(any(hits)), dcg / idcg))
    means = np.mean(np.array(rows), axis=0)
    return dict(zip((f"precision@{k}", f"recall@{k}", f"f1@{k}", f"hr@{k}", f"ndcg@{k}"),
                    means.tolist(), strict=True))


def test_trained_user_embeddings_seed_the_lists(dataset: PreparedDataset) -> None:
    """BPR-MF with identity item embeddings: user u's list is a fixed permutation that
    only its row of the user table encodes, so the metrics prove per-user seeding."""
    model = registry.build("bpr", N_ITEMS, N_USERS, embedding_size=N_ITEMS + 1).eval()
    rng = np.random.default_rng(0)
    lists = {}
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.eye(N_ITEMS + 1))
        for user in range(1, N_USERS + 1):
            order = rng.permutation(np.arange(1, N_ITEMS + 1))
            lists[user] = order.tolist()
            weights = torch.zeros(N_ITEMS + 1)
            weights[torch.from_numpy(order)] = torch.arange(N_ITEMS, 0, -1, dtype=torch.float32)
            model.user_embedding.weight[user] = weights
    truth = _test_sets(dataset)
    result = evaluate_model(model, dataset, "test", ks=(5, 10), batch_size=3, progress=False)
    assert result["n_users"] == len(truth) and result["protocol"] == "user-lists"
    for k in (5, 10):
        for name, value in _naive(lists, truth, k).items():
            assert result[name] == pytest.approx(value), name
    # the tiny data repeats (user, item) pairs, so seen items stay by default
    assert result["exclude_seen"] is False
    seen: dict[int, set[int]] = {}
    for user, item in dataset.train.select("user", "item").iter_rows():
        seen.setdefault(int(user), set()).add(int(item))
    unseen = {user: [i for i in lists[user] if i not in seen[user]] for user in truth}
    excluded = evaluate_user_lists(model, dataset, "test", ks=(5,), progress=False,
                                   exclude_seen=True)
    assert excluded["exclude_seen"] is True
    for name, value in _naive(unseen, truth, 5).items():
        assert excluded[name] == pytest.approx(value), name
    # unseeded (the service's view): every user gets the default embedding's list
    blind = evaluate_model(model, dataset, "test", ks=(5,), progress=False, ignore_history=True)
    default = model.user_embedding.weight[0]
    same = {user: torch.argsort(default[1:], descending=True, stable=True).add(1).tolist()
            for user in truth}
    assert blind["hr@5"] == pytest.approx(_naive(same, truth, 5)["hr@5"])


def test_history_replay_reaches_the_memory(dataset: PreparedDataset) -> None:
    """FPMC whose only signal is "recommend the last item": the top-1 must be each user's
    last training click for ``test`` and last non-valid click for ``valid``."""
    model = registry.build("fpmc", N_ITEMS, N_USERS, embedding_size=N_ITEMS + 1).eval()
    with torch.no_grad():
        for table in (model.user_embedding, model.item_user):
            table.weight.zero_()
        model.item_last.weight.copy_(torch.eye(N_ITEMS + 1))
        model.last_item.weight.copy_(torch.eye(N_ITEMS + 1))
    train = dataset.train
    for split, history, targets in (
            ("test", train, dataset.test),
            ("valid", train.filter(~pl.col("valid")), train.filter(pl.col("valid")))):
        last = {int(u): int(i) for u, i in history.group_by("user", maintain_order=True)
                .agg(pl.col("item").last()).iter_rows()}
        truth: dict[int, set[int]] = {}
        for user, item in targets.select("user", "item").iter_rows():
            truth.setdefault(int(user), set()).add(int(item))
        expected = np.mean([last[user] in items for user, items in truth.items()])
        result = evaluate_model(model, dataset, split, ks=(1,), progress=False)  # type: ignore[arg-type]
        assert result["hr@1"] == pytest.approx(expected), split
        assert result["n_users"] == len(truth)
