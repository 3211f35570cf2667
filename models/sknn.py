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

ONNX: the index is dense buffers (see ``fit_counts``). A candidate session appears in the
gathered item->sessions lists once per current item it holds, so after sorting the ids the
run lengths are the overlaps |s ∩ n| (exact for the m most recent: a session among them is
within the m most recent of each of its items). The exported graph sorts all ``window · m``
candidate ids; eager PyTorch takes only the used window slots and the ``m · |s|`` largest
ids (the same result, tested), which is what makes evaluation fast. Buffer sizes:
item->sessions ``(N+1) · m`` int32 (40k items: 80 MB), session->items ``(S+1) · L``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.neighbours import session_item_pairs, top_per_row
from models.popularity import popularity_fallback
from models.registry import register
from models.window import shift_in

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
        longest = int(rank[keep].max()) + 1 if bool(keep.any()) else 1
        table = torch.zeros((len(sessions) + 1, longest), dtype=torch.int32)
        table[sid[keep], rank[keep]] = item[keep].to(torch.int32)
        self.session_items = table
        self.session_size = (table > 0).sum(1).to(torch.float32)
        # per item: the m most recent sessions (largest ids) that contain it
        recent, _ = top_per_row(item[keep], sid[keep], sid[keep].to(torch.float64),
                                self.n_items + 1, self.m)
        self.item_sessions.copy_(recent.to(torch.int32))
        self.fallback.copy_(popularity_fallback(sessions, self.n_items))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        for name in ("session_items", "session_size"):  # data-sized: take the saved shape
            if prefix + name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def advance(self, item: Tensor, state: State) -> State:
        return {"window": shift_in(state["window"], item)}                         # [B, W]

    def score(self, state: State) -> Tensor:
        window = state["window"]                                                   # [B, W]
        batch, width = window.shape
        # distinct items of the session: a repeated click keeps only its last slot
        later = torch.triu(torch.ones((width, width), dtype=torch.bool,
                                      device=window.device), diagonal=1)           # j > i
        seen_later = ((window.unsqueeze(2) == window.unsqueeze(1)) & later).any(2)
        distinct = torch.where(seen_later, torch.zeros_like(window), window)      # [B, W]
        size = (distinct > 0).sum(1, keepdim=True).to(torch.float32)               # |s| [B, 1]
        # M(s): each candidate session appears once per current item it holds (<= |s|)
        eager = not (torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
                     or torch.compiler.is_exporting())
        if eager:  # narrow to the used slots and the m*|s| largest ids: same result
            used = max(int((window > 0).sum(1).max()), 1)
            distinct = distinct[:, width - used:]
        candidates = self.item_sessions[distinct].to(torch.int64).reshape(batch, -1)
        if eager:
            top = min(candidates.shape[1], self.m * max(int(size.max()), 1))
            ordered = torch.topk(candidates, top, dim=1).values                   # descending
        else:
            ordered = torch.sort(candidates, dim=1, descending=True).values
        # runs of equal ids: run r holds session run_id[r], its length is |s ∩ n|
        starts = torch.cat([torch.ones_like(ordered[:, :1], dtype=torch.bool),
                            ordered[:, 1:] != ordered[:, :-1]], dim=1)
        run = torch.cumsum(starts.to(torch.int64), dim=1) - 1                     # [B, C]
        runs = torch.zeros_like(ordered)
        sample = runs.scatter(1, run, ordered)                     # distinct ids, most recent first
        overlap = torch.zeros(ordered.shape, device=window.device).scatter_add(
            1, run, torch.ones(ordered.shape, device=window.device))
        m = min(self.m, ordered.shape[1])
        sample = sample[:, :m]                                                     # [B, m]
        overlap = torch.where(sample > 0, overlap[:, :m], torch.zeros_like(overlap[:, :m]))
        # sim(s, n) = |s ∩ n| / sqrt(|s| |n|)
        norm = torch.sqrt(size * self.session_size[sample]).clamp_min(1.0)        # [B, m]
        sim = overlap / norm
        # N_k(s): top-k by (sim rounded to 2^-24, then recency)
        key = torch.floor(sim * _SIM_STEPS).to(torch.int64) * _MAX_SESSIONS + sample
        chosen = torch.topk(key, min(self.k, m), dim=1).indices                    # [B, k]
        weight = sim.gather(1, chosen)                                             # [B, k]
        members = self.session_items[sample.gather(1, chosen)].to(torch.int64)     # [B, k, L]
        # score(i) = Σ_n sim(s, n) 1[i ∈ n]; empty slots add to column 0
        contribution = weight.unsqueeze(2).expand(members.shape).reshape(batch, -1)
        sums = torch.zeros((batch, self.n_items + 1), device=window.device).scatter_add(
            1, members.reshape(batch, -1), contribution)                           # [B, N+1]
        scores = torch.where(sums > 0, sums, self.fallback.unsqueeze(0))
        return self.mask_padding(scores)

    def forward(self, items: Tensor, state: State) -> Tensor:
        return self.forward_by_steps(items, state)                                 # [B, T, N+1]
