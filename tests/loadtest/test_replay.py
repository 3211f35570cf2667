"""``nextclick replay`` against a real server with a two-model traffic split: each model's
online hit rate and MRR agree with the offline evaluation of the same sessions (within
sampling error), and with what ``GET /admin/experiments`` reports for the same clicks."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest

from loadtest.replay import load_sessions, replay
from models import registry
from service.settings import Settings
from tests.helpers import make_tiny_dataset
from tests.servers import LiveServer
from training.evaluation.replay import rank_cases, summarize
from training.export.writer import export_bundle, popular_items
from training.fit.loop import train

pytestmark = pytest.mark.usefixtures("single_thread")
K = 3


def test_replay_agrees_with_offline_evaluation_and_the_service(
        tmp_path: Path, redis_url: str) -> None:
    dataset = make_tiny_dataset(n_users=150, n_items=30, sessions_per_user=4, seed=3)
    dataset_dir = dataset.save(tmp_path / "data")
    artifacts = tmp_path / "artifacts"
    popular = popular_items(dataset.train["item"].to_list(), dataset.items)
    offline = {}
    for name, epochs in (("gru4rec", 2), ("pop", None)):
        model, _ = train(name, dataset, tmp_path / "runs" / name, epochs=epochs, seed=1,
                         progress=False)
        export_bundle(model, dataset.items, artifacts, version="v1", popular=popular)
        offline[f"{name}@v1"] = summarize(rank_cases(model, dataset, "test", (K,),
                                                     progress=False), (K,))
    registry.available()  # (models imported; the server imports none of this)
    settings = Settings(redis_url=redis_url, artifacts_dir=artifacts,
                        data_dir=tmp_path / "var", traffic_split="gru4rec=50,pop=50")
    with LiveServer(settings) as server:
        result = asyncio.run(replay(server.url, load_sessions(dataset_dir), k=K,
                                    concurrency=4))
        reported = httpx.get(server.url + "/admin/experiments", timeout=30).json()
    assert result.errors == {}
    assert set(result.models) == {"gru4rec@v1", "pop@v1"}  # both got a share of the users
    for key, counts in result.models.items():
        expected = offline[key]
        n = counts.clicks
        assert n > 100
        hit_rate, mrr = counts.hits / n, counts.rr / n
        # the same sessions' targets, scored offline over the whole catalogue
        recall, offline_mrr = expected[f"recall@{K}"], expected[f"mrr@{K}"]
        assert abs(hit_rate - recall) <= 3 * math.sqrt(recall * (1 - recall) / n) + 0.01, key
        assert abs(mrr - offline_mrr) <= 3 * math.sqrt(0.25 / n) + 0.01, key
        # the service attributed the same clicks to the same lists
        online = reported["models"][key]
        assert (online["lists"], online["clicks"], online["hits"]) == (
            counts.lists, counts.clicks, counts.hits)
        assert online["mrr"] == pytest.approx(mrr, abs=1e-5)
        low, high = online["hit_rate_ci95"]
        assert low <= hit_rate <= high
    assert reported["traffic_split"] == {"gru4rec": 50, "pop": 50}
