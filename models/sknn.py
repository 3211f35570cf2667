"""SKNN: session-based k-nearest-neighbours.

Paper: Jannach & Ludewig, "When Recurrent Neural Networks meet the Neighborhood for
Session-Based Recommendation", RecSys 2017, sec. 2.2 (defaults of their session-kNN:
k = 100 neighbours from a sample of m = 500 recent sessions). For the current session s
(binary item vector) and a past training session n::

    sim(s, n)  = |s ∩ n| / sqrt(|s| · |n|)                       (cosine of binary vectors)
    M(s)       = the m most recent training sessions sharing at least one item with s
    N_k(s)     = the k sessions of M(s) with the highest sim(s, n)
    score(i)   = Σ_{n ∈ N_k(s)} sim(s, n) · 1[i ∈ n]

Non-neural: fitted by indexing the training sessions (``batching = "counts"``).

Deviations from the paper:
- "Recent" is the order of the training sessions as given to ``fit_counts`` (the prepared
  dataset orders them by user, then start time: time order on anonymous data).
- The current session is the window of its last ``window`` clicks (the serving state,
  int64, 0 = empty); a training session keeps at most ``max_session_items`` distinct items
  (its first ones). Defaults 50 / 50 exceed every session of the benchmark datasets.
- Neighbours are chosen by sim rounded down to 2^-24, ties by recency, so PyTorch and ONNX
  Runtime pick the same k sessions (``topk`` has no defined tie order).
- Items no neighbour contains are ranked below all others by global popularity, as in
  ``iknn`` (score ``r(i) / (N + 2) - 1``).

ONNX: the index is dense buffers (see ``fit_counts``), so the score graph is gathers, a
sort over ``window · m`` candidate ids, two TopKs and scatters. Buffer sizes: item->sessions
``(N+1) · m`` int32 (40k items: 80 MB) and session->items ``(S+1) · max_session_items``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.knn_util import session_item_pairs, top_per_row
from models.pop import Pop
from models.registry import register

_SIM_STEPS = 2 ** 24     # sim quantisation for the neighbour choice
_MAX_SESSIONS = 2 ** 26  # session ids must fit beside the quantised sim in an int64 key


@dataclass
class SKNNConfig(ModelConfig):
    k: int = 100                   # neighbour sessions
    sample_size: int = 500         # m: most recent sessions sharing an item
    window: int = 50               # clicks of the current session (serving state)
    max_session_items: int = 50    # distinct items stored per training session


@register
class SKNN(SessionModel):
    name = "sknn"
    config_class = SKNNConfig
    batching = "counts"
    item_sessions: Tensor  # [N+1, m] int32: most recent sessions (1..S) with the item, 0 = none
    session_items: Tensor  # [S+1, L] int32: distinct items of session s (row 0 = empty)
    session_size: Tensor   # [S+1] float32 |n| (stored items)
    fallback: Tensor       # [N+1] float32 r(i) / (N + 2) - 1

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        cfg = self.config
        self.k, self.m = int(cfg.k), int(cfg.sample_size)  # type: ignore[attr-defined]
        self.window = int(cfg.window)  # type: ignore[attr-defined]
        self.width = int(cfg.max_session_items)  # type: ignore[attr-defined]
        if min(self.k, self.m, self.window, self.width) < 1:
            raise ValueError(f"sknn: k, sample_size, window, max_session_items must be >= 1, "
                             f"got {self.k}, {self.m}, {self.window}, {self.width}")
        self.register_buffer("item_sessions", torch.zeros((n_items + 1, self.m),
                                                          dtype=torch.int32))
        # resized by fit_counts / when a checkpoint is loaded (depends on the data)
        self.register_buffer("session_items", torch.zeros((1, self.width), dtype=torch.int32))
        self.register_buffer("session_size", torch.zeros(1))
        self.register_buffer("fallback", torch.full((n_items + 1,), -1.0))

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("window", (self.window,), "int64", "session")]

    def fit_counts(self, sessions: list[list[int]]) -> None:
        if len(sessions) >= _MAX_SESSIONS:
            raise ValueError(f"sknn: at most {_MAX_SESSIONS - 1} training sessions")
        session, item, offsets = session_item_pairs(sessions, self.n_items, self.name)
        sid = session + 1                                       # 1..S; 0 = no session
        rank = torch.arange(item.numel()) - offsets[session]    # first-click order in session
        keep = rank < self.width
        table = torch.zeros((len(sessions) + 1, self.width), dtype=torch.int32)
        table[sid[keep], rank[keep]] = item[keep].to(torch.int32)
        self.session_items = table
        self.session_size = (table > 0).sum(1).to(torch.float32)
        # per item: the m most recent sessions (largest ids) that contain it
        recent, _ = top_per_row(item[keep], sid[keep], sid[keep].to(torch.float64),
                                self.n_items + 1, self.m)
        self.item_sessions.copy_(recent.to(torch.int32))
        pop = Pop(self.n_items, self.n_users)
        pop.fit_counts(sessions)
        self.fallback.copy_(pop.rank_scores / (self.n_items + 2) - 1.0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        for name in ("session_items", "session_size"):  # data-sized: take the saved shape
            if prefix + name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def advance(self, item: Tensor, state: State) -> State:
        window = state["window"]                                                   # [B, W]
        shifted = torch.cat([window[:, 1:], item.unsqueeze(1).to(window.dtype)], dim=1)
        return {"window": torch.where((item != 0).unsqueeze(1), shifted, window)}

    def score(self, state: State) -> Tensor:
        window = state["window"]                                                   # [B, W]
        batch = window.shape[0]
        zeros = torch.zeros((batch, self.n_items + 1), device=window.device)
        present = zeros.scatter(1, window, torch.ones(window.shape, device=window.device))
        present = torch.cat([zeros[:, :1], present[:, 1:]], dim=1)      # binary s, [B, N+1]
        size = present.sum(1, keepdim=True)                                        # |s| [B, 1]
        # M(s): distinct candidate ids, most recent first (duplicates -> 0)
        candidates = self.item_sessions[window].to(torch.int64).reshape(batch, -1)  # [B, W*m]
        ordered = torch.sort(candidates, dim=1, descending=True).values
        repeated = torch.cat([torch.zeros_like(ordered[:, :1], dtype=torch.bool),
                              ordered[:, 1:] == ordered[:, :-1]], dim=1)
        ordered = torch.where(repeated, torch.zeros_like(ordered), ordered)
        m = min(self.m, ordered.shape[1])
        sample = torch.topk(ordered, m, dim=1).values                              # [B, m]
        # sim(s, n) = |s ∩ n| / sqrt(|s| |n|)
        items = self.session_items[sample].to(torch.int64)                         # [B, m, L]
        overlap = present.gather(1, items.reshape(batch, -1)).reshape(items.shape).sum(2)
        norm = torch.sqrt(size * self.session_size[sample]).clamp_min(1.0)        # [B, m]
        sim = overlap / norm                                                       # [B, m]
        # N_k(s): top-k by (sim rounded to 2^-24, then recency)
        key = torch.floor(sim * _SIM_STEPS).to(torch.int64) * _MAX_SESSIONS + sample
        k = min(self.k, m)
        chosen = torch.topk(key, k, dim=1).indices                                 # [B, k]
        weight = sim.gather(1, chosen)                                             # [B, k]
        members = items.gather(1, chosen.unsqueeze(2).expand(-1, -1, items.shape[2]))
        # score(i) = Σ_n sim(s, n) 1[i ∈ n]; empty slots add to column 0
        contribution = weight.unsqueeze(2).expand(members.shape).reshape(batch, -1)
        sums = zeros.scatter_add(1, members.reshape(batch, -1), contribution)      # [B, N+1]
        scores = torch.where(sums > 0, sums, self.fallback.unsqueeze(0))
        return self.mask_padding(scores)

    def forward(self, items: Tensor, state: State) -> Tensor:
        outputs = []
        for position in range(items.shape[1]):
            scores, state = self.step(items[:, position], state)
            outputs.append(scores)
        return torch.stack(outputs, dim=1)                                         # [B, T, N+1]

    def loss(self, batch: Any) -> Tensor:
        raise NotImplementedError("sknn is fitted with fit_counts, not by gradient descent")
