"""Shared pieces of the recurrent models (GRU4Rec, HRNN): a stacked GRU whose single
step is explicit tensor math, the in-batch ranking losses, and the training-carry helper.

Why an explicit GRU step: the serving methods (``advance`` / ``end_session``) are exported
to ONNX, and the ONNX ``GRU`` operator export has known bugs (``linear_before_reset``).
So the single step is written as matmul / sigmoid / tanh that reads the *same*
parameters as the ``nn.GRU`` used by the fused ``forward``; the contract test checks the
two agree. Gate order and equations follow torch (r, z, n)::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ParallelSteps(Protocol):
    """What session-/user-parallel training batches provide (``training.batching``).

    Every tensor is [B, T]: B parallel rows, T consecutive steps. Row b at step t feeds
    ``items[b, t]`` and is trained to predict ``targets[b, t]`` (0 = no target). Rows
    whose data ran out are idle: item 0, target 0.
    """

    items: Tensor          # [B, T] int64
    targets: Tensor        # [B, T] int64
    session_start: Tensor  # [B, T] bool: first click of a session on this row
    user_start: Tensor     # [B, T] bool: first click of a new user on this row


def gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
             bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """One GRU step in torch's parametrisation. x: [B, D], h: [B, H] -> [B, H]."""
    gates_x = F.linear(x, weight_ih, bias_ih)  # [B, 3H]
    gates_h = F.linear(h, weight_hh, bias_hh)  # [B, 3H]
    x_r, x_z, x_n = gates_x.chunk(3, dim=1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=1)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)
    return (1.0 - update) * candidate + update * h


class StackedGRU(nn.Module):
    """``nn.GRU`` (batch_first) plus an explicit single step over the same parameters.

    The state is kept flat, ``[B, layers * hidden]`` (layer-major), because that is the
    shape declared in the state spec and stored by the service.

    ``identity_input=True`` makes layer 0's input matrix a frozen identity: the caller
    then feeds the already-projected 3H gate inputs (an item table of width 3H is the
    exact equivalent of GRU4Rec's one-hot input times its input weight matrix).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 identity_input: bool = False):
        super().__init__()
        if identity_input and input_size != 3 * hidden_size:
            raise ValueError("identity_input needs input_size == 3 * hidden_size")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True)
        if identity_input:
            weight_ih = cast(Tensor, self.gru.weight_ih_l0)
            with torch.no_grad():
                weight_ih.copy_(torch.eye(3 * hidden_size))
            weight_ih.requires_grad_(False)

    @property
    def state_size(self) -> int:
        return self.num_layers * self.hidden_size

    def _layer_params(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self.gru, f"weight_ih_l{layer}"), getattr(self.gru, f"weight_hh_l{layer}"),
                getattr(self.gru, f"bias_ih_l{layer}"), getattr(self.gru, f"bias_hh_l{layer}"))

    def step(self, x: Tensor, state: Tensor, dropout: float = 0.0) -> Tensor:
        """x: [B, D], state: [B, L*H] -> new state [B, L*H].

        ``dropout`` (training only) is applied to each layer's new hidden state, which is
        also what is carried to the next step, as in the GRU4Rec/HGRU4Rec code."""
        layers = state.reshape(state.shape[0], self.num_layers, self.hidden_size)
        new_layers = []
        layer_input = x
        for layer in range(self.num_layers):
            hidden = gru_cell(layer_input, layers[:, layer], *self._layer_params(layer))
            hidden = F.dropout(hidden, dropout, self.training)
            new_layers.append(hidden)
            layer_input = hidden
        return torch.cat(new_layers, dim=1)

    def top(self, state: Tensor) -> Tensor:
        """Top layer's hidden state: [B, L*H] -> [B, H]."""
        return state[:, (self.num_layers - 1) * self.hidden_size:]

    def sequence(self, x: Tensor, state: Tensor, valid: Tensor) -> Tensor:
        """Fused forward with ``nn.GRU``. x: [B, T, D], state: [B, L*H], valid: [B, T]
        bool (right padding). Returns the top layer's hidden state after each position,
        [B, T, H]; padded positions repeat the last valid one (or the start state), which
        is what stepping with item 0 gives."""
        batch, steps = x.shape[0], x.shape[1]
        h0 = state.reshape(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        outputs, _ = self.gru(x, h0)                                  # [B, T, H]
        start = self.top(state).unsqueeze(1)                          # [B, 1, H]
        positions = torch.arange(steps, device=x.device).expand(batch, steps)
        # index of the last valid position <= t; -1 selects the start state
        last_valid = torch.where(valid, positions, torch.full_like(positions, -1)).cummax(1).values
        padded = torch.cat([start, outputs], dim=1)                   # [B, T+1, H]
        index = (last_valid + 1).unsqueeze(2).expand(-1, -1, self.hidden_size)
        return padded.gather(1, index)


def in_batch_scores(hidden: Tensor, targets: Tensor, output_weight: Tensor,
                    output_bias: Tensor) -> Tensor:
    """Scores of every row against every row's target: [A, H] x [A] -> [A, A]; the
    diagonal holds the positives, the rest are the session-parallel negatives."""
    return hidden @ output_weight[targets].T + output_bias[targets]


def top1_loss(scores: Tensor) -> Tensor:
    """TOP1 (Hidasi et al. 2016, eq. in sec. 3.1.3) with in-batch negatives::

        L_i = 1/N_S * sum_{j != i} sigmoid(r_j - r_i) + sigmoid(r_j ** 2)

    scores: [A, A] (already through the final activation); mean over rows."""
    size = scores.shape[0]
    positive = scores.diagonal().unsqueeze(1)                      # [A, 1]
    terms = torch.sigmoid(scores - positive) + torch.sigmoid(scores ** 2)
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=scores.device)
    return (terms * off_diagonal).sum(1).div(size - 1).mean()


def bpr_max_loss(scores: Tensor, regularization: float) -> Tensor:
    """BPR-max (Hidasi & Karatzoglou 2018): softmax-weighted BPR over the negatives plus
    the score regulariser ``regularization * sum_j s_j r_j**2``."""
    size = scores.shape[0]
    positive = scores.diagonal().unsqueeze(1)
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(~off_diagonal, float("-inf"))
    weights = torch.softmax(masked, dim=1)                         # s_j over negatives
    bpr = (weights * torch.sigmoid(positive - scores)).sum(1)
    penalty = (weights * scores ** 2).sum(1)
    return (-torch.log(bpr + 1e-24) + regularization * penalty).mean()


def final_activation(scores: Tensor, loss: str) -> Tensor:
    """GRU4Rec's output non-linearity for the pairwise losses: tanh for TOP1 (keeps the
    sigmoid(r_j**2) regulariser bounded); identity otherwise. Monotone, so serving
    rankings use the raw logits."""
    return torch.tanh(scores) if loss == "top1" else scores


LOSSES = ("top1", "bpr-max", "ce")


def ranking_loss(hidden: Tensor, targets: Tensor, output_weight: Tensor, output_bias: Tensor,
                 loss: str, bpreg: float) -> Tensor | None:
    """The per-step loss for rows with a target. hidden: [B, H], targets: [B] (0 = none).
    Returns None when the step has too few rows (pairwise losses need >= 2 rows)."""
    active = targets != 0
    count = int(active.sum())
    if loss == "ce":
        if count == 0:
            return None
        logits = hidden[active] @ output_weight[1:].T + output_bias[1:]   # [A, N]
        return F.cross_entropy(logits, targets[active] - 1)
    if count < 2:
        return None
    scores = in_batch_scores(hidden[active], targets[active], output_weight, output_bias)
    scores = final_activation(scores, loss)
    if loss == "top1":
        return top1_loss(scores)
    return bpr_max_loss(scores, bpreg)
