"""NARM, HMN and HLN bundles served live: real HTTP API (in-process ASGI), real Redis,
real ONNX Runtime. The recommendations must be the eager PyTorch model's top-k for the
same clicks, including after the click window has slid past its oldest clicks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import ITEMS, N_ITEMS, POPULAR

WINDOW = 4
MODELS = ("narm", "hmn", "hln")


@pytest.fixture(scope="module")
def window_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Small random-weight bundles of the three window models (W = 4) and the models."""
    from models import registry
    from training.export.writer import export_bundle

    root = tmp_path_factory.mktemp("window-artifacts")
    models = {}
    for index, name in enumerate(MODELS):
        torch.manual_seed(index)
        model = registry.build(name, N_ITEMS, 0, embedding_dim=8, max_length=WINDOW).eval()
        if name == "hln":  # random leap gates may skip every click (all scores tie at 0)
            with torch.no_grad():
                model.w_q.bias.fill_(-2.0)
        export_bundle(model, ITEMS, root, version="v1", popular=POPULAR)
        models[name] = model
    return root, models


@pytest.fixture
def client(redis_url: str, window_bundles: tuple[Path, dict[str, Any]],
           tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, artifacts_dir=window_bundles[0],
                        data_dir=tmp_path / "var", default_model="narm", inference_threads=1)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def scores_after(model: Any, clicks: list[str]) -> torch.Tensor:
    """Eager PyTorch scores [1, N+1] after ``clicks`` (raw ids 'i<n>' -> index n)."""
    with torch.no_grad():
        state = model.start_session({}, 1)
        for raw in clicks:
            state = model.advance(torch.tensor([int(raw[1:])]), state)
        return model.score(state)


def expected_items(model: Any, clicks: list[str], k: int) -> list[str]:
    top = torch.topk(scores_after(model, clicks), k).indices[0].tolist()
    return [ITEMS[index - 1] for index in top]


@pytest.mark.parametrize("name", MODELS)
def test_live_recommendations_follow_the_window(
        client: TestClient, window_bundles: tuple[Path, dict[str, Any]], name: str) -> None:
    model = window_bundles[1][name]
    clicks = ["i3", "i17", "i8", "i25", "i3", "i40"]  # 6 clicks > W = 4: the window slides
    for position, item in enumerate(clicks, start=1):
        response = client.post(f"/sessions/s-{name}/events", json={"item_id": item},
                               params={"model": name, "k": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": name, "version": "v1"}
        got = [entry["item_id"] for entry in body["recommendations"]]
        assert got == expected_items(model, clicks[:position], 10), f"after click {position}"
        expected = torch.topk(scores_after(model, clicks[:position]), 10).values[0]
        served = torch.tensor([entry["score"] for entry in body["recommendations"]])
        torch.testing.assert_close(served, expected, atol=1e-4, rtol=0)
    # only the last W clicks matter once the window is full
    assert torch.equal(scores_after(model, clicks), scores_after(model, clicks[-WINDOW:]))
    assert not torch.equal(scores_after(model, clicks), scores_after(model, clicks[-WINDOW + 1:]))


def test_narm_is_the_default_and_unknown_items_do_not_move_the_window(
        client: TestClient) -> None:
    first = client.post("/sessions/s/events", json={"item_id": "i5"}).json()
    assert first["model"]["name"] == "narm"
    unknown = client.post("/sessions/s/events", json={"item_id": "not-an-item"}).json()
    assert unknown["accepted"] == 1
    assert unknown["recommendations"] == first["recommendations"]
    again = client.get("/recommend", params={"session_id": "s"}).json()
    assert again["recommendations"] == first["recommendations"]
