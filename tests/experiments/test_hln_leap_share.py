"""experiments/hln_leap_share.py: the leap-gate diagnostic that docs/results.md quotes."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from models import registry
from tests.helpers import load_experiment, make_tiny_dataset


@pytest.fixture(scope="module")
def leap() -> ModuleType:
    return load_experiment("hln_leap_share")


def test_windows_end_before_each_target_and_gate_extremes_are_counted(leap: ModuleType) -> None:
    dataset = make_tiny_dataset(n_users=6, n_items=12, sessions_per_user=3)
    windows = leap.test_windows(dataset, 4, 1000)
    assert windows.shape[1] == 4 and len(windows) == int(dataset.test["target"].sum())
    assert bool((windows[:, -1] != 0).all())  # every target has a click just before it
    torch.manual_seed(0)
    model = registry.build("hln", 12, 0, embedding_dim=3, hidden_size=4, max_length=4).eval()
    for bias, expected in ((100.0, 1.0), (-100.0, 0.0)):  # p_t -> 1: always leap; -> 0: never
        with torch.no_grad():
            model.w_q.bias.fill_(bias)
        shares = leap.leap_shares(model, windows)
        assert len(shares) == model.config.passes
        assert all(share == expected and abs(p - expected) < 1e-6 for share, p in shares)
