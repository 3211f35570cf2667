"""Item popularity: the one ranking every popularity-based part uses — POP and S-POP's
scores, the kNN baselines' fallback, and the exporter's ``popular.json`` (the service's
no-session list). Most clicked first; equal counts by lower item index.

Tensors only; runs once at fit / export time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def click_counts(sessions: list[list[int]], n_items: int, model: str = "popularity"
                 ) -> Tensor:
    """Training clicks per item, float64 [N+1] (index 0 -> 0). Items must lie in
    ``1..n_items``."""
    flat = torch.tensor([i for s in sessions for i in s], dtype=torch.int64)
    if flat.numel() and (int(flat.min()) < 1 or int(flat.max()) > n_items):
        raise ValueError(f"{model}: a training session has an item outside 1..{n_items}")
    counts = torch.bincount(flat, minlength=n_items + 1)[: n_items + 1].to(torch.float64)
    counts[0] = 0.0
    return counts


def popularity_order(counts: Tensor) -> Tensor:
    """Item indices 1..N most clicked first, ties by lower index: [N] int64 from
    ``counts`` [N+1] (index 0 is padding and never listed)."""
    return torch.sort(-counts[1:], stable=True).indices + 1


def popularity_ranks(sessions: list[list[int]], n_items: int) -> Tensor:
    """``pop``'s rank value per item, float32 [N+1] (index 0 -> 0): N for the most
    clicked item down to 1 for the least (exact in float32 up to 2^24 items)."""
    return rank_values(click_counts(sessions, n_items))


def rank_values(counts: Tensor) -> Tensor:
    """Rank value per item from click counts [N+1] -> float32 [N+1] (see
    ``popularity_ranks``)."""
    n_items = counts.shape[0] - 1
    ranks = torch.zeros(n_items + 1, dtype=torch.float64)
    ranks[popularity_order(counts)] = torch.arange(n_items, 0, -1, dtype=torch.float64)
    return ranks.to(torch.float32)


def popularity_fallback(sessions: list[list[int]], n_items: int) -> Tensor:
    """``r(i) / (N + 2) - 1`` per item (float32 [N+1], in (-1, 0)): the popularity rank
    value r of ``pop``, squeezed below every positive score so that items without a
    neighbour score are ranked by popularity."""
    return popularity_ranks(sessions, n_items) / (n_items + 2) - 1.0
