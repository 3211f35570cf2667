"""S-POP: recommend the items clicked most often in the current session.

Paper: the session-popularity baseline of Hidasi et al., "Session-based Recommendations
with Recurrent Neural Networks", ICLR 2016, sec. 4.1 ("S-POP: This baseline recommends
the most popular items of the current session. The recommendation list changes during
the session as items gain more events. Ties are broken up using global popularity
values."), also used by Li et al. (NARM, CIKM 2017) and Quadrana et al. (RecSys 2017).
Non-neural: fitted by counting (``batching = "counts"``), no hyperparameters in the paper.

Model (per session ``s`` and item ``i``)::

    c_s(i)   = number of clicks on i in the session so far               (session popularity)
    r(i)     = global popularity rank value of i, 1..N (N = most clicked; ties: lower index)
    score(i) = c_s(i) * (N + 1) + r(i)

so items are ordered by session count first and by global popularity within equal counts
(every score is an integer below 2^24, hence exact in float32 in every runtime).

Deviations from the paper:
- The session state is the bounded window of the last ``window`` clicks (int64, 0 =
  empty slot), not an unbounded count table: ``c_s`` counts clicks in that window only.
  The default (50) is longer than every session of the benchmark datasets' test prefixes
  (tmall-benchmark's longest is 39), so there it changes nothing. The score graph builds
  the counts with a scatter-add, which exports to ONNX ``ScatterElements(reduction=add)``.
- Global-popularity ties are ordered by item index (as in ``pop``), so results are
  deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.popularity import popularity_ranks
from models.registry import register
from models.window import shift_in

_FLOAT32_EXACT = 2 ** 24


@dataclass
class SPopConfig(ModelConfig):
    window: int = 50  # clicks of the session the counts look at (the serving state)


@register
class SPop(SessionModel):
    name = "spop"
    config_class = SPopConfig
    batching = "counts"
    rank_scores: Tensor  # [N+1] global popularity rank value (buffer)

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.window = int(self.config.window)  # type: ignore[attr-defined]
        if self.window < 1:
            raise ValueError(f"spop: window must be >= 1, got {self.window}")
        if (self.window + 1) * (n_items + 1) >= _FLOAT32_EXACT:
            raise ValueError(f"spop: window {self.window} x {n_items} items exceeds exact "
                             f"float32 scores (2^24); use a smaller window")
        self.register_buffer("rank_scores", torch.zeros(n_items + 1, dtype=torch.float32))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("window", (self.window,), "int64", "session")]

    def fit_counts(self, sessions: list[list[int]]) -> None:
        """Global popularity ranks, exactly as ``pop`` computes them."""
        if any(i < 1 or i > self.n_items for s in sessions for i in s):
            raise ValueError(f"spop: a training session has an item outside 1..{self.n_items}")
        self.rank_scores.copy_(popularity_ranks(sessions, self.n_items))

    def advance(self, item: Tensor, state: State) -> State:
        return {"window": shift_in(state["window"], item)}                         # [B, W]

    def score(self, state: State) -> Tensor:
        window = state["window"]                                                   # [B, W]
        base = self.rank_scores.unsqueeze(0).expand(window.shape[0], -1)           # [B, N+1]
        ones = torch.full(window.shape, float(self.n_items + 1), dtype=base.dtype,
                          device=base.device)
        # c_s(i) * (N + 1) + r(i); empty slots (0) land in the padding column
        scores = base.scatter_add(1, window, ones)                                 # [B, N+1]
        return self.mask_padding(scores)

    def forward(self, items: Tensor, state: State) -> Tensor:
        return self.forward_by_steps(items, state)                                 # [B, T, N+1]
