"""POP: recommend the items clicked most often in the training set.

Paper: the popularity baseline of all the papers this project implements (e.g. Hidasi
et al., ICLR 2016, sec. 4.1; Quadrana et al., RecSys 2017, sec. 4.2). Non-neural: fitted
by counting (``batching = "counts"``), no hyperparameters.

Model::

    count(i) = number of training clicks on item i
    score(i) = rank value: higher for more clicks; equal counts ordered by item index
               (lower index first)

Deviations from the paper:
- Scores are the popularity *rank* (n_items + 1 - rank, exact in float32 up to 2^24
  items) rather than the raw counts, so ties are broken by index deterministically in
  every runtime (a float32 count plus a tie-break fraction loses the fraction for large
  counts, and ``topk`` gives no tie order). The raw counts are kept in the ``counts``
  buffer.
- To satisfy the serving interface (``score`` must know the batch size), the session
  state is one int64 per row, ``clicks``: the number of clicks folded in so far. It does
  not influence the scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.popularity import click_counts, rank_values
from models.registry import register


@register
class Pop(SessionModel):
    name = "pop"
    batching = "counts"
    counts: Tensor       # [N+1] training clicks per item (buffer)
    rank_scores: Tensor  # [N+1] popularity rank value (buffer)

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.register_buffer("counts", torch.zeros(n_items + 1, dtype=torch.float32))   # [N+1]
        self.register_buffer("rank_scores", torch.zeros(n_items + 1, dtype=torch.float32))  # [N+1]

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("clicks", (1,), "int64", "session")]

    def fit_counts(self, sessions: list[list[int]]) -> None:
        """Count clicks of items 1..n_items (``models.popularity``); other indices are a
        caller bug."""
        counts = click_counts(sessions, self.n_items, self.name)                  # [N+1]
        self.counts.copy_(counts.to(torch.float32))
        self.rank_scores.copy_(rank_values(counts))

    def advance(self, item: Tensor, state: State) -> State:
        clicks = state["clicks"]                                                   # [B, 1]
        return {"clicks": clicks + (item != 0).to(clicks.dtype).unsqueeze(1)}

    def score(self, state: State) -> Tensor:
        batch = state["clicks"][:, :1].to(self.rank_scores.dtype)                 # [B, 1]
        scores = batch * 0.0 + self.rank_scores.unsqueeze(0)                       # [B, N+1]
        return self.mask_padding(scores)

    def forward(self, items: Tensor, state: State) -> Tensor:
        scores = self.score(state)                                                 # [B, N+1]
        return scores.unsqueeze(1).expand(-1, items.shape[1], -1)                  # [B, T, N+1]

    def loss(self, batch: Any) -> Tensor:
        raise NotImplementedError("pop is fitted with fit_counts, not by gradient descent")
