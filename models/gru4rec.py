"""GRU4Rec: session-based recommendation with a GRU over the clicks of a session.

Paper: B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk. "Session-based Recommendations
with Recurrent Neural Networks", ICLR 2016 — the "RNN" baseline of Quadrana et al.,
RecSys 2017. Defaults follow the authors' reference implementation (layers [100], batch
50, TOP1, Adagrad, learning rate 0.05, momentum 0, hidden dropout 0.5, one-hot input).

Model (per session, clicks i_1..i_n)::

    h_0 = 0
    h_t = GRU(x(i_t), h_{t-1})             x(i) = one-hot(i) W_x  (an item table)
    r_t = W_out h_t + b_out                 scores for every item, [n_items + 1]

Training: session-parallel mini-batches (B rows, each row plays one session after the
other; a row's hidden state is reset to 0 when its next session starts); at every step the
other rows' targets are the negatives of the ranking loss:
TOP1 (sec. 3.1.3) ``L = 1/N_S sum_j sigmoid(r_j - r_i) + sigmoid(r_j^2)``, BPR-max
(Hidasi & Karatzoglou 2018) or cross-entropy.

Deviations from the paper:
- ``ce`` is a full softmax over all items (the reference code's cross-entropy is a softmax
  over the in-batch targets only); TOP1 / BPR-max use in-batch negatives as in the paper,
  without the extra popularity-sampled negatives of GRU4Rec v2.
- The diagonal (j = i) is excluded from TOP1's mean instead of being subtracted afterwards.
- Backpropagation is truncated at batch boundaries (``training.fit.batching`` yields chunks of
  ``bptt`` steps, default 1 = the reference code) and the carried state is detached.
- ``score`` returns the output logits; the tanh final activation used with TOP1 is
  monotone, so rankings are identical.
- ``gru4rec-official`` is the same network with the settings its authors publish for
  yoochoose in GRU4Rec v2 (constrained embedding, cross-entropy, 480 units, ...); see the
  class for the one difference (full softmax instead of sampled negatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ModelConfig, SessionModel, State, StateSpec
from models.batches import ParallelSteps
from models.ranking_losses import LOSSES, ranking_loss
from models.registry import register
from models.stacked_gru import StackedGRU


@dataclass
class GRU4RecConfig(ModelConfig):
    hidden_size: int = 100          # GRU units (paper: 100 for the HRNN comparison)
    num_layers: int = 1
    embedding_dim: int = 0          # 0 = one-hot input (an item table of width 3*hidden)
    dropout_hidden: float = 0.5     # dropout on the hidden state (reference code default)
    dropout_embedding: float = 0.0
    loss: str = "top1"              # "top1" | "bpr-max" | "ce"
    bpreg: float = 1.0              # BPR-max score regularisation
    # GRU4Rec v2's constrained embedding: a click's input is its row of the output matrix
    # (no separate input table; the GRU's input width is the hidden size)
    constrained_embedding: bool = False
    # training (read by training.fit.loop)
    batch_size: int = 50
    bptt: int = 1                   # steps per optimiser update
    optimizer: str = "adagrad"
    learning_rate: float = 0.05
    momentum: float = 0.0
    epochs: int = 10


def init_uniform_(module: nn.Module) -> None:
    """The reference code's initialisation: U(-s, s), s = sqrt(6 / (fan_in + fan_out)),
    biases zero."""
    for param in module.parameters():
        if not param.requires_grad:
            continue
        if param.dim() < 2:
            nn.init.zeros_(param)
        else:
            bound = (6.0 / (param.shape[0] + param.shape[1])) ** 0.5
            nn.init.uniform_(param, -bound, bound)


@register
class GRU4Rec(SessionModel):
    name = "gru4rec"
    config_class = GRU4RecConfig
    batching = "session-parallel"
    config: GRU4RecConfig

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        cfg = self.config
        if cfg.loss not in LOSSES:
            raise ValueError(f"gru4rec: loss must be one of {LOSSES}, got {cfg.loss!r}")
        one_hot = cfg.embedding_dim == 0 and not cfg.constrained_embedding
        if cfg.constrained_embedding:
            input_size = cfg.hidden_size
            self.item_input: nn.Embedding | None = None  # the output matrix's rows instead
        else:
            input_size = 3 * cfg.hidden_size if one_hot else cfg.embedding_dim
            self.item_input = nn.Embedding(n_items + 1, input_size, padding_idx=0)  # [N+1, D]
        self.gru = StackedGRU(input_size, cfg.hidden_size, cfg.num_layers, identity_input=one_hot)
        self.output_weight = nn.Parameter(torch.empty(n_items + 1, cfg.hidden_size))  # [N+1, H]
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))                    # [N+1]
        init_uniform_(self)

    # ---- state --------------------------------------------------------------------
    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("session_hidden", (self.gru.state_size,), "float32", "session")]

    # ---- serving --------------------------------------------------------------------
    def _embed(self, items: Tensor) -> Tensor:
        table = self.output_weight if self.item_input is None else self.item_input.weight
        return F.dropout(F.embedding(items, table, padding_idx=0),
                         self.config.dropout_embedding, self.training)

    def advance(self, item: Tensor, state: State) -> State:
        hidden = state["session_hidden"]                                   # [B, L*H]
        new = self.gru.step(self._embed(item), hidden, self.config.dropout_hidden)
        keep = (item != 0).unsqueeze(1)                                    # [B, 1]
        return {"session_hidden": torch.where(keep, new, hidden)}

    def score(self, state: State) -> Tensor:
        top = self.gru.top(state["session_hidden"])                        # [B, H]
        return self.mask_padding(top @ self.output_weight.T + self.output_bias)  # [B, N+1]

    # ---- training ---------------------------------------------------------------
    def forward(self, items: Tensor, state: State) -> Tensor:
        """items: [B, T] -> scores [B, T, N+1] via the fused ``nn.GRU``."""
        top = self.gru.sequence(self._embed(items), state["session_hidden"], items != 0)
        scores = top @ self.output_weight.T + self.output_bias             # [B, T, N+1]
        return self.mask_padding(scores.flatten(0, 1)).view_as(scores)

    def loss(self, batch: Any) -> Tensor:
        """Mean ranking loss over a session-parallel chunk, from zero hidden states."""
        return self.training_step(batch)[0]

    def training_step(self, batch: Any, carry: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Mean ranking loss over a session-parallel chunk (``ParallelSteps``) and the
        rows' hidden states after it, detached (truncated BPTT), to ``carry`` into the
        next chunk of the epoch. Rows whose session starts at a step are reset to zeros
        there, so the first chunk of an epoch (all rows starting) needs no carry."""
        steps: ParallelSteps = batch
        rows, length = steps.items.shape
        hidden = carry
        if hidden is None or hidden.shape[0] != rows or hidden.device != steps.items.device:
            hidden = torch.zeros(rows, self.gru.state_size, device=steps.items.device)
        losses = []
        for t in range(length):
            hidden = torch.where(steps.session_start[:, t].unsqueeze(1),
                                 torch.zeros_like(hidden), hidden)
            hidden = self.advance(steps.items[:, t], {"session_hidden": hidden})["session_hidden"]
            step_loss = ranking_loss(self.gru.top(hidden), steps.targets[:, t],
                                     self.output_weight, self.output_bias,
                                     self.config.loss, self.config.bpreg)
            if step_loss is not None:
                losses.append(step_loss)
        if not losses:  # no step had enough targets: nothing to learn from this chunk
            return torch.zeros((), device=steps.items.device), hidden.detach()
        return torch.stack(losses).mean(), hidden.detach()


@dataclass
class GRU4RecOfficialConfig(GRU4RecConfig):
    """The best parameters its authors publish for yoochoose with cross-entropy
    (hidasib/GRU4Rec, ``paramfiles/yoochoose_xe_shared_best.py``)."""

    hidden_size: int = 480
    loss: str = "ce"
    constrained_embedding: bool = True
    dropout_hidden: float = 0.2
    batch_size: int = 48
    learning_rate: float = 0.07


@register
class GRU4RecOfficial(GRU4Rec):
    """GRU4Rec with its authors' published yoochoose settings: cross-entropy with a final
    softmax, constrained embedding, 480 units, batch 48, hidden dropout 0.2, Adagrad at
    0.07 without momentum, 10 epochs. Deviation: the softmax is over every item, where
    the reference samples 2,048 negatives by popularity^0.2 with a logQ correction (an
    approximation of this full softmax, there for speed on large catalogues)."""

    name = "gru4rec-official"
    config_class = GRU4RecOfficialConfig

