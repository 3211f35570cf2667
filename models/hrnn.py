"""HRNN: hierarchical recurrent network for personalised session-based recommendation.

Paper: M. Quadrana, A. Karatzoglou, B. Hidasi, P. Cremonesi. "Personalizing
Session-based Recommendations with Hierarchical Recurrent Neural Networks", RecSys 2017.
Defaults are the authors' hgru4rec settings for the small (100/100) XING networks:
HRNN-Init: batch 50, Adagrad lr 0.1, momentum 0.0, dropout user/session/init 0.0/0.1/0.0;
HRNN-All: batch 100, Adagrad lr 0.1, momentum 0.2, dropout 0.1/0.1/0.2; TOP1, tanh.

Model (user u, sessions m = 1..M, clicks i_{m,1..n})::

    c_0 = 0
    c_m       = GRU_usr(s_m, c_{m-1})                  eq. 3, s_m = last hidden of session m
    s_{m+1,0} = tanh(W_init c_m + b_init)              eq. 4 (dropout_init on it)
    s_{m+1,n} = GRU_ses(i_{m+1,n}, s_{m+1,n-1})        eq. 5 (Init)
    s_{m+1,n} = GRU_ses([i_{m+1,n}; c_m], s_{m+1,n-1})      (All: c_m in every input;
                                                        W_c c_m enters the r and z gates)
    r_{m+1,n} = W_out s_{m+1,n} + b_out                scores over all items

Training: user-parallel mini-batches (Fig. 2): a row holds one user and plays the user's
sessions in order; when a row's session ends the row's user state is updated with eq. 3
and the next session starts from eq. 4; a new user taking the row starts from c = 0.
Loss TOP1 with the other rows' targets as negatives.

Gradient truncation (as the reference code, which keeps both hidden states in shared
variables and backpropagates one step): at a session start GRU_usr reads *detached*
copies of s_m and c_{m-1}, so the new session's loss trains GRU_usr and W_init through
one user step but never flows into the previous session or the older user history;
state carried between training chunks is detached as well.

Deviations from the paper:
- The first session of a user starts from tanh(W_init * 0 + b_init) (eq. 4 with c_0 = 0)
  instead of a zero vector, so serving needs no "has history" flag and anonymous sessions
  start exactly like a new user's first session.
- s_m is the hidden state after the session's *last* click (the service folds every
  click before closing a session); the reference code never feeds the last click.
- GRU gates use torch's parametrisation (reset applied after W_hn h), not Theano's.
- With several session layers only layer 0 is initialised from c_m; the others start at 0.
- HRNN-All: as in the authors' hgru4rec code, W_c c_m is added to the reset and update
  gate inputs only. The literal concatenation (c_m also in the candidate's input) is
  ``context_to_candidate=True``; it trained far worse in our runs (taobao-head, 5 epochs:
  valid Recall@20 0.09 vs 0.58).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.batches import ParallelSteps
from models.gru4rec import init_uniform_
from models.ranking_losses import LOSSES, ranking_loss
from models.registry import register
from models.stacked_gru import StackedGRU

VARIANTS = ("init", "all")


@dataclass
class HRNNConfig(ModelConfig):
    variant: str = "init"           # "init" (eq. 4) or "all" (eq. 4 + c_m in every input)
    hidden_size: int = 100          # GRU_ses units
    num_layers: int = 1             # GRU_ses layers
    user_hidden_size: int = 100     # GRU_usr units
    embedding_dim: int = 0          # 0 = one-hot input (an item table of width 3*hidden)
    context_to_candidate: bool = False  # All: c_m also feeds the candidate gate (see module doc)
    dropout_user: float = 0.0
    dropout_session: float = 0.1
    dropout_init: float = 0.0
    loss: str = "top1"
    bpreg: float = 1.0
    # training (read by training.fit.loop)
    batch_size: int = 50
    bptt: int = 1
    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    momentum: float = 0.0
    epochs: int = 10


@dataclass
class HRNNInitConfig(HRNNConfig):
    pass


@dataclass
class HRNNAllConfig(HRNNConfig):
    variant: str = "all"
    dropout_user: float = 0.1
    dropout_session: float = 0.1
    dropout_init: float = 0.2
    batch_size: int = 100
    momentum: float = 0.2


class HRNN(SessionModel):
    """GRU_ses + GRU_usr; ``config.variant`` selects HRNN-Init or HRNN-All."""

    name = "hrnn"
    config_class = HRNNConfig
    batching = "user-parallel"
    config: HRNNConfig

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        cfg = self.config
        self._check_variant("hrnn", cfg.variant, VARIANTS)
        if cfg.loss not in LOSSES:
            raise ValueError(f"{self.name}: loss must be one of {LOSSES}, got {cfg.loss!r}")
        self.use_context = cfg.variant == "all"
        gates = 3 * cfg.hidden_size
        # GRU_ses reads precomputed gate inputs (its W_ih is a frozen identity), so the
        # item and context parts of "[x(i); c] W_ih" can be written as separate matrices:
        # with one-hot input the item table *is* one-hot(i) W_x; with an embedding a
        # projection follows it.
        if cfg.embedding_dim == 0:
            self.item_input = nn.Embedding(n_items + 1, gates, padding_idx=0)      # [N+1, 3H]
            self.item_projection: nn.Linear | None = None
        else:
            self.item_input = nn.Embedding(n_items + 1, cfg.embedding_dim, padding_idx=0)
            self.item_projection = nn.Linear(cfg.embedding_dim, gates, bias=False)
        self.context_input: nn.Linear | None = None
        if self.use_context:
            self.context_input = nn.Linear(cfg.user_hidden_size, gates, bias=False)  # W_c
        # which gate inputs (r, z, n) the context feeds; see "Deviations"
        mask = torch.ones(gates)
        if not cfg.context_to_candidate:
            mask[2 * cfg.hidden_size:] = 0.0
        self.context_gate_mask: Tensor
        self.register_buffer("context_gate_mask", mask, persistent=False)
        self.session_gru = StackedGRU(gates, cfg.hidden_size, cfg.num_layers, identity_input=True)
        self.user_gru = StackedGRU(cfg.hidden_size, cfg.user_hidden_size, 1)
        self.init_layer = nn.Linear(cfg.user_hidden_size, cfg.hidden_size)        # W_init, b_init
        self.output_weight = nn.Parameter(torch.empty(n_items + 1, cfg.hidden_size))
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        init_uniform_(self)

    # ---- state --------------------------------------------------------------------
    def state_spec(self) -> list[StateSpec]:
        specs = [StateSpec("session_hidden", (self.session_gru.state_size,), "float32", "session")]
        if self.use_context:
            specs.append(StateSpec("user_context", (self.config.user_hidden_size,), "float32",
                                   "session"))
        specs.append(StateSpec("user_hidden", (self.config.user_hidden_size,), "float32", "user"))
        return specs

    def _initial_session(self, user_hidden: Tensor) -> Tensor:
        """Eq. 4 for layer 0, zeros for deeper layers: [B, U] -> [B, L*H]."""
        first = torch.tanh(self.init_layer(user_hidden))                           # [B, H]
        first = F.dropout(first, self.config.dropout_init, self.training)
        rest = first.new_zeros(first.shape[0], self.session_gru.state_size - first.shape[1])
        return torch.cat([first, rest], dim=1)

    def start_session(self, user_state: State, batch_size: int) -> State:
        user_hidden = user_state.get("user_hidden")
        if user_hidden is None:  # anonymous: c = 0
            user_hidden = torch.zeros(batch_size, self.config.user_hidden_size,
                                      device=self._device())
        state = {"session_hidden": self._initial_session(user_hidden)}
        if self.use_context:
            state["user_context"] = user_hidden.clone()
        return state

    def end_session(self, session_state: State, user_state: State) -> State:
        """Eq. 3: c_m = GRU_usr(s_m, c_{m-1})."""
        last = self.session_gru.top(session_state["session_hidden"])               # [B, H]
        user_hidden = user_state["user_hidden"]                                    # [B, U]
        return {"user_hidden": self.user_gru.step(last, user_hidden, self.config.dropout_user)}

    # ---- serving --------------------------------------------------------------------
    def _session_input(self, items: Tensor, context: Tensor | None) -> Tensor:
        """GRU_ses gate inputs [..., 3H] for items [B] or [B, T]; context [B, U] (All)."""
        x: Tensor = self.item_input(items)                                         # [..., D]
        if self.item_projection is not None:
            x = self.item_projection(x)                                            # [..., 3H]
        if context is None or self.context_input is None:
            return x
        if items.dim() == 2:
            context = context.unsqueeze(1).expand(-1, items.shape[1], -1)          # [B, T, U]
        projected: Tensor = self.context_input(context)
        return x + projected * self.context_gate_mask

    def advance(self, item: Tensor, state: State) -> State:
        hidden = state["session_hidden"]
        context = state["user_context"] if self.use_context else None
        x = self._session_input(item, context)
        new = self.session_gru.step(x, hidden, self.config.dropout_session)
        result = {"session_hidden": torch.where((item != 0).unsqueeze(1), new, hidden)}
        if context is not None:
            result["user_context"] = context.clone()
        return result

    def score(self, state: State) -> Tensor:
        top = self.session_gru.top(state["session_hidden"])                        # [B, H]
        return self.mask_padding(top @ self.output_weight.T + self.output_bias)    # [B, N+1]

    # ---- training ---------------------------------------------------------------
    def forward(self, items: Tensor, state: State) -> Tensor:
        context = state["user_context"] if self.use_context else None
        x = self._session_input(items, context)                                    # [B, T, D]
        top = self.session_gru.sequence(x, state["session_hidden"], items != 0)    # [B, T, H]
        scores = top @ self.output_weight.T + self.output_bias
        return self.mask_padding(scores.flatten(0, 1)).view_as(scores)

    def loss(self, batch: Any) -> Tensor:
        """Mean ranking loss over a user-parallel chunk, from zero states."""
        return self.training_step(batch)[0]

    def training_step(self, batch: Any, carry: tuple[Tensor, Tensor] | None = None
                      ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Mean ranking loss over a user-parallel chunk (``ParallelSteps``) and each row's
        (session hidden, user hidden) after it, detached, to carry into the next chunk."""
        steps: ParallelSteps = batch
        rows, length = steps.items.shape
        device = steps.items.device
        if carry is None or carry[0].shape[0] != rows or carry[0].device != device:
            carry = (torch.zeros(rows, self.session_gru.state_size, device=device),
                     torch.zeros(rows, self.config.user_hidden_size, device=device))
        hidden, user_hidden = carry
        losses = []
        for t in range(length):
            session_start = steps.session_start[:, t].unsqueeze(1)                 # [B, 1]
            user_start = steps.user_start[:, t].unsqueeze(1)
            # eq. 3 on detached inputs: the previous session of this row just ended
            closed = self.end_session({"session_hidden": hidden.detach()},
                                      {"user_hidden": user_hidden.detach()})["user_hidden"]
            user_hidden = torch.where(session_start, closed, user_hidden)
            user_hidden = torch.where(user_start, torch.zeros_like(user_hidden), user_hidden)
            opened = self.start_session({"user_hidden": user_hidden}, rows)
            hidden = torch.where(session_start, opened["session_hidden"], hidden)   # eq. 4
            state = {"session_hidden": hidden}
            if self.use_context:
                state["user_context"] = user_hidden
            hidden = self.advance(steps.items[:, t], state)["session_hidden"]      # eq. 5
            step_loss = ranking_loss(self.session_gru.top(hidden), steps.targets[:, t],
                                     self.output_weight, self.output_bias,
                                     self.config.loss, self.config.bpreg)
            if step_loss is not None:
                losses.append(step_loss)
        carried = (hidden.detach(), user_hidden.detach())
        if not losses:
            return torch.zeros((), device=device), carried
        return torch.stack(losses).mean(), carried


@register
class HRNNInit(HRNN):
    """HRNN-Init: the user state only initialises each session (eq. 4)."""

    name = "hrnn-init"
    config_class = HRNNInitConfig


@register
class HRNNAll(HRNN):
    """HRNN-All: eq. 4 plus c_m concatenated to GRU_ses's input at every step."""

    name = "hrnn-all"
    config_class = HRNNAllConfig
