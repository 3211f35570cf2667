"""Item-KNN: recommend the items most similar to the last clicked item.

Paper: the item-kNN baseline of Hidasi et al., "Session-based Recommendations with
Recurrent Neural Networks", ICLR 2016, sec. 4.1, repeated by Li et al. (NARM, CIKM 2017,
sec. 4.2): "an item that is similar to the previously clicked item is recommended and the
similarity is defined as the cosine similarity between the vector of sessions, i.e. the
number of co-occurrences of two items in sessions divided by the square root of the
product of the number of sessions in which each item occurs. Regularization is also
included to avoid coincidental high similarities between rarely visited items."
The regularised form is the one of the GRU4Rec authors' baseline code (defaults
``n_sims = 100, lambda = 20, alpha = 0.5``)::

    sim(i, j) = |S_i ∩ S_j| / ((|S_i| + λ)^α · (|S_j| + λ)^(1-α))        (i != j)

with ``S_i`` the training sessions containing item i (α = 0.5 is the regularised cosine
``|S_i ∩ S_j| / sqrt((|S_i| + λ)(|S_j| + λ))``). Scores of the next item after a session
whose last click is ``l``: ``score(j) = sim(l, j)`` for the ``n_sims`` nearest neighbours
of l, nothing for other items. Non-neural: fitted by counting (``batching = "counts"``).

Deviations from the paper:
- ``|S_i|`` counts sessions (as the papers' text says), not click events (the reference
  code's ``supp``); repeated clicks of an item in one session count once.
- Items outside the neighbour list (and every item when the session has no usable click)
  are ranked below all neighbours by global popularity (score ``r(j) / (N + 2) - 1`` in
  (-1, 0), r = popularity rank value of ``pop``) instead of all tying at 0. This only
  changes ranks beyond the neighbour list, and is the popularity fallback the service
  needs anyway.
- The neighbour lists are dense ``[N+1, n_sims]`` buffers (item index int32, similarity
  float32; empty slots 0/0), so the ONNX score graph is a gather plus a scatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.neighbours import cooccurrence, session_item_pairs, top_per_row
from models.popularity import popularity_fallback
from models.registry import register


@dataclass
class ItemKNNConfig(ModelConfig):
    n_sims: int = 100         # neighbours kept per item
    lmbd: float = 20.0        # λ: support regulariser
    alpha: float = 0.5        # α: 0.5 = (regularised) cosine


@register
class ItemKNN(SessionModel):
    name = "iknn"
    config_class = ItemKNNConfig
    batching = "counts"
    neighbours: Tensor    # [N+1, n_sims] int32 neighbour item (0 = empty)
    similarities: Tensor  # [N+1, n_sims] float32 sim(i, neighbour)
    fallback: Tensor      # [N+1] float32 r(j) / (N + 2) - 1

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.n_sims = int(self.config.n_sims)  # type: ignore[attr-defined]
        if self.n_sims < 1:
            raise ValueError(f"iknn: n_sims must be >= 1, got {self.n_sims}")
        self.register_buffer("neighbours", torch.zeros((n_items + 1, self.n_sims),
                                                       dtype=torch.int32))
        self.register_buffer("similarities", torch.zeros((n_items + 1, self.n_sims)))
        self.register_buffer("fallback", torch.full((n_items + 1,), -1.0))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("last", (1,), "int64", "session")]

    def fit_counts(self, sessions: list[list[int]]) -> None:
        lmbd, alpha = float(self.config.lmbd), float(self.config.alpha)  # type: ignore[attr-defined]
        _, item, offsets = session_item_pairs(sessions, self.n_items, self.name)
        support = torch.bincount(item, minlength=self.n_items + 1).to(torch.float64)  # |S_i|
        rows, columns, counts = cooccurrence(item, offsets, self.n_items)        # |S_i ∩ S_j|
        sims = counts.to(torch.float64) / ((support[rows] + lmbd) ** alpha
                                           * (support[columns] + lmbd) ** (1.0 - alpha))
        index, value = top_per_row(rows, columns, sims, self.n_items + 1, self.n_sims)
        self.neighbours.copy_(index.to(torch.int32))
        self.similarities.copy_(value.to(torch.float32))
        self.fallback.copy_(popularity_fallback(sessions, self.n_items))

    def advance(self, item: Tensor, state: State) -> State:
        last = state["last"]                                                       # [B, 1]
        return {"last": torch.where((item != 0).unsqueeze(1), item.unsqueeze(1), last)}

    def score(self, state: State) -> Tensor:
        last = state["last"][:, 0]                                                 # [B]
        index = self.neighbours[last].to(torch.int64)                              # [B, n]
        value = self.similarities[last]                                            # [B, n]
        base = torch.zeros((last.shape[0], self.n_items + 1), dtype=value.dtype,
                           device=value.device)
        sims = base.scatter_add(1, index, value)                # empty slots -> column 0
        scores = torch.where(sims > 0, sims, self.fallback.unsqueeze(0))          # [B, N+1]
        return self.mask_padding(scores)

    def forward(self, items: Tensor, state: State) -> Tensor:
        return self.forward_by_steps(items, state)                                 # [B, T, N+1]
