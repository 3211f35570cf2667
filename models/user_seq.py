"""Shared machinery of the per-user sequential models (RUM, BPR-MF, FPMC): a leaf module,
not a model (nothing here is registered).

Each such model scores ``p_u`` (an intrinsic user embedding ``p*_u``) against item
embeddings, optionally with a per-user memory of the user's past events. It maps onto
the serving interface of ``models.base`` like this:

* user state:    ``user_<memory>`` (the model's memory tensors), ``user_intrinsic`` [D]
  (``p*_u``) and ``user_known`` [1] int64 (1 = ``user_intrinsic`` holds a trained
  ``p*_u``). The service creates zeros: ``user_known = 0`` -> the learned *default
  intrinsic embedding* (row 0 of the user table) is used.
* session state: ``<memory>`` (a copy of the user memory taken at session start and
  written after every click by ``advance``) and ``intrinsic`` [D] (the resolved ``p*``).
* ``end_session`` returns the session's memory as the new user memory (the write of
  every click of the session, applied exactly once); ``p*`` is carried unchanged.
* ``user_state_for(users)`` seeds ``user_intrinsic`` from the trained user table for
  users known at training time (offline evaluation). The service knows users only by
  external id and starts from zeros, i.e. from the default embedding.

Training (``batching = "user-sequence"``): a row plays one user's training events in time
order (``training.fit.batching``); at every event the model scores the clicked item and one
uniformly sampled negative from the memory *before* the event, then writes the event.
Memory is carried between chunks (detached) and reset when a new user takes the row.
The default embedding is trained by replacing a row's user id with 0 with probability
``unknown_user_rate`` at every step (a "user dropout"), so it is the embedding of a
typical user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SessionModel, State, StateSpec, spec_zeros
from models.batches import UserSteps


@dataclass
class UserSequenceConfig(ModelConfig):
    """Fields every user-sequence model shares (RUM and its baselines BPR-MF, FPMC)."""

    embedding_size: int = 50        # D
    l2: float = 1e-5                # λ
    unknown_user_rate: float = 0.05  # user dropout that trains the default p*
    # training (read by training.fit.loop)
    batch_size: int = 32            # user rows (training settings: ours, see README)
    bptt: int = 10                  # events per update
    optimizer: str = "adam"
    learning_rate: float = 0.01
    epochs: int = 20


class UserSequenceModel(SessionModel):
    """Base of RUM / BPR-MF / FPMC. Subclasses implement ``memory_spec``,
    ``write`` and ``candidate_scores`` and set ``self.embedding_size``."""

    batching = "user-sequence"
    #: "bce" (RUM eq. 5: one positive, one sampled negative) or "bpr" (BPR-MF, FPMC)
    loss_kind = "bce"

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        dim = int(self.config.embedding_size)  # type: ignore[attr-defined]
        self.embedding_size = dim
        # row 0: the learned default intrinsic embedding of unknown users
        self.user_embedding = nn.Embedding(n_users + 1, dim)                       # [U+1, D]
        nn.init.normal_(self.user_embedding.weight, std=0.1)

    # ---- to implement ---------------------------------------------------------------
    def memory_spec(self) -> list[StateSpec]:
        """Session-scoped memory tensors (the user copies are derived)."""
        raise NotImplementedError

    def write(self, item: Tensor, memory: State) -> State:
        """Fold clicks item [B] into the memory; item 0 leaves a row unchanged."""
        raise NotImplementedError

    def candidate_scores(self, intrinsic: Tensor, memory: State,
                         candidates: Tensor | None) -> Tensor:
        """Logits of candidates [B, C] (or of all items 0..N when None): [B, C]."""
        raise NotImplementedError

    # ---- state --------------------------------------------------------------------
    def state_spec(self) -> list[StateSpec]:
        dim = self.embedding_size
        memory = self.memory_spec()
        return [*memory, StateSpec("intrinsic", (dim,), "float32", "session"),
                *[StateSpec(f"user_{s.name}", s.shape, s.dtype, "user") for s in memory],
                StateSpec("user_intrinsic", (dim,), "float32", "user"),
                StateSpec("user_known", (1,), "int64", "user")]

    def user_state_for(self, users: Tensor) -> State:
        """User state of dataset users (index 0 = unknown): the trained ``p*_u``."""
        state = self.init_user_state(users.shape[0])
        users = users.to(self._device())
        state["user_intrinsic"] = self.user_embedding(users).detach()
        state["user_known"] = (users != 0).to(torch.int64).unsqueeze(1)
        return state

    def default_intrinsic(self, batch_size: int) -> Tensor:
        return self.user_embedding.weight[:1].expand(batch_size, -1)               # [B, D]

    def start_session(self, user_state: State, batch_size: int) -> State:
        names = [s.name for s in self.memory_spec()]
        if "user_intrinsic" not in user_state:  # anonymous session
            state = {s.name: spec_zeros(s, batch_size, self._device()) for s in self.memory_spec()}
            state["intrinsic"] = self.default_intrinsic(batch_size).clone()
            return state
        known = user_state["user_known"] != 0                                      # [B, 1]
        intrinsic = torch.where(known, user_state["user_intrinsic"],
                                self.default_intrinsic(known.shape[0]))
        state = {name: user_state[f"user_{name}"].clone() for name in names}
        state["intrinsic"] = intrinsic
        return state

    def end_session(self, session_state: State, user_state: State) -> State:
        out = {f"user_{s.name}": session_state[s.name].clone() for s in self.memory_spec()}
        out["user_intrinsic"] = user_state["user_intrinsic"].clone()
        out["user_known"] = user_state["user_known"].clone()
        return out

    # ---- serving --------------------------------------------------------------------
    def advance(self, item: Tensor, state: State) -> State:
        memory = {s.name: state[s.name] for s in self.memory_spec()}
        out = self.write(item, memory)
        out["intrinsic"] = state["intrinsic"].clone()
        return out

    def score(self, state: State) -> Tensor:
        memory = {s.name: state[s.name] for s in self.memory_spec()}
        return self.mask_padding(self.candidate_scores(state["intrinsic"], memory, None))

    def forward(self, items: Tensor, state: State) -> Tensor:
        return self.forward_by_steps(items, state)                                 # [B, T, N+1]

    # ---- training ---------------------------------------------------------------
    def regularised_parameters(self, users: Tensor, items: Tensor) -> list[Tensor]:
        """Embeddings touched by a step, for the L2 term (users [B], items [B, C])."""
        return [self.user_embedding(users)]

    def loss(self, batch: Any) -> Tensor:
        """Eq. 5 (or BPR) averaged over the events of a user-sequence chunk, from empty
        memories."""
        return self.training_step(batch)[0]

    def training_step(self, batch: Any, carry: State | None = None
                      ) -> tuple[Tensor, State]:
        """Eq. 5 (or BPR) averaged over the events of a user-sequence chunk
        (``UserSteps``) and each row's memory after it, detached, to carry into the next
        chunk of the epoch."""
        steps: UserSteps = batch
        items, users, user_start = steps.items, steps.users, steps.user_start     # [B, T]
        rows, length = items.shape
        device = items.device
        fresh = {s.name: spec_zeros(s, rows, device) for s in self.memory_spec()}
        if carry is None or any(value.shape[0] != rows for value in carry.values()):
            carry = fresh
        memory = carry
        cfg = self.config
        total = torch.zeros((), device=device)
        count = 0
        for t in range(length):
            start = user_start[:, t]
            memory = {name: torch.where(start.view(-1, *[1] * (value.dim() - 1)),
                                        fresh[name], value) for name, value in memory.items()}
            positive = items[:, t]                                                 # [B]
            live = positive != 0
            if bool(live.any()):
                user = users[:, t]
                drop = torch.rand(rows, device=device) < cfg.unknown_user_rate  # type: ignore[attr-defined]
                user = torch.where(drop, torch.zeros_like(user), user)
                negative = torch.randint(1, self.n_items + 1, (rows,), device=device)
                candidates = torch.stack([positive, negative], dim=1)              # [B, 2]
                logits = self.candidate_scores(self.user_embedding(user), memory, candidates)
                if self.loss_kind == "bpr":
                    per_row = F.softplus(logits[:, 1] - logits[:, 0])   # -log σ(x_ui - x_uj)
                else:  # -log σ(y_ui) - log(1 - σ(y_uj))
                    per_row = F.softplus(-logits[:, 0]) + F.softplus(logits[:, 1])
                l2 = sum(p.pow(2).sum(-1) for p in
                         self.regularised_parameters(user, candidates))            # [B]
                per_row = per_row + cfg.l2 * l2  # type: ignore[attr-defined]
                total = total + (per_row * live).sum()
                count += int(live.sum())
            memory = self.write(positive, memory)
        carried = {name: value.detach() for name, value in memory.items()}
        if count == 0:
            return torch.zeros((), device=device), carried
        return total / count, carried
