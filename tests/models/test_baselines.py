"""S-POP, Item-KNN and SKNN on small hand-computed cases, plus brute-force references
written with Python sets (independent of the tensor code under test)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from models import registry
from models.base import SessionModel
from tests.helpers import make_tiny_dataset
from training.fit.checkpoint import load_run
from training.fit.loop import train

pytestmark = pytest.mark.usefixtures("single_thread")


def fitted(name: str, n_items: int, sessions: list[list[int]], **config: object) -> SessionModel:
    model = registry.build(name, n_items, 1, **config)
    model.fit_counts(sessions)
    return model.eval()


def scores_after(model: SessionModel, clicks: list[int]) -> torch.Tensor:
    state = model.start_session({}, 1)
    for item in clicks:
        state = model.advance(torch.tensor([item]), state)
    return model.score(state)[0]


def order(scores: torch.Tensor) -> list[int]:
    return [int(i) for i in torch.argsort(-scores[1:], stable=True) + 1]


# ---- S-POP --------------------------------------------------------------------------

SPOP_TRAIN = [[1, 2, 2, 3], [2, 3], [3]]  # clicks: 1:1 2:3 3:3 4:0 5:0 -> ranks 2,3,1,4,5


def test_spop_session_counts_then_global_popularity() -> None:
    model = fitted("spop", 5, SPOP_TRAIN)
    scores = scores_after(model, [5, 4, 5])
    # score = c_s * (N + 1) + r, r(2)=5 r(3)=4 r(1)=3 r(4)=2 r(5)=1
    assert scores[1:].tolist() == [3.0, 5.0, 4.0, 1 * 6 + 2.0, 2 * 6 + 1.0]
    assert order(scores) == [5, 4, 2, 3, 1]
    assert order(scores_after(model, [])) == [2, 3, 1, 4, 5]  # no clicks: pop order


def test_spop_counts_only_the_window() -> None:
    model = fitted("spop", 5, SPOP_TRAIN, window=2)
    # the first 5 left the window [5, 4]: one click each, tie broken by popularity
    assert order(scores_after(model, [5, 5, 4]))[:2] == [4, 5]
    wide = fitted("spop", 5, SPOP_TRAIN, window=3)
    assert order(scores_after(wide, [5, 5, 4]))[:2] == [5, 4]


def test_spop_rejects_inexact_sizes() -> None:
    with pytest.raises(ValueError, match="2\\^24"):
        registry.build("spop", 1_000_000, 1, window=50)


# ---- Item-KNN -----------------------------------------------------------------------

KNN_TRAIN = [[1, 2], [1, 2, 3], [2, 3], [4]]  # |S_1|=2 |S_2|=3 |S_3|=2 |S_4|=1


def test_iknn_regularised_cosine_by_hand() -> None:
    model = fitted("iknn", 4, KNN_TRAIN)  # lambda 20, alpha 0.5
    scores = scores_after(model, [3, 1])  # the last click counts
    assert scores[2].item() == pytest.approx(2 / math.sqrt(22 * 23), rel=1e-6)
    assert scores[3].item() == pytest.approx(1 / math.sqrt(22 * 22), rel=1e-6)
    # not neighbours: popularity fallback r/(N+2) - 1 with r(1)=3, r(4)=1
    assert scores[1].item() == pytest.approx(3 / 6 - 1)
    assert scores[4].item() == pytest.approx(1 / 6 - 1)
    assert order(scores) == [2, 3, 1, 4]


def test_iknn_plain_cosine_and_neighbour_cap() -> None:
    model = fitted("iknn", 4, KNN_TRAIN, lmbd=0.0)
    scores = scores_after(model, [2])
    assert scores[1].item() == pytest.approx(2 / math.sqrt(2 * 3), rel=1e-6)
    assert scores[3].item() == pytest.approx(2 / math.sqrt(3 * 2), rel=1e-6)
    capped = scores_after(fitted("iknn", 4, KNN_TRAIN, lmbd=0.0, n_sims=1), [2])
    assert capped[1] > 0 and capped[3] < 0  # equal sims: the lower index is kept


def test_iknn_repeated_clicks_count_once() -> None:
    once = scores_after(fitted("iknn", 3, [[1, 2], [3]], lmbd=0.0), [1])
    twice = scores_after(fitted("iknn", 3, [[1, 1, 2, 2], [3]], lmbd=0.0), [1])
    assert torch.equal(once, twice) and once[2].item() == pytest.approx(1.0)


def test_iknn_matches_brute_force() -> None:
    rng = random.Random(3)
    n_items = 15
    sessions = [[rng.randint(1, n_items) for _ in range(rng.randint(1, 6))] for _ in range(60)]
    model = fitted("iknn", n_items, sessions, n_sims=n_items)
    sets = [set(s) for s in sessions]
    for last in range(1, n_items + 1):
        scores = scores_after(model, [last])
        for j in range(1, n_items + 1):
            both = sum(1 for s in sets if last in s and j in s) if j != last else 0
            if both:
                sup_i = sum(1 for s in sets if last in s)
                sup_j = sum(1 for s in sets if j in s)
                expected = both / math.sqrt((sup_i + 20) * (sup_j + 20))
                assert scores[j].item() == pytest.approx(expected, rel=1e-5)
            else:
                assert scores[j].item() < 0


# ---- SKNN ---------------------------------------------------------------------------

SKNN_TRAIN = [[1, 2], [2, 3], [3, 4], [1, 5]]  # sessions 1..4, later = more recent


def test_sknn_cosine_neighbours_by_hand() -> None:
    model = fitted("sknn", 5, SKNN_TRAIN)
    scores = scores_after(model, [2])  # neighbours: sessions 1 and 2, sim 1/sqrt(2) each
    half = 1 / math.sqrt(2)
    assert scores[1].item() == pytest.approx(half)
    assert scores[2].item() == pytest.approx(2 * half)
    assert scores[3].item() == pytest.approx(half)
    assert scores[4] < 0 and scores[5] < 0


def test_sknn_ties_go_to_the_most_recent_sessions() -> None:
    # current {2, 5}: sessions 1, 2, 4 all have sim 1/sqrt(2*2) = 0.5
    scores = scores_after(fitted("sknn", 5, SKNN_TRAIN), [2, 5])
    assert [round(scores[i].item(), 6) for i in range(1, 6)][:3] == [1.0, 1.0, 0.5]
    top2 = scores_after(fitted("sknn", 5, SKNN_TRAIN, k=2), [2, 5])  # sessions 4 and 2
    assert [round(top2[i].item(), 6) for i in (1, 2, 3, 5)] == [0.5, 0.5, 0.5, 0.5]
    sample1 = scores_after(fitted("sknn", 5, SKNN_TRAIN, sample_size=1), [2, 5])  # session 4
    assert sample1[1].item() == pytest.approx(0.5) and sample1[3] < 0


def _brute_sknn(sessions: list[list[int]], current: list[int], k: int, m: int,
                n_items: int) -> list[float]:
    s = set(current)
    sharing = [index for index in range(len(sessions)) if s & set(sessions[index])]
    sample = sorted(sharing, reverse=True)[:m]  # most recent first
    sims = {n: len(s & set(sessions[n])) / math.sqrt(len(s) * len(set(sessions[n])))
            for n in sample}
    best = sorted(sample, key=lambda n: (-sims[n], -n))[:k]
    return [sum(sims[n] for n in best if i in sessions[n]) for i in range(n_items + 1)]


def test_sknn_matches_brute_force() -> None:
    rng = random.Random(5)
    n_items = 20
    sessions = [[rng.randint(1, n_items) for _ in range(rng.randint(1, 5))] for _ in range(80)]
    model = fitted("sknn", n_items, sessions, k=7, sample_size=12)
    for _ in range(20):
        current = [rng.randint(1, n_items) for _ in range(rng.randint(1, 4))]
        scores = scores_after(model, current)
        expected = _brute_sknn(sessions, current, 7, 12, n_items)
        for item in range(1, n_items + 1):
            if expected[item] > 0:
                assert scores[item].item() == pytest.approx(expected[item], rel=1e-5)
            else:
                assert scores[item].item() < 0


def test_sknn_checkpoint_round_trip(tmp_path: Path) -> None:
    """The session table is sized by the data; a saved run must load into a fresh model."""
    dataset = make_tiny_dataset()
    model, _ = train("sknn", dataset, tmp_path / "run", progress=False)
    loaded, info = load_run(tmp_path / "run")
    assert info["model"] == "sknn"
    assert loaded.session_items.shape == model.session_items.shape  # type: ignore[union-attr]
    assert loaded.session_items.shape[0] > 1  # type: ignore[union-attr]
    clicks = [3, 4, 5]
    assert torch.equal(scores_after(model, clicks), scores_after(loaded, clicks))


def test_sknn_eager_shortcut_equals_the_exported_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager scoring narrows the candidate sort (used slots, m*|s| largest ids); the traced
    (ONNX) path sorts everything. Both must give the same scores, repeats included."""
    rng = random.Random(11)
    n_items = 12
    sessions = [[rng.randint(1, n_items) for _ in range(rng.randint(1, 6))] for _ in range(90)]
    model = fitted("sknn", n_items, sessions, k=5, sample_size=8, window=6)
    generator = torch.Generator().manual_seed(2)
    window = torch.randint(0, n_items + 1, (16, 6), generator=generator)
    window[:, 0] = window[:, 3]  # repeated clicks
    window[:4, :3] = 0            # short sessions
    eager = model.score({"window": window})
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    traced_path = model.score({"window": window})
    assert torch.equal(eager, traced_path)


def test_popularity_helpers_equal_pop() -> None:
    from models.popularity import popularity_fallback, popularity_ranks

    rng = random.Random(4)
    sessions = [[rng.randint(1, 9) for _ in range(rng.randint(1, 5))] for _ in range(30)]
    pop = fitted("pop", 10, sessions)  # item 10 is never clicked
    assert torch.equal(popularity_ranks(sessions, 10), pop.rank_scores)  # type: ignore[arg-type]
    fallback = popularity_fallback(sessions, 10)
    assert bool((fallback[1:] < 0).all()) and bool((fallback[1:] > -1).all())
    assert torch.equal(torch.argsort(fallback[1:], descending=True, stable=True),
                       torch.argsort(pop.rank_scores[1:], descending=True, stable=True))  # type: ignore[index]
