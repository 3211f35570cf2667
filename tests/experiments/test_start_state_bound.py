"""experiments/start_state_bound.py: the per-user start-vector diagnostic that
docs/hrnn-synthetic.md quotes."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

from tests.helpers import load_experiment, make_tiny_dataset
from training.evaluation.replay import rank_cases


@pytest.fixture(scope="module")
def bound() -> ModuleType:
    return load_experiment("start_state_bound")


def test_zero_vector_ranks_are_the_evaluators_no_history_ranks(bound: ModuleType,
                                                               single_thread: None) -> None:
    dataset = make_tiny_dataset(n_users=10, n_items=30, sessions_per_user=5, seed=2)
    overrides = {"hidden_size": 16, "user_hidden_size": 16, "batch_size": 4}
    model = bound.train_bound(dataset, overrides, epochs=2, seed=3, log=False)
    with torch.no_grad():
        zero_ranks, zero_positions = bound.score_test_sessions(model, dataset, personalised=False)
        user_ranks, user_positions = bound.score_test_sessions(model, dataset, personalised=True)
    # the script's own scoring loop sees the same targets and ranks as `nextclick evaluate`
    reference = rank_cases(model, dataset, progress=False, ignore_history=True)
    expected = sorted(zip(reference.position.tolist(), reference.rank.tolist(), strict=True))
    assert sorted(zip(zero_positions.tolist(), zero_ranks.tolist(), strict=True)) == expected
    # the per-user vectors reach the scores
    assert np.array_equal(user_positions, zero_positions)
    assert not np.array_equal(user_ranks, zero_ranks)
